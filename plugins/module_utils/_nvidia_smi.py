# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one command runner for nvidia-smi, and pure parsers for its output.

Private to this collection. Everything here except NvidiaSmiRunner is a pure function of text, so the
parsers are unit-tested on recorded outputs of real GPUs (tests/unit/fixtures/nvidia_smi/).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import csv
import re

from ansible_collections.llmserve.aws.plugins.module_utils import _runner
from ansible_collections.llmserve.aws.plugins.module_utils._runner import CommandError, classify, run_checked

# The --query-gpu fields, in the order the parser expects them. nvidia-smi prints them in the order asked.
QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "driver_version",
    "compute_cap",
    "persistence_mode",
    "mig.mode.current",
    "ecc.errors.uncorrected.volatile.total",
)

QUERY_ARGS = ("--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits")
BANNER_ARGS = ()
LIST_ARGS = ("-L",)
TOPOLOGY_ARGS = ("topo", "-m")
PERSISTENCE_MODE_ON_ARGS = ("-pm", "1")

# Cells nvidia-smi prints when a value does not exist on this GPU or could not be read.
_NOT_AVAILABLE = re.compile(r"^\[?(N/A|Not Supported|Unknown Error|Requested functionality has been deprecated|"
                            r"Insufficient Permissions|GPU requires reset|Not Found)\]?$", re.IGNORECASE)

_CUDA_VERSION = re.compile(r"CUDA Version\s*:\s*(\d+\.\d+)")
_DRIVER_VERSION = re.compile(r"Driver Version\s*:\s*(\d+(?:\.\d+)+)")
_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)]+)\)\s*$")
_TOPOLOGY_GPU = re.compile(r"^GPU(\d+)$")
_NVLINK = re.compile(r"^NV(\d+)$")

# Error kinds, from the text nvidia-smi prints when it cannot talk to the driver. Order matters: the
# library-not-found text also contains "couldn't", and the version mismatch starts like any NVML error.
ERROR_NOT_FOUND = "not_found"
ERROR_LIBRARY_MISMATCH = "driver_library_mismatch"
ERROR_NVML_LIBRARY_MISSING = "nvml_library_missing"
ERROR_DRIVER_NOT_LOADED = "driver_not_loaded"
ERROR_NO_DEVICES = "no_devices"
ERROR_GPU_LOST = "gpu_lost"
ERROR_PERMISSIONS = "insufficient_permissions"
ERROR_INVALID_FIELD = "invalid_query_field"
ERROR_NVML = "nvml_error"
ERROR_UNPARSEABLE = "unparseable_output"

ERROR_UNKNOWN = _runner.ERROR_UNKNOWN

_ERROR_PATTERNS = (
    (ERROR_LIBRARY_MISMATCH, re.compile(r"Driver/library version mismatch", re.IGNORECASE)),
    (ERROR_NVML_LIBRARY_MISSING, re.compile(r"libnvidia-ml\.so|NVML Shared Library Not Found", re.IGNORECASE)),
    # Any character stands for the apostrophe: some copies of this message carry a typographic one.
    (ERROR_DRIVER_NOT_LOADED, re.compile(r"couldn.t communicate with the NVIDIA driver", re.IGNORECASE)),
    (ERROR_NO_DEVICES, re.compile(r"No devices were found", re.IGNORECASE)),
    (ERROR_GPU_LOST, re.compile(r"GPU is lost|fallen off the bus", re.IGNORECASE)),
    (ERROR_PERMISSIONS, re.compile(r"Insufficient Permissions", re.IGNORECASE)),
    (ERROR_INVALID_FIELD, re.compile(r"is not a valid field to query", re.IGNORECASE)),
    (ERROR_NVML, re.compile(r"Failed to initialize NVML|Unable to determine the device handle|NVML", re.IGNORECASE)),
)


class NvidiaSmiError(CommandError):
    """nvidia-smi could not answer: kind is one of the ERROR_* names, detail is what it printed."""


def classify_error(text):
    """Name the failure behind an nvidia-smi error text (stdout and stderr together)."""
    return classify(text, _ERROR_PATTERNS)


def _cell(value):
    value = value.strip()
    if value == "" or _NOT_AVAILABLE.match(value):
        return None
    return value


def _int_cell(value):
    value = _cell(value)
    return None if value is None else int(value)


