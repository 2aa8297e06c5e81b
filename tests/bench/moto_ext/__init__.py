"""Extensions that make moto 5.2.5 behave like real AWS where the project's code depends on it.

Each module patches one service's moto backend/responses inside the current process only (moto's backends are
plain Python), and every patch names the AWS behaviour it restores. Apply them before the server serves.
"""

import functools

from . import autoscaling, ec2, ec2_fleet_requests, elbv2, faults, iam, sagemaker
from .settings import SETTINGS, Settings

__all__ = ["SETTINGS", "Settings", "apply_all", "faults"]


@functools.cache  # once per process: a second call must not wrap the patches in themselves
def apply_all() -> None:
    sagemaker.apply()
    ec2.apply()
    ec2_fleet_requests.apply()  # after ec2: it builds on ec2's pools
    elbv2.apply()
    autoscaling.apply()
    iam.apply()
