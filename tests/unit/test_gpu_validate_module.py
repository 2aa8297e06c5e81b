"""gpu_validate's main(): its arguments, results and failures, with nvidia-smi answered from recordings.

Most tests point nvidia_smi_path at the recorded-output stand-in (tests/bench/fake_nvidia_smi/nvidia-smi), so
AnsibleModule.run_command really runs a process that answers each argv form from a fixture case; a few feed
run_command directly.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import basic

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import MIN_CUDA_VERSION
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_from_parameters
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.planner import plan
from ansible_collections.llmserve.aws.plugins.modules import gpu_validate
from module_harness import capture_exit
from module_harness import run_main

REPO = Path(__file__).resolve().parents[2]

FAKE_NVIDIA_SMI = REPO / "tests" / "bench" / "fake_nvidia_smi" / "nvidia-smi"
FIXTURES = REPO / "tests" / "unit" / "fixtures" / "nvidia_smi"
# What the R535 recordings (a10g_single, p4d_8x_a100_40gb, ecc_errors_8x_a100_40gb) support: tests about other
# checks lower the floor to it, since the default (12.4) fails those drivers.
DRIVER_535_CUDA = "12.2"


@pytest.fixture(autouse=True)
def exits_raise(monkeypatch):
    capture_exit(monkeypatch)


@pytest.fixture
def fake_case(monkeypatch, tmp_path):
    """Choose the case the stand-in replays; its state (persistence mode, call log) lives in tmp_path."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LLMSERVE_TEST_NVIDIA_SMI_FIXTURES", str(FIXTURES))
    monkeypatch.setenv("LLMSERVE_TEST_NVIDIA_SMI_STATE", str(tmp_path / "state"))

    def choose(case):
        monkeypatch.setenv("LLMSERVE_TEST_NVIDIA_SMI_CASE", case)
        return tmp_path / "state" / case / "calls.log"

    return choose


def run_module(**args):
    args.setdefault("nvidia_smi_path", str(FAKE_NVIDIA_SMI))
    return run_main(gpu_validate.main, args)


def calls(log):
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def test_eight_h100_with_tensor_parallel_8_passes(fake_case):
    log = fake_case("p5_8x_h100_80gb")
    exited = run_module(tensor_parallel_size=8, min_cuda_version="12.4", required_memory_gib=600,
                        min_compute_capability="9.0")
    result = exited.result
    assert not exited.failed
    assert result["changed"] is False
    assert (result["gpu_count"], result["gpu_count_total"], result["gpu_model"]) == (8, 8, "NVIDIA H100 80GB HBM3")
    assert (result["driver_version"], result["cuda_version"]) == ("550.127.05", "12.4")
    assert result["total_memory_mib"] == 8 * 81559
    assert result["nvlink"] is True and result["nvlink_pairs"]["0-7"] == "NV18" and len(result["nvlink_pairs"]) == 28
    assert result["failed_checks"] == []
    assert {check["name"] for check in result["checks"]} >= {"nvidia_driver", "gpu_count", "cuda_version",
                                                             "total_memory", "compute_capability", "nvlink"}
    assert result["nvidia_smi_path"] == str(FAKE_NVIDIA_SMI)
    assert calls(log) == [
        ["--query-gpu=index,uuid,name,memory.total,memory.used,driver_version,compute_cap,persistence_mode,"
         "mig.mode.current,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader,nounits"],
        [], ["-L"], ["topo", "-m"]]


def test_one_gpu_with_tensor_parallel_4_fails_and_still_reports(fake_case):
    log = fake_case("a10g_single")
    exited = run_module(tensor_parallel_size=4, min_cuda_version=DRIVER_535_CUDA)
    assert exited.failed
    result = exited.result
    assert result["msg"].startswith("GPU preflight failed (gpu_count): gpu_count: tensor_parallel_size 4")
    assert "4 GPUs needed, but 1 visible" in result["msg"]
    assert result["failed_checks"] == ["gpu_count"]
    assert result["gpu_count"] == 1 and result["gpus"][0]["memory_total_mib"] == 23028
    assert result["changed"] is False
    assert ["topo", "-m"] not in calls(log)  # one visible GPU: no topology to read


def test_cuda_12_0_with_floor_12_1_fails(fake_case):
    fake_case("cuda_12_0_a10g")
    exited = run_module(min_cuda_version="12.1")
    assert exited.failed and exited.result["failed_checks"] == ["cuda_version"]
    assert "driver 525.60.13 supports CUDA 12.0, need >= 12.1" in exited.result["msg"]


