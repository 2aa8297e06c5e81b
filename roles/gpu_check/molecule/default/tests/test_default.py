"""What the converge left on the bench host (testinfra)."""

import json

STATE = "/run/llmserve-test/nvidia-smi"
CHECK_MODE_STATE = "/run/llmserve-test/check-mode"


def calls(host, path):
    log = host.file(path)
    return [json.loads(line)["argv"] for line in log.content_string.splitlines()] if log.exists else []


def test_stand_in_is_on_path_and_says_what_it_is(host):
    link = host.file("/usr/local/bin/nvidia-smi")
    assert link.is_symlink and link.linked_to == "/usr/local/lib/llmserve-test/fake_nvidia_smi/nvidia-smi"
    stand_in = host.file(link.linked_to)
    assert stand_in.mode & 0o111
    assert "TEST STAND-IN" in stand_in.content_string
    assert host.check_output("command -v nvidia-smi") == "/usr/local/bin/nvidia-smi"


def test_stand_in_replays_the_default_case(host):
    listed = host.check_output("nvidia-smi -L").splitlines()
    assert len(listed) == 8 and all("NVIDIA H100 80GB HBM3" in line for line in listed)
    assert "CUDA Version: 12.4" in host.check_output("nvidia-smi")


def test_role_turned_persistence_mode_on_exactly_once(host):
    assert host.file(STATE + "/a10g_single/persistence-enabled").exists
    runs = [argv for argv in calls(host, STATE + "/a10g_single/calls.log") if argv[:1] == ["-pm"]]
    assert runs == [["-pm", "1"]]  # converge turned it on; the idempotence run found it on


def test_check_mode_changed_nothing(host):
    assert not host.file(CHECK_MODE_STATE + "/a10g_single/persistence-enabled").exists
    recorded = calls(host, CHECK_MODE_STATE + "/a10g_single/calls.log")
    assert recorded, "the check-mode run did read the GPUs"
    assert all(argv[:1] != ["-pm"] for argv in recorded)


def test_driver_error_case_answered_like_a_broken_driver(host):
    result = host.run("LLMSERVE_TEST_NVIDIA_SMI_CASE=driver_library_mismatch nvidia-smi")
    assert result.rc == 18
    assert "Failed to initialize NVML: Driver/library version mismatch" in result.stdout
