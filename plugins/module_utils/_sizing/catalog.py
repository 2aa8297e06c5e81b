# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The EC2 GPU catalog: GPUs, instance types and their prices. Data only.

A price refresh or a new instance type is an edit here and nothing else; the arithmetic lives in memory.py,
costs.py and the planner. Sources are named next to each figure."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

PRICINGS = ("on_demand", "spot", "reserved_1yr")

# When no CUDA total has been measured for a GPU: nvidia-smi's total minus the largest driver reserve seen
# (A100-80GB: 81920 MiB in nvidia-smi, 79.15 GiB in CUDA = 870 MiB less).
DRIVER_RESERVE_ESTIMATE_MIB = 870
# Ampere-or-older GPUs below this run FP8 checkpoints weight-only (FP8 Marlin, W8A16): same memory, slower.
NATIVE_FP8_COMPUTE_CAPABILITY = (8, 9)
# Lowest CUDA version the host's driver must support for the vLLM this collection installs
# (roles/vllm_service vllm_service_version 0.32.0): vLLM's CUDA builds need a driver for CUDA 12.4 or newer (the
# 12.1 floor often quoted is stale). gpu_validate's min_cuda_version default and the planner's gpu_check read it;
# the gpu_check role's default mirrors it (tests/unit/test_gpu_validate_module.py checks they agree).
MIN_CUDA_VERSION = "12.4"


# --- GPUs -----------------------------------------------------------------------------------------------------
# aws_memory_mib: EC2 DescribeInstanceTypes GpuInfo MemoryInfo.SizeInMiB (moto 5.2.5 ships AWS's own answer:
#   A10G and L4 22888, L40S 45776, A100 40960 / 81920, H100 81920, H200 144384).
# nvidia_smi_memory_mib: nvidia-smi's memory.total on that GPU (public nvidia-smi tables: A10G 23028, L4 23034,
#   L40S 46068, A100-SXM4-40GB 40960, A100-SXM4-80GB 81920, H100 80GB HBM3 81559, H200 143771).
# cuda_memory_mib: what CUDA (and so vLLM's "total_gpu_memory") reports; vLLM multiplies it by
#   gpu_memory_utilization. This is the number the planner uses: the smallest of the three, and the one the
#   budget really starts from. Sources in cuda_memory_source; "estimate" where none was found.
# memory_bandwidth_gbps: NVIDIA's datasheet HBM/GDDR bandwidth, for the throughput estimate only.
GPUS = {
    "A10G": {
        "name": "NVIDIA A10G", "aws_memory_mib": 22888, "nvidia_smi_memory_mib": 23028, "cuda_memory_mib": 22589,
        "cuda_memory_source": "22.06 GiB total capacity in a CUDA OOM on a 24 GB A10 (vllm-project/vllm#928)",
        "compute_capability": "8.6", "memory_bandwidth_gbps": 600,
    },
    "L4": {
        "name": "NVIDIA L4", "aws_memory_mib": 22888, "nvidia_smi_memory_mib": 23034,
        "cuda_memory_mib": 23034 - DRIVER_RESERVE_ESTIMATE_MIB,
        "cuda_memory_source": "estimate: nvidia-smi 23034 MiB minus the largest driver reserve seen (870 MiB)",
        "compute_capability": "8.9", "memory_bandwidth_gbps": 300,
    },
    "L40S": {
        "name": "NVIDIA L40S", "aws_memory_mib": 45776, "nvidia_smi_memory_mib": 46068, "cuda_memory_mib": 45373,
        "cuda_memory_source": "vLLM log on an L40S: total_gpu_memory (44.31GiB)",
        "compute_capability": "8.9", "memory_bandwidth_gbps": 864,
    },
    "A100-40GB": {
        "name": "NVIDIA A100-SXM4-40GB", "aws_memory_mib": 40960, "nvidia_smi_memory_mib": 40960,
        "cuda_memory_mib": 40448,
        "cuda_memory_source": "39.50 GiB total capacity in a CUDA OOM on an A100 40GB (TianheWu/CoSeR#10)",
        "compute_capability": "8.0", "memory_bandwidth_gbps": 1555,
    },
    "A100-80GB": {
        "name": "NVIDIA A100-SXM4-80GB", "aws_memory_mib": 81920, "nvidia_smi_memory_mib": 81920,
        "cuda_memory_mib": 81050,
        "cuda_memory_source": "79.15 GiB total capacity in a vLLM OOM on an A100 80GB (vllm-project/vllm#4408)",
        "compute_capability": "8.0", "memory_bandwidth_gbps": 2039,
    },
    "H100": {
        "name": "NVIDIA H100 80GB HBM3", "aws_memory_mib": 81920, "nvidia_smi_memory_mib": 81559,
        "cuda_memory_mib": 81121,
        "cuda_memory_source": ("vLLM's profiling log on an H100: total_gpu_memory 79.22GiB "
                               "(vllm-project/vllm PR #10511)"),
        "compute_capability": "9.0", "memory_bandwidth_gbps": 3350,
    },
    "H200": {
        "name": "NVIDIA H200", "aws_memory_mib": 144384, "nvidia_smi_memory_mib": 143771, "cuda_memory_mib": 143165,
        "cuda_memory_source": "vLLM log on an H200: total_gpu_memory (139.81GiB)",
        "compute_capability": "9.0", "memory_bandwidth_gbps": 4800,
    },
}

