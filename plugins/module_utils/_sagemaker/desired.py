# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wanted state of an endpoint, computed from the module's parameters alone (pure: no AWS calls).

build() checks every input, plans each variant, and returns the CreateModel / CreateEndpointConfig requests
(content-hash named) and the wanted scaling per variant. view() renders a state as the module returns and
diffs it, with secrets replaced, for the wanted state and for what AWS describes alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import instances
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import naming
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import scaling
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import validation

DEFAULT_VARIANT = "AllTraffic"  # the SageMaker Python SDK's name for a single variant
MODEL_DIRECTORY = "/opt/ml/model"  # where SageMaker puts an S3 model data source in the container
SECRET_ENVIRONMENT = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
REDACTED = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
MODEL_FIELDS = ("image_uri", "model_data_url", "hf_model_id", "environment", "num_gpus", "model_parameters_b")
SIZING_FIELDS = ("dtype", "quantization", "max_model_len", "concurrency")


class Desired:
    """What build() returns."""

    def __init__(self, models, config, variants, scaling_by_variant, plans):
        self.models = models  # {model name: CreateModel request}
        self.config = config  # CreateEndpointConfig request
        self.variants = variants  # [variant name]
        self.scaling = scaling_by_variant  # {variant name: normalized scaling or None}
        self.plans = plans  # {variant name: instances.plan_serving() result}

    @property
    def config_name(self):
        return self.config["EndpointConfigName"]


def _variant_specs(params):
    if not params.get("variants"):
        return [{"name": DEFAULT_VARIANT, "weight": 1.0, "instance_type": None, "initial_instance_count": None,
                 "model": None, "autoscaling": None}]
    return params["variants"]


def _model_spec(params, variant, where):
    spec = dict((field, params.get(field)) for field in MODEL_FIELDS)
    override = variant.get("model") or {}
    if override.get("hf_model_id") or override.get("model_data_url"):
        spec["hf_model_id"], spec["model_data_url"] = None, None  # a variant's own weights replace both
    spec.update((field, value) for field, value in override.items() if value is not None)
    if bool(spec["hf_model_id"]) == bool(spec["model_data_url"]):
        raise validation.InputError("%s: give exactly one of hf_model_id and model_data_url (got %s)" % (
            where, "both" if spec["hf_model_id"] else "neither"))
    if not spec["image_uri"]:
        raise validation.InputError("%s: image_uri is required (the TGI, LMI or vLLM image in ECR)" % where)
    return spec


def _check_model(spec, where):
    validation.image_uri(spec["image_uri"], where + "image_uri")
    if spec["hf_model_id"]:
        validation.hf_model_id(spec["hf_model_id"], where + "hf_model_id")
    else:
        spec["model_data_url"] = validation.model_data_url(spec["model_data_url"], where + "model_data_url")
    spec["environment"] = validation.environment(spec["environment"], where + "environment")
    if spec["model_parameters_b"] is not None and spec["model_parameters_b"] <= 0:
        raise validation.InputError("%smodel_parameters_b must be a positive number of billions, got %s" % (
            where, spec["model_parameters_b"]))


def container(spec, num_gpus, hf_token):
    environment = dict(spec["environment"])
    primary = {"Image": spec["image_uri"], "Environment": environment}
    if spec["hf_model_id"]:
        environment["HF_MODEL_ID"] = spec["hf_model_id"]
    else:
        environment["HF_MODEL_ID"] = MODEL_DIRECTORY
        primary["ModelDataSource"] = {"S3DataSource": {"S3Uri": spec["model_data_url"], "S3DataType": "S3Prefix",
                                                       "CompressionType": "None"}}
    environment["SM_NUM_GPUS"] = str(num_gpus)
    if hf_token:
        environment["HF_TOKEN"] = hf_token
    return primary


