#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sagemaker_endpoint
short_description: A SageMaker real-time endpoint serving an LLM, with blue/green updates and auto scaling
version_added: 0.1.0
description:
  - Creates, updates or deletes a SageMaker real-time endpoint that serves a large language model with the TGI,
    LMI (vLLM) or a custom vLLM image, the managed alternative to the EC2 fleet of this collection.
  - SageMaker models and endpoint configs cannot be changed. This module names each one from a hash of its content
    (C(<name>-model-<hash>), C(<name>-config-<hash>)), creates the ones that are missing, moves the endpoint with
    C(UpdateEndpoint) (SageMaker's blue/green deployment, the old fleet serves until the new one is healthy),
    waits for C(InService), and then deletes the superseded configs and models when O(delete_old_configs) is set.
    Only resources named this way for this endpoint are ever deleted.
  - When nothing differs it reports C(changed=false) and makes no call that changes anything.
  - A failed update is rolled back by SageMaker. The module then fails with SageMaker's C(FailureReason), and the
    endpoint keeps serving its previous config. A failed create leaves a C(Failed) endpoint, which the next run
    deletes and creates again.
  - Auto scaling (Application Auto Scaling, target tracking) is registered, updated and removed per variant. A
    variant whose instance type changes is deregistered before the update, as SageMaker requires, and registered
    again once the endpoint is C(InService).
  - With O(model_parameters_b), the sizing planner of this collection picks the cheapest SageMaker GPU instance
    type that fits the model (unless O(instance_type) is given), sets C(SM_NUM_GPUS) to the tensor-parallel
    size it needs, and for models above 13B sets the container startup health-check timeout to 600 s or fails
    when a shorter one is given.
  - Every input is checked whole before any AWS call; the message names the parameter and the fix.
author:
  - llmserve.aws maintainers (@llmserve)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmserve.aws.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Reads the endpoint and reports every step it would take (RV(changes)) and the diff; changes nothing.
  diff_mode:
    support: full
    details: Endpoint config, variants, models (environment with the token replaced), auto scaling and tags.
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the endpoint; models and endpoint configs are named from it.
      - 1-63 letters, digits and hyphens, starting and ending with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the endpoint; V(absent) removes its auto scaling and deletes it (and its
        configs and models when O(delete_old_configs)).
    type: str
    choices: [present, absent]
    default: present
  execution_role_arn:
    description:
      - The IAM role SageMaker assumes to pull the image and the model data, C(arn:aws:iam::ACCOUNT:role/NAME).
      - Required when O(state=present).
    type: str
  image_uri:
    description:
      - The serving image in Amazon ECR, C(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG) or C(@sha256:DIGEST)
        (Hugging Face TGI, LMI with vLLM, or your own vLLM image).
      - Required when O(state=present), unless every variant names its own.
    type: str
  model_data_url:
    description:
      - S3 prefix holding the uncompressed model files, C(s3://BUCKET/PREFIX/). Mounted at C(/opt/ml/model), which
        becomes C(HF_MODEL_ID). Exactly one of O(model_data_url) and O(hf_model_id).
    type: str
  hf_model_id:
    description:
      - Hugging Face model id the container downloads at start, C(ORGANIZATION/NAME).
    type: str
  environment:
    description:
      - More container environment variables (string values). C(HF_TOKEN), C(SM_NUM_GPUS) and C(HF_MODEL_ID) are
        set from O(hf_token), O(num_gpus) and the model options and are refused here.
    type: dict
    default: {}
  hf_token:
    description:
      - Hugging Face token for gated models, passed as C(HF_TOKEN). Never shown in output or diff.
      - It is part of the model's content, so a new token makes a new model and a blue/green update.
    type: str
  instance_type:
    description:
      - SageMaker GPU instance type, for example V(ml.g5.xlarge). Chosen by the planner from O(model_parameters_b)
        when left out.
    type: str
  initial_instance_count:
    description:
      - Instances per variant at creation and after each update.
    type: int
    default: 1
  num_gpus:
    description:
      - GPUs the model is sharded across (C(SM_NUM_GPUS)). Default the tensor-parallel size the planner finds for
        O(model_parameters_b), else every GPU of the instance type.
    type: int
  model_parameters_b:
    description:
      - Model size in billions of parameters. Lets the planner pick O(instance_type) and O(num_gpus), and requires a
        startup health-check timeout of at least 600 s above 13B.
    type: float
  dtype:
    description:
      - Weight precision the planner sizes for.
    type: str
    choices: [float16, bfloat16, fp8, int8, int4]
  quantization:
    description:
      - Quantization the planner sizes for.
    type: str
    choices: [none, awq, gptq, fp8]
  max_model_len:
    description:
      - Context length (tokens) the planner sizes the KV cache for.
    type: int
  concurrency:
    description:
      - Concurrent sequences at O(max_model_len) the planner sizes the KV cache for.
    type: int
  container_startup_health_check_timeout:
    description:
      - Seconds SageMaker waits for the container to pass its health check (60-3600). At least 600 for models
        above 13B; that is the default for them.
    type: int
  model_data_download_timeout:
    description:
      - Seconds SageMaker allows to download the model data to each instance (60-3600).
    type: int
  volume_size_gb:
    description:
      - EBS volume per instance (1-512 GB). SageMaker accepts it only for instance types without local NVMe
        storage; every GPU type of the catalog has NVMe, so the module refuses it for them.
    type: int
  variants:
    description:
      - Production variants for A/B tests. Default one variant C(AllTraffic) from the options above.
      - Each variant's missing settings come from the top-level options.
    type: list
    elements: dict
    suboptions:
      name:
        description: Variant name.
        type: str
        required: true
      weight:
        description: Share of the traffic, relative to the other variants' weights.
        type: float
        default: 1.0
      instance_type:
        description: Instance type of this variant.
        type: str
      initial_instance_count:
        description: Instances of this variant.
        type: int
      model:
        description:
          - This variant's model; missing keys come from the top-level options.
          - Giving O(variants[].model.hf_model_id) or O(variants[].model.model_data_url) replaces both top-level
            weight sources.
        type: dict
        suboptions:
          image_uri:
            description: Serving image.
            type: str
          model_data_url:
            description: S3 prefix of the uncompressed model.
            type: str
          hf_model_id:
            description: Hugging Face model id.
            type: str
          environment:
            description: Container environment (replaces the top-level one).
            type: dict
          num_gpus:
            description: C(SM_NUM_GPUS).
            type: int
          model_parameters_b:
            description: Model size for the planner.
            type: float
      autoscaling:
        description: Auto scaling of this variant; default the top-level O(autoscaling).
        type: dict
        suboptions: &autoscaling
          min_capacity:
            description: Fewest instances (1 or more).
            type: int
            default: 1
          max_capacity:
            description: Most instances.
            type: int
            required: true
          target_value:
            description: Value of the metric the policy keeps the variant at (for example 70 for 70% GPU use).
            type: float
            required: true
          metric:
            description:
              - The tracked metric. Default the predefined V(SageMakerVariantInvocationsPerInstance).
              - Give O(autoscaling.metric.name) for a CloudWatch metric such as V(GPUUtilization).
            type: dict
            suboptions:
              predefined:
                description: Predefined metric type.
                type: str
                choices: [SageMakerVariantInvocationsPerInstance]
              name:
                description: CloudWatch metric name, for example V(GPUUtilization).
                type: str
              namespace:
                description: CloudWatch namespace.
                type: str
                default: /aws/sagemaker/Endpoints
              statistic:
                description: Statistic of the metric.
                type: str
                default: Average
                choices: [Average, Minimum, Maximum, SampleCount, Sum]
              dimensions:
                description: Metric dimensions. Default C(EndpointName) and C(VariantName) of this variant.
                type: list
                elements: dict
                suboptions:
                  name:
                    description: Dimension name.
                    type: str
                    required: true
                  value:
                    description: Dimension value.
                    type: str
                    required: true
          scale_in_cooldown:
            description: Seconds after a scale-in before another.
            type: int
            default: 300
          scale_out_cooldown:
            description: Seconds after a scale-out before another.
            type: int
            default: 60
  autoscaling:
    description:
      - Auto scaling for every variant that gives none of its own. Leave out to remove it.
    type: dict
    suboptions: *autoscaling
  tags:
    description:
      - Tags of the endpoint (and of the models and configs created). Tags not given are removed from the endpoint.
    type: dict
    default: {}
  delete_old_configs:
    description:
      - Delete the endpoint configs and models this module created for this endpoint that the endpoint no longer
        uses, once it is C(InService) on the new one (with O(state=absent), all of them).
    type: bool
    default: true
notes:
  - Waits share one deadline, O(wait_timeout), across the run. Large models take 5-15 minutes to start; raise
    O(wait_timeout) to 1800 or more for them.
  - With O(wait=false) the module starts the create or update and returns; auto scaling and deleting superseded
    resources then wait for a later run.
seealso:
  - name: Deploy models for real-time inference
    description: SageMaker real-time endpoints, endpoint configs and production variants.
    link: https://docs.aws.amazon.com/sagemaker/latest/dg/realtime-endpoints-deploy-models.html
  - name: Automatic scaling of Amazon SageMaker AI models
    description: Scalable targets and target-tracking policies for endpoint variants.
    link: https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling.html
"""

EXAMPLES = r"""
- name: A 70B model on SageMaker with TGI, sized by the planner, scaled on GPU use
  llmserve.aws.sagemaker_endpoint:
    name: llama-70b
    execution_role_arn: arn:aws:iam::123456789012:role/llmserve-sagemaker
    image_uri: 763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.4.0-tgi2.3.1-gpu-py311-cu124-ubuntu22.04
    model_data_url: s3://llmserve-models/Llama-3.1-70B-Instruct/
    model_parameters_b: 70
    max_model_len: 8192
    concurrency: 16
    autoscaling:
      min_capacity: 1
      max_capacity: 4
      target_value: 70
      metric:
        name: GPUUtilization
        namespace: /aws/sagemaker/Endpoints
      scale_in_cooldown: 300
      scale_out_cooldown: 60
    wait_timeout: 2400
  register: endpoint

- name: A/B test of two images on g5 instances
  llmserve.aws.sagemaker_endpoint:
    name: llama-8b
    execution_role_arn: arn:aws:iam::123456789012:role/llmserve-sagemaker
    image_uri: 763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.4.0-tgi2.3.1-gpu-py311-cu124-ubuntu22.04
    hf_model_id: meta-llama/Llama-3.1-8B-Instruct
    hf_token: "{{ lookup('amazon.aws.aws_secret', 'llmserve/hf-token') }}"
    instance_type: ml.g5.xlarge
    variants:
      - name: tgi
        weight: 0.9
      - name: lmi
        weight: 0.1
        model:
          image_uri: 763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124

- name: Remove the endpoint, its auto scaling, configs and models
  llmserve.aws.sagemaker_endpoint:
    name: llama-8b
    state: absent
"""

RETURN = r"""
endpoint_name:
  description: Name of the endpoint.
  returned: always
  type: str
  sample: llama-70b
endpoint_arn:
  description: ARN of the endpoint; null when it does not exist (or not yet, in check mode).
  returned: always
  type: str
  sample: arn:aws:sagemaker:us-east-1:123456789012:endpoint/llama-70b
endpoint_status:
  description: Endpoint status after the run (in check mode, V(Creating), V(Updating) or V(Deleting) where the run
    would start that).
  returned: always
  type: str
  sample: InService
endpoint_config_name:
  description: The endpoint config the endpoint serves (in check mode, the one it would serve).
  returned: always
  type: str
  sample: llama-70b-config-3f2a9c0d1e4b
failure_reason:
  description: SageMaker's FailureReason of the endpoint's last failed create or update, if any.
  returned: always
  type: str
model_names:
  description: Models the endpoint's variants serve.
  returned: always
  type: list
  elements: str
  sample: [llama-70b-model-9c1d2e3f4a5b]
variants:
  description: Production variants of the endpoint config.
  returned: always
  type: list
  elements: dict
  sample:
    - name: AllTraffic
      model_name: llama-70b-model-9c1d2e3f4a5b
      instance_type: ml.g6e.12xlarge
      initial_instance_count: 1
      weight: 1.0
      container_startup_health_check_timeout: 600
      model_data_download_timeout: null
      volume_size_gb: null
autoscaling:
  description: Auto scaling per variant (variants without it are left out).
  returned: always
  type: dict
  sample:
    AllTraffic:
      min_capacity: 1
      max_capacity: 4
      policy_name: llmserve-target-tracking
      target_value: 70.0
      scale_in_cooldown: 300
      scale_out_cooldown: 60
      metric:
        name: GPUUtilization
        namespace: /aws/sagemaker/Endpoints
        statistic: Average
        dimensions: [{name: EndpointName, value: llama-70b}, {name: VariantName, value: AllTraffic}]
scaling_policy_arns:
  description: ARN of this module's target-tracking policy per variant.
  returned: always
  type: dict
  sample:
    AllTraffic: "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:abc:resource/sagemaker/endpoint/llama-70b/\
      variant/AllTraffic:policyName/llmserve-target-tracking"
changes:
  description: The steps taken (in check mode, that would be taken), in order. Empty when nothing differs.
  returned: always
  type: list
  elements: dict
  sample: [{action: create_model, subject: llama-70b-model-9c1d2e3f4a5b}, {action: update_endpoint,
           subject: llama-70b-config-3f2a9c0d1e4b}]
plan:
  description: Per variant, what the planner decided (instance type, num_gpus, startup timeout) and why.
  returned: when O(state=present)
  type: dict
  sample:
    AllTraffic:
      instance_type: ml.g6e.12xlarge
      num_gpus: 4
      startup_timeout: 600
      reasons: ["container_startup_health_check_timeout 600 s: models above 13B load for 5-15 minutes"]
waits:
  description: Each wait of the run, with what it waited for, seconds and checks.
  returned: always
  type: list
  elements: dict
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.llmserve.aws.plugins.module_utils import _waiter as waiter
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import desired
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import endpoint
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import instances
from ansible_collections.llmserve.aws.plugins.module_utils._sagemaker import validation

_DIMENSION_SPEC = dict(name=dict(type="str", required=True), value=dict(type="str", required=True))
_METRIC_SPEC = dict(
    predefined=dict(type="str", choices=["SageMakerVariantInvocationsPerInstance"]),
    name=dict(type="str"),
    namespace=dict(type="str", default="/aws/sagemaker/Endpoints"),
    statistic=dict(type="str", default="Average", choices=list(validation.STATISTICS)),
    dimensions=dict(type="list", elements="dict", options=_DIMENSION_SPEC),
)
_AUTOSCALING_SPEC = dict(
    min_capacity=dict(type="int", default=1),
    max_capacity=dict(type="int", required=True),
    target_value=dict(type="float", required=True),
    metric=dict(type="dict", options=_METRIC_SPEC, mutually_exclusive=[("predefined", "name")]),
    scale_in_cooldown=dict(type="int", default=300),
    scale_out_cooldown=dict(type="int", default=60),
)
_VARIANT_MODEL_SPEC = dict(
    image_uri=dict(type="str"),
    model_data_url=dict(type="str"),
    hf_model_id=dict(type="str"),
    environment=dict(type="dict"),
    num_gpus=dict(type="int"),
    model_parameters_b=dict(type="float"),
)
_VARIANT_SPEC = dict(
    name=dict(type="str", required=True),
    weight=dict(type="float", default=1.0),
    instance_type=dict(type="str"),
    initial_instance_count=dict(type="int"),
    model=dict(type="dict", options=_VARIANT_MODEL_SPEC, mutually_exclusive=[("hf_model_id", "model_data_url")]),
    autoscaling=dict(type="dict", options=_AUTOSCALING_SPEC),
)
ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    execution_role_arn=dict(type="str"),
    image_uri=dict(type="str"),
    model_data_url=dict(type="str"),
    hf_model_id=dict(type="str"),
    environment=dict(type="dict", default={}),
    hf_token=dict(type="str", no_log=True),
    instance_type=dict(type="str"),
    initial_instance_count=dict(type="int", default=1),
    num_gpus=dict(type="int"),
    model_parameters_b=dict(type="float"),
    dtype=dict(type="str", choices=["float16", "bfloat16", "fp8", "int8", "int4"]),
    quantization=dict(type="str", choices=["none", "awq", "gptq", "fp8"]),
    max_model_len=dict(type="int"),
    concurrency=dict(type="int"),
    container_startup_health_check_timeout=dict(type="int"),
    model_data_download_timeout=dict(type="int"),
    volume_size_gb=dict(type="int"),
    variants=dict(type="list", elements="dict", options=_VARIANT_SPEC),
    autoscaling=dict(type="dict", options=_AUTOSCALING_SPEC),
    tags=dict(type="dict", default={}),
    delete_old_configs=dict(type="bool", default=True),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=900),
    wait_sleep=dict(type="int", default=5),
)


