"""GPU preflight checks on recorded GPU states: every failure names the check, have vs need, and the fix."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))  # llmserve.aws importable as ansible_collections.* (make collections)

from ansible_collections.llmserve.aws.plugins.module_utils import _gpu_checks as checks  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils import _nvidia_smi as smi  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia_smi"


def recorded_state(case, cuda_visible_devices=None, read_topology=True):
    """What collect_gpu_state() reads from a recorded case."""
    folder = FIXTURES / case

    def run(argv):
        args = tuple(argv[1:])
        if args == smi.QUERY_ARGS:
            return 0, (folder / "query.csv").read_text().split("\n", 1)[1], ""
        name = {smi.BANNER_ARGS: "banner.txt", smi.LIST_ARGS: "list.txt", smi.TOPOLOGY_ARGS: "topo.txt"}[args]
        return 0, (folder / name).read_text(), ""

    return smi.collect_gpu_state(smi.NvidiaSmiRunner(run, "nvidia-smi"), cuda_visible_devices, read_topology)


def options(**overrides):
    values = dict(tensor_parallel_size=1, pipeline_parallel_size=1, min_cuda_version="12.1", min_memory_mib=None,
                  required_memory_gib=None, min_compute_capability=None, allow_mixed_models=False,
                  require_nvlink=False, cuda_visible_devices=None)
    values.update(overrides)
    return values


def run_checks(case, cuda_visible_devices=None, **overrides):
    state = recorded_state(case, cuda_visible_devices)
    result, _nvlink, _pairs = checks.evaluate(state, options(cuda_visible_devices=cuda_visible_devices, **overrides))
    return {entry["name"]: entry for entry in result}


def failed_names(result):
    return sorted(name for name, entry in result.items() if not entry["ok"])


def assert_failure(entry, *fragments):
    assert entry["ok"] is False
    assert entry["message"].startswith(entry["name"] + ": ")
    assert "Fix:" in entry["message"]
    for fragment in fragments:
        assert fragment in entry["message"], (fragment, entry["message"])


def test_one_gpu_with_tensor_parallel_4_fails_with_both_numbers():
    result = run_checks("a10g_single", tensor_parallel_size=4)
    assert failed_names(result) == ["gpu_count"]
    assert_failure(result["gpu_count"], "tensor_parallel_size 4 x pipeline_parallel_size 1 = 4 GPUs needed",
                   "but 1 visible", "NCCL", "set tensor_parallel_size x pipeline_parallel_size to 1",
                   "pick an instance type with 4 GPUs")
    assert "CUDA_VISIBLE_DEVICES" not in result["gpu_count"]["message"]  # hiding GPUs cannot add any


def test_pipeline_parallel_counts_too():
    result = run_checks("g5_12xlarge_4x_a10g", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert result["gpu_count"]["ok"]
    result = run_checks("g5_12xlarge_4x_a10g", tensor_parallel_size=4, pipeline_parallel_size=2)
    assert_failure(result["gpu_count"], "= 8 GPUs needed", "4 visible")


def test_eight_h100_with_tensor_parallel_8_passes_everything():
    result = run_checks("p5_8x_h100_80gb", tensor_parallel_size=8, min_cuda_version="12.4", min_memory_mib=80000,
                        required_memory_gib=600, min_compute_capability="8.9", require_nvlink=True)
    assert failed_names(result) == []
    assert "NV18" in result["nvlink"]["message"]
    assert "have 637.2 GiB" in result["total_memory"]["message"]


def test_cuda_visible_devices_limits_what_counts():
    result = run_checks("p5_8x_h100_80gb", cuda_visible_devices="0,1,2,3", tensor_parallel_size=8)
    assert_failure(result["gpu_count"], "8 GPUs needed", "4 visible", "CUDA_VISIBLE_DEVICES='0,1,2,3' of 8",
                   "set CUDA_VISIBLE_DEVICES to exactly 8 of the 8 GPUs")
    result = run_checks("p5_8x_h100_80gb", cuda_visible_devices="4,5,9,6", tensor_parallel_size=4)
    assert_failure(result["gpu_count"], "2 visible", "CUDA ignores 9,6")
    assert run_checks("p5_8x_h100_80gb", cuda_visible_devices="4,5,6,7", tensor_parallel_size=4)["gpu_count"]["ok"]


def test_cuda_12_0_with_floor_12_1_fails_with_both_versions():
    result = run_checks("cuda_12_0_a10g", min_cuda_version="12.1")
    assert failed_names(result) == ["cuda_version"]
    assert_failure(result["cuda_version"], "driver 525.60.13 supports CUDA 12.0, need >= 12.1", "R530")


@pytest.mark.parametrize("case, floor, ok", [
    ("a10g_single", "12.4", False),  # 535 -> 12.2
    ("g5_12xlarge_4x_a10g", "12.4", True),
    ("l4_single", "12.8", True),
    ("h200_single", "12.10", True),  # 13.0 > 12.10: versions compare as numbers, not text
    ("p4d_8x_a100_40gb", "12.2", True),
])
def test_cuda_floor(case, floor, ok):
    assert run_checks(case, min_cuda_version=floor)["cuda_version"]["ok"] is ok


def test_missing_cuda_version_fails():
    entry = checks.check_cuda_version(None, "12.4", "550.90.07")
    assert_failure(entry, "reports no CUDA version, need >= 12.4", "R550")


def test_memory_per_gpu_in_gib():
    result = run_checks("a10g_single", min_memory_mib=24576)
    assert_failure(result["memory_per_gpu"], "need 24.0 GiB (24576 MiB) per GPU",
                   "GPU 0 (NVIDIA A10G) has 22.5 GiB (23028 MiB)")
    assert run_checks("l40s_single", min_memory_mib=24576)["memory_per_gpu"]["ok"]


def test_total_memory_in_gib():
    result = run_checks("g5_12xlarge_4x_a10g", tensor_parallel_size=4, required_memory_gib=140)
    assert_failure(result["total_memory"], "need 140.0 GiB in total, have 90.0 GiB (92112 MiB) on 4 visible GPU(s)")
    assert run_checks("h200_single", required_memory_gib=140)["total_memory"]["ok"]  # 143771 MiB = 140.4 GiB


def test_fp8_needs_compute_capability_8_9():
    result = run_checks("p4d_8x_a100_40gb", tensor_parallel_size=8, min_compute_capability="8.9")
    entry = result["compute_capability"]
    assert_failure(entry, "need >= 8.9", "GPU 0 (NVIDIA A100-SXM4-40GB) has compute capability 8.0", "FP8 needs 8.9")
    assert entry["message"].count("has compute capability 8.0") == 8
    assert run_checks("l4_single", min_compute_capability="8.9")["compute_capability"]["ok"]


def test_marlin_needs_8_0_and_the_a10g_has_it():
    assert run_checks("a10g_single", min_compute_capability="8.0")["compute_capability"]["ok"]
    entry = checks.check_compute_capability(
        [{"index": 0, "name": "Tesla T4", "compute_capability": "7.5"}], "8.0")
    assert_failure(entry, "GPU 0 (Tesla T4) has compute capability 7.5", "Marlin kernels need 8.0")


def test_mixed_models_fail_unless_allowed():
    result = run_checks("mixed_l40s_l4", tensor_parallel_size=2)
    assert failed_names(result) == ["uniform_gpu_model"]
    assert_failure(result["uniform_gpu_model"], "NVIDIA L4: GPUs 1", "NVIDIA L40S: GPUs 0", "allow_mixed_models")
    assert run_checks("mixed_l40s_l4", tensor_parallel_size=2, allow_mixed_models=True)["uniform_gpu_model"]["ok"]
    assert run_checks("mixed_l40s_l4", cuda_visible_devices="1")["uniform_gpu_model"]["ok"]


def test_uncorrected_ecc_errors_fail():
    result = run_checks("ecc_errors_8x_a100_40gb", tensor_parallel_size=8)
    assert failed_names(result) == ["ecc_errors"]
    assert_failure(result["ecc_errors"], "GPU 5 (NVIDIA A100-SXM4-40GB)", "has 2 uncorrected ECC error(s)",
                   "need 0", "stop and start")
    # The faulty GPU hidden from vLLM is no longer its problem.
    assert run_checks("ecc_errors_8x_a100_40gb", cuda_visible_devices="0,1,2,3",
                      tensor_parallel_size=4)["ecc_errors"]["ok"]


def test_mig_blocks_multi_gpu_models_only():
    assert run_checks("mig_h100")["mig_mode"]["ok"]
    result = run_checks("mig_h100", tensor_parallel_size=2)
    assert failed_names(result) == ["gpu_count", "mig_mode"]
    assert_failure(result["mig_mode"], "MIG is on for GPU 0 (NVIDIA H100 80GB HBM3)", "tensor_parallel_size 2",
                   "-mig 0")


def test_nvlink_reported_or_required():
    pcie = run_checks("g5_12xlarge_4x_a10g", tensor_parallel_size=4)
    assert pcie["nvlink"]["ok"] and "PCIe, not NVLink" in pcie["nvlink"]["message"]
    required = run_checks("g5_12xlarge_4x_a10g", tensor_parallel_size=4, require_nvlink=True)
    assert_failure(required["nvlink"], "NVLink required", "0-1 PHB", "p4d, p5")
    assert run_checks("p4d_8x_a100_40gb", tensor_parallel_size=8, require_nvlink=True)["nvlink"]["ok"]
    assert "nvlink" not in run_checks("a10g_single")  # one GPU: nothing to link


def test_unreadable_topology_only_fails_when_nvlink_is_required():
    assert checks.check_nvlink(None, {}, "Topology is not supported", False)["ok"]
    assert_failure(checks.check_nvlink(None, {}, "Topology is not supported", True), "Topology is not supported")


def test_missing_binary_says_no_driver_and_how_to_get_one():
    entry = checks.missing_binary("PATH=/usr/bin:/bin and the sbin directories")
    assert_failure(entry, "no NVIDIA driver found", "PATH=/usr/bin:/bin", "Deep Learning AMI", "gpu_check_enabled")


@pytest.mark.parametrize("case, fragments", [
    ("driver_library_mismatch", ["driver library mismatch", "NVML library version: 535.183", "reboot"]),
    ("driver_not_loaded", ["driver not loaded", "couldn't communicate with the NVIDIA driver", "reboot",
                           "dkms autoinstall"]),
])
def test_driver_failures_say_reboot_or_reload(case, fragments):
    text = (FIXTURES / case / "error.txt").read_text()
    entry = checks.driver_failure(smi.classify_error(text), text)
    assert_failure(entry, *fragments)
    assert entry["name"] == "nvidia_driver"


@pytest.mark.parametrize("kind", [
    smi.ERROR_NVML_LIBRARY_MISSING, smi.ERROR_NO_DEVICES, smi.ERROR_GPU_LOST, smi.ERROR_PERMISSIONS,
    smi.ERROR_INVALID_FIELD, smi.ERROR_NVML, smi.ERROR_UNPARSEABLE, smi.ERROR_UNKNOWN,
])
def test_every_driver_error_kind_has_a_fix(kind):
    assert_failure(checks.driver_failure(kind, "some output"), "some output")


def test_failure_message_names_every_failed_check():
    result = run_checks("cuda_12_0_a10g", tensor_parallel_size=2, min_memory_mib=40000)
    message = checks.failure_message(list(result.values()))
    assert message.startswith("GPU preflight failed (gpu_count, cuda_version, memory_per_gpu): ")
    assert message.count("Fix:") == 3
    assert checks.failure_message([checks.check("x", True, "fine")]) == ""


@pytest.mark.parametrize("text, version", [("12.4", (12, 4)), ("13", (13,)), (" 8.9 ", (8, 9))])
def test_parse_version(text, version):
    assert checks.parse_version(text) == version


@pytest.mark.parametrize("text", ["twelve", "12.4a", "", "12..4"])
def test_parse_version_rejects(text):
    with pytest.raises(ValueError):
        checks.parse_version(text)


def test_driver_branch_hint_follows_the_floor():
    assert "R550" in checks.check_cuda_version("12.2", "12.4", "535.247.01")["message"]
    assert "R570" in checks.check_cuda_version("12.4", "12.7", "550.90.07")["message"]  # no R565 in the table
    assert "the newest" in checks.check_cuda_version("13.0", "14.0", "580.173.02")["message"]