def _tag_list(tags):
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def build(params):
    """Check and plan everything; raises validation.InputError or instances.PlanError before any AWS call."""
    name = validation.endpoint_name(params["name"])
    role = validation.role_arn(params["execution_role_arn"])
    hf_token = validation.hf_token(params["hf_token"]) if params.get("hf_token") else None
    tags = validation.tags(params.get("tags"))
    for option in ("container_startup_health_check_timeout", "model_data_download_timeout"):
        validation.in_range(option, params.get(option), validation.TIMEOUT_RANGE_S[0], validation.TIMEOUT_RANGE_S[1],
                            " seconds")
    validation.in_range("volume_size_gb", params.get("volume_size_gb"), *validation.VOLUME_RANGE_GB)
    sizing = dict((field, params.get(field)) for field in SIZING_FIELDS)
    models, variants, scaling_by_variant, plans, seen = {}, [], {}, {}, set()
    for index, variant in enumerate(_variant_specs(params)):
        where = "variants[%d]." % index if params.get("variants") else ""
        variant_name = validation.endpoint_name(variant["name"], where + "name")
        if variant_name in seen:
            raise validation.InputError("%sname=%s appears twice; variant names must be unique" % (where, variant_name))
        seen.add(variant_name)
        spec = _model_spec(params, variant, where.rstrip(".") or "the endpoint")
        _check_model(spec, where + ("model." if variant.get("model") else ""))
        instance_type = variant.get("instance_type") or params.get("instance_type")
        try:
            plan = instances.plan_serving(spec["model_parameters_b"], instance_type, spec["num_gpus"],
                                          params.get("container_startup_health_check_timeout"), sizing)
        except instances.PlanError as error:
            raise instances.PlanError("%s%s" % ("variant %s: " % variant_name if params.get("variants") else "",
                                                error))
        if params.get("volume_size_gb") is not None and instances.has_instance_storage(plan["instance_type"]):
            raise validation.InputError(
                "volume_size_gb: %s has local NVMe instance storage, and SageMaker accepts VolumeSizeInGB only for "
                "instance types without it; leave volume_size_gb out" % plan["instance_type"])
        weight = variant.get("weight")
        if weight is None or weight < 0:
            raise validation.InputError("%sweight must be 0 or more (a share of the traffic), got %s" % (where, weight))
        count = variant.get("initial_instance_count") or params.get("initial_instance_count")
        validation.in_range(where + "initial_instance_count", count, 1, 1000)
        primary = container(spec, plan["num_gpus"], hf_token)
        model_content = {"ExecutionRoleArn": role, "PrimaryContainer": primary}
        model_name = naming.resource_name(name, naming.MODEL_KIND, model_content)
        models[model_name] = dict(model_content, ModelName=model_name, Tags=_tag_list(tags))
        production = {"VariantName": variant_name, "ModelName": model_name, "InstanceType": plan["instance_type"],
                      "InitialInstanceCount": int(count), "InitialVariantWeight": float(weight)}
        for option, key in (("container_startup_health_check_timeout", "ContainerStartupHealthCheckTimeoutInSeconds"),
                            ("model_data_download_timeout", "ModelDataDownloadTimeoutInSeconds"),
                            ("volume_size_gb", "VolumeSizeInGB")):
            value = plan["startup_timeout"] if option == "container_startup_health_check_timeout" else params.get(option)
            if value is not None:
                production[key] = int(value)
        variants.append(production)
        autoscaling = validation.autoscaling(
            variant.get("autoscaling") or params.get("autoscaling"), where + "autoscaling")
        if autoscaling is not None and not autoscaling["min_capacity"] <= int(count) <= autoscaling["max_capacity"]:
            raise validation.InputError("%sinitial_instance_count=%s is outside autoscaling's %s-%s; keep it within" % (
                where, count, autoscaling["min_capacity"], autoscaling["max_capacity"]))
        scaling_by_variant[variant_name] = scaling.desired(name, variant_name, autoscaling)
        plans[variant_name] = plan
    config_content = {"ProductionVariants": variants}
    config_name = naming.resource_name(name, naming.CONFIG_KIND, config_content)
    config = dict(config_content, EndpointConfigName=config_name, Tags=_tag_list(tags))
    return Desired(models, config, [variant["VariantName"] for variant in variants], scaling_by_variant, plans)


def redact(environment):
    return dict((key, REDACTED if key in SECRET_ENVIRONMENT else value) for key, value in (environment or {}).items())


def model_view(primary):
    source = (primary.get("ModelDataSource") or {}).get("S3DataSource") or {}
    return {"image_uri": primary.get("Image"), "model_data_url": source.get("S3Uri"),
            "environment": redact(primary.get("Environment"))}


def variant_view(variant):
    return {"name": variant["VariantName"], "model_name": variant.get("ModelName"),
            "instance_type": variant.get("InstanceType"),
            "initial_instance_count": variant.get("InitialInstanceCount"),
            "weight": variant.get("InitialVariantWeight"),
            "container_startup_health_check_timeout": variant.get("ContainerStartupHealthCheckTimeoutInSeconds"),
            "model_data_download_timeout": variant.get("ModelDataDownloadTimeoutInSeconds"),
            "volume_size_gb": variant.get("VolumeSizeInGB")}


def view(config_name, variants, containers, scaling_by_variant, tags):
    """One state, wanted or current, as returned and diffed: no secret values, same shape for both."""
    return {
        "endpoint_config_name": config_name,
        "variants": [variant_view(variant) for variant in variants],
        "models": dict((name, model_view(primary)) for name, primary in sorted(containers.items())),
        "autoscaling": dict((variant, scaling.view(value)) for variant, value in sorted(scaling_by_variant.items())
                            if value is not None),
        "tags": dict(tags),
    }