def run(module):
    params = module.params
    try:
        validation.endpoint_name(params["name"])
        validation.in_range("wait_timeout", params["wait_timeout"], 1, 86400, " seconds")
        validation.in_range("wait_sleep", params["wait_sleep"], 1, 3600, " seconds")
        target = desired.build(params) if params["state"] == "present" else None
    except (validation.InputError, instances.PlanError) as error:
        module.fail_json(msg=str(error))
    runner = endpoint.Runner(module.client("sagemaker"), module.client("application-autoscaling"), params["name"],
                             params["wait"], params["wait_timeout"], params["wait_sleep"], module.warn)
    try:
        if target is not None:
            return endpoint.ensure_present(runner, target, module.check_mode, params["delete_old_configs"])
        return endpoint.ensure_absent(runner, module.check_mode, params["delete_old_configs"])
    except endpoint.EndpointFailure as failure:
        described = failure.endpoint or {}
        module.fail_json(msg=str(failure), failure_reason=failure.failure_reason,
                         endpoint_status=described.get("EndpointStatus"),
                         endpoint_config_name=described.get("EndpointConfigName"), waits=runner.waits)
    except waiter.WaitTimeout as timeout:
        module.fail_json(msg=str(timeout), waits=runner.waits)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        module.fail_json_aws(error, msg="SageMaker endpoint %s" % params["name"])


def main():
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                              required_if=[("state", "present", ["execution_role_arn"])],
                              mutually_exclusive=[("hf_model_id", "model_data_url")])
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