# --- Prices (USD per instance-hour, us-east-1, Linux, shared tenancy) ------------------------------------------
# On-demand: AWS's EC2 on-demand price list (https://aws.amazon.com/ec2/pricing/on-demand/ and the Price List
#   API file behind it), as quoted in public price snapshots dated 2026-03-04 (price-list publication) to
#   2026-09-17. p4d/p4de/p5/p5en carry AWS's June 2025 cut (p5.48xlarge 98.32 -> 55.04, p4d.24xlarge
#   32.7726 -> 21.957642). p5e.48xlarge has no us-east-1 on-demand price (sold as Capacity Blocks): None,
#   so it is never ranked unless price_overrides gives one.
# Reserved 1-year (standard, no upfront): quoted where a snapshot had it (AWS price list via
#   instances.vantage.sh, 2026-09-17): g5.xlarge 0.634, g5.12xlarge 3.573, g6.xlarge 0.524, g6e.xlarge 1.172,
#   p4d.24xlarge 13.921. Those are 0.630-0.651 x on-demand, so other types get on-demand x RESERVED_1YR_FRACTION,
#   flagged as estimates.
# Spot: a market that moves every few minutes, so always an ASSUMPTION: the family's listed spot/on-demand
#   ratio from the same snapshot (g5.xlarge 0.636, g6.xlarge 0.629, g6e.xlarge 1.701, p4d 16.298, p5 20.788)
#   applied to each size. Give real ones (describe_spot_price_history) with price_overrides.
RESERVED_1YR_FRACTION = 0.63
SPOT_FRACTION_ASSUMED = {
    "g5": 0.636 / 1.006,
    "g6": 0.629 / 0.8048,
    "g6e": 1.701 / 1.861,
    "p4d": 16.298 / 21.957642,
    "p4de": 16.298 / 21.957642,  # no listing: p4d's ratio (same A100 generation)
    "p5": 20.788 / 55.04,
    "p5e": 20.788 / 55.04,  # no listing: p5's ratio
    "p5en": 20.788 / 55.04,  # no listing: p5's ratio
}
PRICE_SOURCE = ("AWS EC2 on-demand price list, us-east-1 Linux, as quoted in public snapshots 2026-03-04 to "
                "2026-09-17 (p4d/p4de/p5/p5en after AWS's June 2025 cut)")