def _switch_cell(value):
    """Enabled/Disabled (query) or On/Off (banner) as a bool; None where the GPU has no such switch."""
    value = _cell(value)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("enabled", "on"):
        return True
    if lowered in ("disabled", "off"):
        return False
    raise ValueError("expected Enabled or Disabled, got %r" % value)


def _strip_unit(header_cell):
    return re.sub(r"\s*\[[^\]]*\]$", "", header_cell.strip())


def parse_query_csv(text, fields=QUERY_FIELDS):
    """Parse `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits` into GPU dicts.

    A header line (from a `--format=csv,nounits` recording) is recognised and skipped. Raises ValueError
    on a row that does not have one cell per field or a cell that is not what the field holds.
    """
    rows = [row for row in csv.reader((text or "").splitlines(), skipinitialspace=True) if row]
    if rows and [_strip_unit(cell) for cell in rows[0]] == list(fields):
        rows = rows[1:]
    gpus = []
    for row in rows:
        if len(row) != len(fields):
            raise ValueError("expected %d fields (%s), got %d in %r" % (len(fields), ",".join(fields), len(row), row))
        values = dict(zip(fields, row))
        mig_mode = _switch_cell(values["mig.mode.current"])
        gpus.append({
            "index": int(values["index"]),
            "uuid": _cell(values["uuid"]),
            "name": _cell(values["name"]),
            "memory_total_mib": _int_cell(values["memory.total"]),
            "memory_used_mib": _int_cell(values["memory.used"]),
            "driver_version": _cell(values["driver_version"]),
            "compute_capability": _cell(values["compute_cap"]),
            "persistence_mode": _switch_cell(values["persistence_mode"]),
            "mig_mode": mig_mode,
            "ecc_errors_uncorrected_volatile": _int_cell(values["ecc.errors.uncorrected.volatile.total"]),
        })
    return gpus


def parse_cuda_version(text):
    """The CUDA version the driver supports, from the `nvidia-smi` banner or `nvidia-smi -q`; None if absent."""
    match = _CUDA_VERSION.search(text or "")
    return match.group(1) if match else None


def parse_driver_version(text):
    """The driver version from the `nvidia-smi` banner or `nvidia-smi -q`; None if absent."""
    match = _DRIVER_VERSION.search(text or "")
    return match.group(1) if match else None


def parse_gpu_list(text):
    """Parse `nvidia-smi -L`: one dict per GPU with its MIG devices (empty unless MIG is enabled)."""
    gpus = []
    for line in (text or "").splitlines():
        gpu = _LIST_GPU.match(line)
        if gpu:
            gpus.append({"index": int(gpu.group(1)), "name": gpu.group(2), "uuid": gpu.group(3), "mig_devices": []})
            continue
        mig = _LIST_MIG.match(line)
        if mig and gpus:
            gpus[-1]["mig_devices"].append({"profile": mig.group(1), "device": int(mig.group(2)), "uuid": mig.group(3)})
    return gpus


def parse_topology(text):
    """Parse the GPU block of `nvidia-smi topo -m` into {gpu index: {peer gpu index: link}}.

    Links are the matrix legend's words: X (self), NV# (a bonded set of # NVLinks), PIX, PXB, PHB, NODE, SYS.
    Columns after the GPUs (NICs, CPU/NUMA affinity) are ignored. Tabs or spaces both work.
    """
    matrix = {}
    columns = None
    for line in (text or "").splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if columns is None:
            if _TOPOLOGY_GPU.match(tokens[0]):
                columns = [int(_TOPOLOGY_GPU.match(token).group(1)) for token in tokens if _TOPOLOGY_GPU.match(token)]
            continue
        row = _TOPOLOGY_GPU.match(tokens[0])
        if not row:
            if tokens[0] == "Legend:":
                break
            continue
        links = tokens[1:1 + len(columns)]
        if len(links) != len(columns):
            raise ValueError("topology row %r has %d links for %d GPUs" % (tokens[0], len(links), len(columns)))
        matrix[int(row.group(1))] = dict(zip(columns, links))
    return matrix


def nvlink_summary(matrix, indices):
    """Whether every pair of the given GPUs talks over NVLink, and the link of each pair (e.g. {'0-1': 'NV12'})."""
    pairs = {}
    indices = sorted(indices)
    for position, left in enumerate(indices):
        for right in indices[position + 1:]:
            pairs["%d-%d" % (left, right)] = matrix.get(left, {}).get(right)
    all_nvlink = bool(pairs) and all(link is not None and _NVLINK.match(link) for link in pairs.values())
    return all_nvlink, pairs