def test_default_floor_is_12_4(fake_case):
    fake_case("a10g_single")
    exited = run_module()  # driver 535: CUDA 12.2, below what the installed vLLM build needs
    assert exited.failed and exited.result["failed_checks"] == ["cuda_version"]
    assert "supports CUDA 12.2, need >= 12.4" in exited.result["msg"]
    fake_case("g5_12xlarge_4x_a10g")
    assert not run_module(tensor_parallel_size=4).failed  # driver 550: CUDA 12.4


def test_one_cuda_floor_for_module_planner_and_role():
    """gpu_validate's default, the planner's gpu_check and the gpu_check role's default are the catalog's one floor."""
    role_default = yaml.safe_load((REPO / "roles" / "gpu_check" / "defaults" / "main.yml").read_text())
    documented = yaml.safe_load(gpu_validate.DOCUMENTATION)["options"]["min_cuda_version"]["default"]
    planned = plan(model_from_parameters(8), {"instance_type": "g5.xlarge"})["gpu_check"]["min_cuda_version"]
    assert {gpu_validate.ARGUMENT_SPEC["min_cuda_version"]["default"], documented, planned,
            role_default["gpu_check_min_cuda_version"]} == {MIN_CUDA_VERSION} == {"12.4"}


@pytest.mark.parametrize("case, fragment", [
    ("driver_library_mismatch", "Driver/library version mismatch"),
    ("driver_not_loaded", "couldn't communicate with the NVIDIA driver"),
])
def test_broken_driver_fails_with_reboot_advice(fake_case, case, fragment):
    fake_case(case)
    exited = run_module()
    assert exited.failed
    assert exited.result["failed_checks"] == ["nvidia_driver"]
    assert fragment in exited.result["msg"] and "reboot" in exited.result["msg"]
    assert exited.result["nvlink"] is None and "gpus" not in exited.result


def test_missing_binary_on_path(fake_case, monkeypatch, tmp_path):
    fake_case("a10g_single")
    assert shutil.which("nvidia-smi", path="/sbin:/usr/sbin:/usr/local/sbin") is None
    monkeypatch.setenv("PATH", str(tmp_path))
    exited = run_module(nvidia_smi_path=None)
    assert exited.failed
    assert exited.result["nvidia_smi_path"] is None
    assert "nvidia_driver: no NVIDIA driver found: nvidia-smi is not installed (looked in PATH=%s" % tmp_path in (
        exited.result["msg"])
    assert "Deep Learning AMI" in exited.result["msg"]


def test_found_on_path(fake_case, monkeypatch, tmp_path):
    fake_case("l4_single")
    (tmp_path / "nvidia-smi").symlink_to(FAKE_NVIDIA_SMI)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    exited = run_module(nvidia_smi_path=None, min_compute_capability="8.9")
    assert not exited.failed
    assert exited.result["nvidia_smi_path"] == str(tmp_path / "nvidia-smi")
    assert exited.result["gpu_model"] == "NVIDIA L4"


def test_missing_explicit_path(fake_case, tmp_path):
    fake_case("a10g_single")
    exited = run_module(nvidia_smi_path=str(tmp_path / "nvidia-smi"))
    assert exited.failed and "looked in %s" % (tmp_path / "nvidia-smi") in exited.result["msg"]


def test_cuda_visible_devices_from_the_environment(fake_case, monkeypatch):
    fake_case("p4d_8x_a100_40gb")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    exited = run_module(tensor_parallel_size=2, min_cuda_version=DRIVER_535_CUDA)
    assert not exited.failed
    assert exited.result["cuda_visible_devices"] == "4,5"
    assert [gpu["index"] for gpu in exited.result["gpus"]] == [4, 5]
    assert exited.result["nvlink_pairs"] == {"4-5": "NV12"}


def test_cuda_visible_devices_argument_wins_over_environment(fake_case, monkeypatch):
    fake_case("p4d_8x_a100_40gb")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    exited = run_module(tensor_parallel_size=2, cuda_visible_devices="")
    assert exited.failed
    assert "0 visible (CUDA_VISIBLE_DEVICES='' of 8" in exited.result["msg"]
    assert exited.result["gpu_model"] is None


def test_mixed_models(fake_case):
    fake_case("mixed_l40s_l4")
    exited = run_module(tensor_parallel_size=2)
    assert exited.result["failed_checks"] == ["uniform_gpu_model"]
    assert exited.result["gpu_model"] == "NVIDIA L4 + NVIDIA L40S"
    assert not run_module(tensor_parallel_size=2, allow_mixed_models=True).failed


def test_ecc_and_mig(fake_case):
    fake_case("ecc_errors_8x_a100_40gb")
    exited = run_module(tensor_parallel_size=8, min_cuda_version=DRIVER_535_CUDA)
    assert exited.result["failed_checks"] == ["ecc_errors"]
    fake_case("mig_h100")
    exited = run_module()
    assert not exited.failed
    assert len(exited.result["gpus"][0]["mig_devices"]) == 4