# --- Instances --------------------------------------------------------------------------------------------------
# vCPU, memory, GPU count and instance-store NVMe from EC2 DescribeInstanceTypes (as shipped in moto 5.2.5's
# copy of AWS's answer). NVLink: p4d/p4de (NVSwitch), p5/p5e/p5en (NVSwitch); g5/g6/g6e GPUs talk over PCIe.
# Columns: name, GPU, GPUs, vCPUs, memory GiB, NVMe disks, GB each, on-demand, reserved 1-yr quoted or None.
_INSTANCES = (
    ("g5.xlarge", "A10G", 1, 4, 16, 1, 250, 1.006, 0.634),
    ("g5.2xlarge", "A10G", 1, 8, 32, 1, 450, 1.212, None),
    ("g5.4xlarge", "A10G", 1, 16, 64, 1, 600, 1.624, None),
    ("g5.8xlarge", "A10G", 1, 32, 128, 1, 900, 2.448, None),
    ("g5.16xlarge", "A10G", 1, 64, 256, 1, 1900, 4.096, None),
    ("g5.12xlarge", "A10G", 4, 48, 192, 1, 3800, 5.672, 3.573),
    ("g5.24xlarge", "A10G", 4, 96, 384, 1, 3800, 8.144, None),
    ("g5.48xlarge", "A10G", 8, 192, 768, 2, 3800, 16.288, None),
    ("g6.xlarge", "L4", 1, 4, 16, 1, 250, 0.8048, 0.524),
    ("g6.2xlarge", "L4", 1, 8, 32, 1, 450, 0.9776, None),
    ("g6.4xlarge", "L4", 1, 16, 64, 1, 600, 1.3232, None),
    ("g6.8xlarge", "L4", 1, 32, 128, 2, 450, 2.0144, None),
    ("g6.16xlarge", "L4", 1, 64, 256, 2, 940, 3.3968, None),
    ("g6.12xlarge", "L4", 4, 48, 192, 4, 940, 4.6016, None),
    ("g6.24xlarge", "L4", 4, 96, 384, 4, 940, 6.6752, None),
    ("g6.48xlarge", "L4", 8, 192, 768, 8, 940, 13.3504, None),
    ("g6e.xlarge", "L40S", 1, 4, 32, 1, 250, 1.861, 1.172),
    ("g6e.2xlarge", "L40S", 1, 8, 64, 1, 450, 2.24208, None),
    ("g6e.4xlarge", "L40S", 1, 16, 128, 1, 600, 3.00424, None),
    ("g6e.8xlarge", "L40S", 1, 32, 256, 2, 450, 4.52856, None),
    ("g6e.16xlarge", "L40S", 1, 64, 512, 2, 950, 7.57719, None),
    ("g6e.12xlarge", "L40S", 4, 48, 384, 2, 1900, 10.49264, None),
    ("g6e.24xlarge", "L40S", 4, 96, 768, 2, 1900, 15.06559, None),
    ("g6e.48xlarge", "L40S", 8, 192, 1536, 4, 1900, 30.13118, None),
    ("p4d.24xlarge", "A100-40GB", 8, 96, 1152, 8, 1000, 21.957642, 13.921),
    ("p4de.24xlarge", "A100-80GB", 8, 96, 1152, 8, 1000, 27.44705, None),
    ("p5.48xlarge", "H100", 8, 192, 2048, 8, 3800, 55.04, None),
    ("p5e.48xlarge", "H200", 8, 192, 2048, 8, 3800, None, None),
    ("p5en.48xlarge", "H200", 8, 192, 2048, 8, 3800, 63.296, None),
)
_NVLINK_FAMILIES = ("p4d", "p4de", "p5", "p5e", "p5en")


def _build_catalog():
    catalog = {}
    for name, gpu, gpus, vcpus, memory_gib, disks, disk_gb, on_demand, reserved in _INSTANCES:
        family = name.split(".", 1)[0]
        spot = None if on_demand is None else round(on_demand * SPOT_FRACTION_ASSUMED[family], 4)
        reserved_is_estimate = reserved is None and on_demand is not None
        if reserved_is_estimate:
            reserved = round(on_demand * RESERVED_1YR_FRACTION, 4)
        catalog[name] = {
            "instance_type": name, "family": family, "gpu": gpu, "gpu_count": gpus, "vcpus": vcpus,
            "memory_gib": memory_gib, "nvme_disks": disks, "nvme_gb_each": disk_gb,
            "instance_store_gb": disks * disk_gb, "nvlink": family in _NVLINK_FAMILIES,
            "prices": {"on_demand": on_demand, "spot": spot, "reserved_1yr": reserved},
            "reserved_1yr_is_estimate": reserved_is_estimate, "spot_is_assumption": True,
        }
    return catalog


CATALOG = _build_catalog()
