"""The nvidia-smi parsers and runner on recorded outputs of real GPUs (tests/unit/fixtures/nvidia_smi)."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))  # llmserve.aws importable as ansible_collections.* (make collections)

from ansible_collections.llmserve.aws.plugins.module_utils import _nvidia_smi as smi  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia_smi"
WORKING_CASES = sorted(path.name for path in FIXTURES.iterdir() if (path / "query.csv").exists())
ERROR_CASES = sorted(path.name for path in FIXTURES.iterdir() if (path / "error.txt").exists())

# case: (gpu count, model, MiB per GPU, compute capability, driver, CUDA, links between GPU 0 and 1)
EXPECTED = {
    "a10g_single": (1, "NVIDIA A10G", 23028, "8.6", "535.247.01", "12.2", None),
    "g5_12xlarge_4x_a10g": (4, "NVIDIA A10G", 23028, "8.6", "550.90.07", "12.4", "PHB"),
    "p4d_8x_a100_40gb": (8, "NVIDIA A100-SXM4-40GB", 40960, "8.0", "535.161.08", "12.2", "NV12"),
    "ecc_errors_8x_a100_40gb": (8, "NVIDIA A100-SXM4-40GB", 40960, "8.0", "535.161.08", "12.2", "NV12"),
    "p5_8x_h100_80gb": (8, "NVIDIA H100 80GB HBM3", 81559, "9.0", "550.127.05", "12.4", "NV18"),
    "h200_single": (1, "NVIDIA H200", 143771, "9.0", "580.173.02", "13.0", None),
    "l4_single": (1, "NVIDIA L4", 23034, "8.9", "570.133.20", "12.8", None),
    "l40s_single": (1, "NVIDIA L40S", 46068, "8.9", "550.90.07", "12.4", None),
    "cuda_12_0_a10g": (1, "NVIDIA A10G", 23028, "8.6", "525.60.13", "12.0", None),
    "mixed_l40s_l4": (2, "NVIDIA L40S", 46068, "8.9", "550.90.07", "12.4", "SYS"),
    "mig_h100": (1, "NVIDIA H100 80GB HBM3", 81559, "9.0", "590.48.01", "13.1", None),
}


def read(case, name):
    return (FIXTURES / case / name).read_text()


def noheader(csv_text):
    """What `--format=csv,noheader,nounits` prints: the recording without its header line."""
    return csv_text.split("\n", 1)[1]


def test_every_working_case_has_an_expectation():
    assert set(WORKING_CASES) == set(EXPECTED)
    assert set(ERROR_CASES) == {"driver_library_mismatch", "driver_not_loaded"}


@pytest.mark.parametrize("case", WORKING_CASES)
def test_query_csv(case):
    count, model, memory, capability, driver = EXPECTED[case][:5]
    gpus = smi.parse_query_csv(noheader(read(case, "query.csv")))
    assert [gpu["index"] for gpu in gpus] == list(range(count))
    assert gpus[0]["name"] == model
    assert gpus[0]["memory_total_mib"] == memory
    assert gpus[0]["compute_capability"] == capability
    assert {gpu["driver_version"] for gpu in gpus} == {driver}
    assert all(gpu["uuid"].startswith("GPU-") and len(gpu["uuid"]) == 40 for gpu in gpus)


@pytest.mark.parametrize("case", WORKING_CASES)
def test_header_line_of_a_recording_is_skipped(case):
    assert smi.parse_query_csv(read(case, "query.csv")) == smi.parse_query_csv(noheader(read(case, "query.csv")))


@pytest.mark.parametrize("case", WORKING_CASES)
def test_banner_cuda_and_driver_version(case):
    driver, cuda = EXPECTED[case][4:6]
    banner = read(case, "banner.txt")
    assert smi.parse_cuda_version(banner) == cuda
    assert smi.parse_driver_version(banner) == driver


@pytest.mark.parametrize("case", WORKING_CASES)
def test_gpu_list_matches_query(case):
    gpus = smi.parse_query_csv(noheader(read(case, "query.csv")))
    listed = smi.parse_gpu_list(read(case, "list.txt"))
    assert [(item["index"], item["name"], item["uuid"]) for item in listed] == [
        (gpu["index"], gpu["name"], gpu["uuid"]) for gpu in gpus]


@pytest.mark.parametrize("case", WORKING_CASES)
def test_topology(case):
    count, link = EXPECTED[case][0], EXPECTED[case][6]
    matrix = smi.parse_topology(read(case, "topo.txt"))
    assert sorted(matrix) == list(range(count))
    assert all(matrix[index][index] == "X" for index in matrix)
    if count > 1:
        assert matrix[0][1] == matrix[1][0] == link


def test_cells_of_each_kind():
    a10g = smi.parse_query_csv(noheader(read("a10g_single", "query.csv")))[0]
    assert a10g["persistence_mode"] is False
    assert a10g["mig_mode"] is None  # [N/A]: the A10G has no MIG
    assert a10g["ecc_errors_uncorrected_volatile"] == 0
    h100 = smi.parse_query_csv(noheader(read("p5_8x_h100_80gb", "query.csv")))[3]
    assert (h100["persistence_mode"], h100["mig_mode"]) == (True, False)
    mig = smi.parse_query_csv(noheader(read("mig_h100", "query.csv")))[0]
    assert (mig["mig_mode"], mig["memory_used_mib"]) == (True, 59)
    ecc = smi.parse_query_csv(noheader(read("ecc_errors_8x_a100_40gb", "query.csv")))
    assert [gpu["ecc_errors_uncorrected_volatile"] for gpu in ecc] == [0, 0, 0, 0, 0, 2, 0, 0]


def test_not_available_cells_become_none():
    row = "0, GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, NVIDIA A10G, 23028, [N/A], 535.247.01, [N/A], [N/A], [Not Supported], N/A\n"
    gpu = smi.parse_query_csv(row)[0]
    assert (gpu["memory_used_mib"], gpu["compute_capability"], gpu["persistence_mode"], gpu["mig_mode"],
            gpu["ecc_errors_uncorrected_volatile"]) == (None, None, None, None, None)


@pytest.mark.parametrize("text", [
    "0, GPU-x, NVIDIA A10G, 23028\n",  # too few fields (an older field list)
    "0, GPU-x, NVIDIA A10G, lots, 0, 535.247.01, 8.6, Enabled, [N/A], 0\n",  # memory not a number
    "0, GPU-x, NVIDIA A10G, 23028, 0, 535.247.01, 8.6, Maybe, [N/A], 0\n",  # not a switch value
])
def test_malformed_query_rows_raise(text):
    with pytest.raises(ValueError):
        smi.parse_query_csv(text)


def test_cuda_version_from_query_output_and_absent():
    assert smi.parse_cuda_version("Driver Version                            : 535.183.01\n"
                                  "CUDA Version                              : 12.2\n") == "12.2"
    assert smi.parse_cuda_version("CUDA Version                              : Not Found\n") is None
    assert smi.parse_cuda_version("") is None


def test_mig_devices_listed_under_their_gpu():
    listed = smi.parse_gpu_list(read("mig_h100", "list.txt"))
    assert len(listed) == 1
    assert [(mig["profile"], mig["device"]) for mig in listed[0]["mig_devices"]] == [
        ("3g.40gb", 0), ("2g.20gb", 1), ("1g.10gb", 2), ("1g.10gb", 3)]
    assert listed[0]["mig_devices"][1]["uuid"] == "MIG-00000001-0000-0000-0000-000000000001"


def test_topology_with_spaces_and_nic_columns():
    # The space-aligned form users paste, with NIC columns and an empty CPU affinity cell.
    text = (
        "        GPU0    GPU1    GPU2    NIC0    CPU Affinity    NUMA Affinity   GPU NUMA ID\n"
        "GPU0     X      NV12    NODE    NODE    0-15,56-71      0               N/A\n"
        "GPU1    NV12     X      NODE    NODE    0-15,56-71      0               N/A\n"
        "GPU2    NODE    NODE     X      PHB             1               N/A\n"
        "NIC0    NODE    NODE    PHB      X\n\nLegend:\n\n  X    = Self\n")
    matrix = smi.parse_topology(text)
    assert matrix == {0: {0: "X", 1: "NV12", 2: "NODE"}, 1: {0: "NV12", 1: "X", 2: "NODE"},
                      2: {0: "NODE", 1: "NODE", 2: "X"}}
    assert smi.nvlink_summary(matrix, [0, 1]) == (True, {"0-1": "NV12"})
    assert smi.nvlink_summary(matrix, [0, 1, 2]) == (False, {"0-1": "NV12", "0-2": "NODE", "1-2": "NODE"})


def test_truncated_topology_row_raises():
    with pytest.raises(ValueError):
        smi.parse_topology("\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \n")


@pytest.mark.parametrize("case, kind", [
    ("driver_library_mismatch", smi.ERROR_LIBRARY_MISMATCH),
    ("driver_not_loaded", smi.ERROR_DRIVER_NOT_LOADED),
])
def test_recorded_errors_are_classified(case, kind):
    assert smi.classify_error(read(case, "error.txt")) == kind


@pytest.mark.parametrize("text, kind", [
    ("NVIDIA-SMI has failed because it couldn\u2018t communicate with the NVIDIA driver.", smi.ERROR_DRIVER_NOT_LOADED),
    ("NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure that the NVIDIA Display "
     "Driver is properly installed and present in your system.", smi.ERROR_NVML_LIBRARY_MISSING),
    ("No devices were found", smi.ERROR_NO_DEVICES),
    ("Unable to determine the device handle for GPU0000:00:1E.0: GPU is lost.  Reboot the system to recover this GPU",
     smi.ERROR_GPU_LOST),
    ("Failed to initialize NVML: Unknown Error", smi.ERROR_NVML),
    ('Field "compute_cap" is not a valid field to query.', smi.ERROR_INVALID_FIELD),
    ("Segmentation fault", smi.ERROR_UNKNOWN),
])
def test_error_texts_are_classified(text, kind):
    assert smi.classify_error(text) == kind


GPUS = [{"index": index, "uuid": uuid} for index, uuid in enumerate([
    "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6",
    "GPU-8932a1b2-0000-4106-c12f-20bd9faed9f7",
    "GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0",
    "GPU-77aa66bb-55cc-44dd-33ee-22ff11009988",
])]


def visible(spec, gpu_list=None):
    gpus, ignored = smi.resolve_visible_devices(spec, GPUS, gpu_list)
    return [gpu["index"] for gpu in gpus], ignored


@pytest.mark.parametrize("spec, expected", [
    (None, ([0, 1, 2, 3], [])),  # unset: every GPU
    ("", ([], [])),  # empty: none
    ("2,0", ([2, 0], [])),  # CUDA order follows the list
    (" 1 , 3 ", ([1, 3], [])),
    ("0,7,1", ([0], ["7", "1"])),  # stops at the first index that names no GPU
    ("0,-1,1", ([0], ["-1", "1"])),
    ("1,,2", ([1], ["", "2"])),
    ("0,0", ([0], ["0"])),  # a repeated GPU ends the list too
    ("GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0", ([2], [])),  # full UUID
    ("GPU-77aa,0", ([3, 0], [])),  # unique prefix
    ("GPU-8932,0", ([], ["GPU-8932", "0"])),  # ambiguous prefix names no GPU
    ("gpu-1F2E3D4C", ([2], [])),
    ("nonsense,0", ([], ["nonsense", "0"])),
])
def test_cuda_visible_devices(spec, expected):
    assert visible(spec) == expected


def test_cuda_visible_devices_mig_uuid_counts_as_parent_gpu():
    gpu_list = [{"index": 0, "mig_devices": []},
                {"index": 1, "mig_devices": [{"uuid": "MIG-00000001-0000-0000-0000-000000000001"}]}]
    assert visible("MIG-00000001-0000-0000-0000-000000000001", gpu_list) == ([1], [])
    assert visible("MIG-ffffffff-0000-0000-0000-000000000000,0", gpu_list) == (
        [], ["MIG-ffffffff-0000-0000-0000-000000000000", "0"])


class RecordedRunCommand:
    """run_command(argv) answering from one fixture case the way the nvidia-smi binary would."""

    def __init__(self, case):
        self.case = case
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv[1:])
        folder = FIXTURES / self.case
        if (folder / "error.txt").exists():
            return int((folder / "exit_code").read_text()), (folder / "error.txt").read_text(), ""
        args = tuple(argv[1:])
        answers = {smi.BANNER_ARGS: "banner.txt", smi.LIST_ARGS: "list.txt", smi.TOPOLOGY_ARGS: "topo.txt"}
        if args == smi.QUERY_ARGS:
            return 0, noheader((folder / "query.csv").read_text()), ""
        return 0, (folder / answers[args]).read_text(), ""


def test_collect_reads_topology_only_when_asked_and_useful():
    run = RecordedRunCommand("p5_8x_h100_80gb")
    state = smi.collect_gpu_state(smi.NvidiaSmiRunner(run, "/usr/bin/nvidia-smi"), "0,1", read_topology=True)
    assert [gpu["index"] for gpu in state["visible_gpus"]] == [0, 1]
    assert (state["cuda_version"], state["driver_version"]) == ("12.4", "550.127.05")
    assert state["topology"][0][7] == "NV18"
    assert list(smi.TOPOLOGY_ARGS) in run.calls

    run = RecordedRunCommand("p5_8x_h100_80gb")
    state = smi.collect_gpu_state(smi.NvidiaSmiRunner(run, "/usr/bin/nvidia-smi"), "3", read_topology=True)
    assert state["topology"] is None and list(smi.TOPOLOGY_ARGS) not in run.calls


def test_collect_attaches_mig_devices():
    run = RecordedRunCommand("mig_h100")
    state = smi.collect_gpu_state(smi.NvidiaSmiRunner(run, "nvidia-smi"))
    assert len(state["gpus"][0]["mig_devices"]) == 4


@pytest.mark.parametrize("case, kind, rc", [
    ("driver_library_mismatch", smi.ERROR_LIBRARY_MISMATCH, 18),
    ("driver_not_loaded", smi.ERROR_DRIVER_NOT_LOADED, 9),
])
def test_runner_raises_classified_errors(case, kind, rc):
    runner = smi.NvidiaSmiRunner(RecordedRunCommand(case), "/usr/bin/nvidia-smi")
    with pytest.raises(smi.NvidiaSmiError) as raised:
        smi.collect_gpu_state(runner)
    assert (raised.value.kind, raised.value.rc) == (kind, rc)
    assert raised.value.command == ["/usr/bin/nvidia-smi"] + list(smi.QUERY_ARGS)


def test_runner_reports_unparseable_output():
    runner = smi.NvidiaSmiRunner(lambda argv: (0, "0, GPU-x, NVIDIA A10G\n", ""), "nvidia-smi")
    with pytest.raises(smi.NvidiaSmiError) as raised:
        runner.query_gpus()
    assert raised.value.kind == smi.ERROR_UNPARSEABLE


def test_topology_failure_is_reported_not_raised():
    def run(argv):
        if argv[1:] == list(smi.TOPOLOGY_ARGS):
            return 3, "", "Topology is not supported on this system"
        return RecordedRunCommand("g5_12xlarge_4x_a10g")(argv)

    state = smi.collect_gpu_state(smi.NvidiaSmiRunner(run, "nvidia-smi"), read_topology=True)
    assert state["topology"] is None
    assert "not supported" in state["topology_error"]