def test_check_mode_reports_the_same_and_changes_nothing(fake_case):
    log = fake_case("a10g_single")
    normal = run_module().result
    checked = run_module(_ansible_check_mode=True).result
    assert checked == normal
    assert checked["changed"] is False
    assert not (log.parent / "persistence-enabled").exists()
    assert all(argv[:1] != ["-pm"] for argv in calls(log))


@pytest.mark.parametrize("args, message", [
    (dict(tensor_parallel_size=0), "tensor_parallel_size must be 1 or more, got 0"),
    (dict(pipeline_parallel_size=-1), "pipeline_parallel_size must be 1 or more, got -1"),
    (dict(min_cuda_version="twelve"), "min_cuda_version: 'twelve' is not a version like 12.4"),
    (dict(min_compute_capability="sm_90"), "min_compute_capability: 'sm_90' is not a version like 12.4"),
    (dict(min_memory_mib=0), "min_memory_mib must be a number above 0, got 0"),
    (dict(required_memory_gib=-2.5), "required_memory_gib must be a number above 0, got -2.5"),
    (dict(required_memory_gib=float("nan")), "required_memory_gib must be a number above 0, got nan"),
    (dict(required_memory_gib=float("inf")), "required_memory_gib must be a number above 0, got inf"),
    (dict(cuda_visible_devices="0,1\n--query-gpu=x"), "cuda_visible_devices"),
    (dict(cuda_visible_devices="0 --format=csv"), "cuda_visible_devices"),
    (dict(nvidia_smi_path="bin/nvidia-smi"), "nvidia_smi_path must be an absolute path"),
    (dict(nvidia_smi_path="/usr/bin/../../tmp/nvidia-smi"), "nvidia_smi_path must not contain '.' or '..'"),
])
def test_bad_arguments_fail_before_running_anything(fake_case, args, message):
    log = fake_case("a10g_single")
    exited = run_module(**args)
    assert exited.failed and message in exited.result["msg"]
    assert not log.exists()


def test_recorded_run_command_directly(monkeypatch):
    """run_command fed from a fixture without any process: the module is only glue around the runner."""
    folder = FIXTURES / "g5_12xlarge_4x_a10g"
    answers = {(): "banner.txt", ("-L",): "list.txt", ("topo", "-m"): "topo.txt"}

    def run_command(self, args, **kwargs):
        if len(args) > 1 and args[1].startswith("--query-gpu="):
            return 0, (folder / "query.csv").read_text().split("\n", 1)[1], ""
        return 0, (folder / answers[tuple(args[1:])]).read_text(), ""

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: "/usr/bin/nvidia-smi")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    exited = run_main(gpu_validate.main, dict(tensor_parallel_size=4, require_nvlink=True))
    assert exited.result["failed_checks"] == ["nvlink"]
    assert exited.result["nvlink"] is False
    assert exited.result["nvidia_smi_path"] == "/usr/bin/nvidia-smi"


def test_argument_spec_matches_documentation():
    import yaml

    documented = yaml.safe_load(gpu_validate.DOCUMENTATION)["options"]
    assert set(documented) == set(gpu_validate.ARGUMENT_SPEC)
    for name, spec in gpu_validate.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"], name
        assert documented[name].get("default") == spec.get("default"), name


def test_stand_in_persistence_mode_shows_in_the_next_read(fake_case):
    """The stand-in keeps `nvidia-smi -pm 1` per case, as the real driver keeps it until reboot."""
    import subprocess

    log = fake_case("a10g_single")
    assert run_module().result["gpus"][0]["persistence_mode"] is False
    done = subprocess.run([str(FAKE_NVIDIA_SMI), "-pm", "1"], capture_output=True, text=True, check=False)
    if os.geteuid() == 0:
        assert done.returncode == 0
        assert done.stdout == "Enabled persistence mode for GPU 00000000:00:1E.0.\nAll done.\n"
        assert run_module().result["gpus"][0]["persistence_mode"] is True
    else:  # like the real tool, it refuses without root
        assert done.returncode == 4 and "Insufficient Permissions" in done.stdout
    assert ["-pm", "1"] in calls(log)


def test_stand_in_rejects_what_it_has_no_recording_for(fake_case):
    import subprocess

    fake_case("a10g_single")
    bad_field = subprocess.run([str(FAKE_NVIDIA_SMI), "--query-gpu=name,clocks.sm", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, check=False)
    assert (bad_field.returncode, bad_field.stdout.strip()) == (2, 'Field "clocks.sm" is not a valid field to query.')
    unknown_form = subprocess.run([str(FAKE_NVIDIA_SMI), "-q"], capture_output=True, text=True, check=False)
    assert unknown_form.returncode == 2 and "not a recorded form" in unknown_form.stderr
