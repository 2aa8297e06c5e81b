# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SageMaker hosting instance types and the serving plan: instance type, SM_NUM_GPUS, startup health-check timeout.

The GPU facts come from the one instance catalog (module_utils/_sizing); this file only maps EC2 types to the
ml.* types SageMaker real-time hosting offers, and adds what SageMaker needs on top of the sizing plan.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sizing.catalog import CATALOG
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_from_parameters
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.planner import plan as sizing_plan

# Catalog families SageMaker real-time hosting offers as ml.<type> (all GPU sizes of each).
SAGEMAKER_FAMILIES = ("g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en")
ML_PREFIX = "ml."

# AWS's guidance: models above 13B take 5-15 minutes to load, so the container startup health check must allow
# at least 600 s or SageMaker kills a container that is still loading.
LARGE_MODEL_PARAMETERS_B = 13
LARGE_MODEL_MIN_STARTUP_TIMEOUT_S = 600


class PlanError(Exception):
    """A serving request that cannot work; the message names the parameter and the fix."""


def instance_types():
    """{ml.* name: catalog entry} for every catalog instance SageMaker hosts."""
    return dict((ML_PREFIX + name, entry) for name, entry in CATALOG.items() if entry["family"] in SAGEMAKER_FAMILIES)


def instance(ml_type, parameter="instance_type"):
    known = instance_types()
    if ml_type not in known:
        raise PlanError("%s=%s is not a SageMaker GPU hosting type this collection knows; use one of: %s" % (
            parameter, ml_type, ", ".join(sorted(known))))
    return known[ml_type]


def _sizing_request(sizing, ml_type):
    request = dict((key, value) for key, value in (sizing or {}).items() if value is not None)
    if ml_type:
        request["instance_type"] = ml_type[len(ML_PREFIX):]
    else:
        request["instance_types"] = sorted(name[len(ML_PREFIX):] for name in instance_types())
    return request


def plan_serving(parameters_b, instance_type, num_gpus, startup_timeout, sizing=None):
    """What the endpoint runs on: {instance_type, num_gpus, startup_timeout, reasons}.

    parameters_b: model size in billions (None: no sizing, instance_type is then required).
    sizing: extra sizing-planner options (dtype, quantization, max_model_len, concurrency).
    Raises PlanError with the reason when the request cannot work.
    """
    reasons = []
    tensor_parallel_size = None
    if instance_type is not None:
        instance(instance_type)
    if parameters_b is not None:
        try:
            placed = sizing_plan(model_from_parameters(parameters_b), _sizing_request(sizing, instance_type))
        except SizingError as error:
            raise PlanError("model_parameters_b=%s does not fit%s: %s" % (
                parameters_b, " %s" % instance_type if instance_type else " any SageMaker GPU type", error.message))
        tensor_parallel_size = placed["tensor_parallel_size"]
        if instance_type is None:
            instance_type = ML_PREFIX + placed["instance_type"]
            reasons.append("instance_type %s: the cheapest SageMaker GPU type the sizing planner fits a %sB model "
                           "on (%s GiB of %s GiB per GPU)" % (instance_type, parameters_b,
                                                              placed["required_gib_per_gpu"],
                                                              placed["available_gib_per_gpu"]))
    elif instance_type is None:
        raise PlanError("give instance_type (e.g. ml.g5.xlarge) or model_parameters_b so the planner picks one")
    gpus = instance(instance_type)["gpu_count"]
    if num_gpus is None:
        num_gpus = tensor_parallel_size or gpus
        reasons.append("num_gpus %d: %s" % (num_gpus, "the tensor-parallel size the model needs"
                                            if tensor_parallel_size else "every GPU of %s" % instance_type))
    elif not 1 <= num_gpus <= gpus:
        raise PlanError("num_gpus=%d but %s has %d GPU(s); set num_gpus between 1 and %d" % (
            num_gpus, instance_type, gpus, gpus))
    elif tensor_parallel_size and num_gpus < tensor_parallel_size:
        raise PlanError("num_gpus=%d is too few for a %sB model on %s: it needs %d GPUs to shard across; raise "
                        "num_gpus to %d" % (num_gpus, parameters_b, instance_type, tensor_parallel_size,
                                            tensor_parallel_size))
    large = parameters_b is not None and parameters_b > LARGE_MODEL_PARAMETERS_B
    if large and startup_timeout is None:
        startup_timeout = LARGE_MODEL_MIN_STARTUP_TIMEOUT_S
        reasons.append("container_startup_health_check_timeout %d s: models above %dB load for 5-15 minutes" % (
            startup_timeout, LARGE_MODEL_PARAMETERS_B))
    elif large and startup_timeout < LARGE_MODEL_MIN_STARTUP_TIMEOUT_S:
        raise PlanError("container_startup_health_check_timeout=%d s is too short for a %sB model: models above %dB "
                        "take 5-15 minutes to load and SageMaker would kill the container while it loads; set it "
                        "to at least %d" % (startup_timeout, parameters_b, LARGE_MODEL_PARAMETERS_B,
                                            LARGE_MODEL_MIN_STARTUP_TIMEOUT_S))
    return {"instance_type": instance_type, "num_gpus": num_gpus, "startup_timeout": startup_timeout,
            "reasons": reasons}


def has_instance_storage(ml_type):
    """SageMaker refuses VolumeSizeInGB on instance types with local NVMe storage."""
    return instance(ml_type)["nvme_disks"] > 0