def resolve_visible_devices(spec, gpus, gpu_list=None):
    """Apply CUDA_VISIBLE_DEVICES the way CUDA does, returning (visible gpus in CUDA order, ignored entries).

    spec None means unset (all GPUs visible). Entries are GPU indices, GPU UUIDs or unique UUID prefixes
    (including the "GPU-" prefix), or MIG device UUIDs (counted as their parent GPU). CUDA stops at the
    first entry that names no GPU, so everything from that entry on is ignored; a GPU named twice ends the
    list the same way. nvidia-smi itself ignores CUDA_VISIBLE_DEVICES, hence this filter.
    """
    if spec is None:
        return list(gpus), []
    if spec.strip() == "":
        return [], []
    by_index = dict((gpu["index"], gpu) for gpu in gpus)
    mig_parents = {}
    for listed in gpu_list or []:
        for mig in listed["mig_devices"]:
            mig_parents[mig["uuid"].lower()] = listed["index"]
    entries = [entry.strip() for entry in spec.split(",")]
    visible = []
    for position, entry in enumerate(entries):
        gpu = _find_device(entry, gpus, by_index, mig_parents)
        if gpu is None or any(seen["index"] == gpu["index"] for seen in visible):
            return visible, entries[position:]
        visible.append(gpu)
    return visible, []


def _find_device(entry, gpus, by_index, mig_parents):
    if re.match(r"^\d+$", entry):
        return by_index.get(int(entry))
    lowered = entry.lower()
    if lowered.startswith("mig-"):
        parent = mig_parents.get(lowered)
        return by_index.get(parent) if parent is not None else None
    if lowered.startswith("gpu-"):
        matches = [gpu for gpu in gpus if (gpu["uuid"] or "").lower().startswith(lowered)]
        return matches[0] if len(matches) == 1 else None
    return None


class NvidiaSmiRunner:
    """Runs nvidia-smi through an AnsibleModule-style run_command(args) -> (rc, stdout, stderr)."""

    def __init__(self, run_command, executable):
        self._run_command = run_command
        self.executable = executable

    def run(self, args):
        return run_checked(self._run_command, [self.executable] + list(args), _ERROR_PATTERNS, NvidiaSmiError)

    def _parsed(self, args, parser):
        output = self.run(args)
        try:
            return parser(output)
        except ValueError as error:
            raise NvidiaSmiError(ERROR_UNPARSEABLE, "%s (output: %r)" % (error, output[:500]), 0,
                                 [self.executable] + list(args))

    def query_gpus(self):
        return self._parsed(QUERY_ARGS, parse_query_csv)

    def banner(self):
        return self.run(BANNER_ARGS)

    def list_gpus(self):
        return self._parsed(LIST_ARGS, parse_gpu_list)

    def topology(self):
        return self._parsed(TOPOLOGY_ARGS, parse_topology)


def collect_gpu_state(runner, cuda_visible_devices=None, read_topology=True):
    """Ask nvidia-smi everything the checks need. Raises NvidiaSmiError when the driver cannot answer.

    Topology is optional: a failure to read it is reported in topology_error, not raised, because some
    virtualised hosts do not answer `topo -m` while everything else works.
    """
    gpus = runner.query_gpus()
    banner = runner.banner()
    gpu_list = runner.list_gpus()
    mig_by_index = dict((listed["index"], listed["mig_devices"]) for listed in gpu_list)
    for gpu in gpus:
        gpu["mig_devices"] = mig_by_index.get(gpu["index"], [])
    visible, ignored = resolve_visible_devices(cuda_visible_devices, gpus, gpu_list)
    state = {
        "gpus": gpus,
        "visible_gpus": visible,
        "ignored_visible_device_entries": ignored,
        "cuda_version": parse_cuda_version(banner),
        "driver_version": (gpus[0]["driver_version"] if gpus else None) or parse_driver_version(banner),
        "topology": None,
        "topology_error": None,
    }
    if read_topology and len(visible) > 1:
        try:
            state["topology"] = runner.topology()
        except NvidiaSmiError as error:
            state["topology_error"] = error.detail
    return state
