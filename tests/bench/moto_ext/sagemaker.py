"""SageMaker real-time endpoints as AWS runs them, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8):
- CreateEndpoint is `InService` at once; AWS shows `Creating` for minutes first.
- UpdateEndpoint is not implemented (HTTP 500).
- UpdateEndpointWeightsAndCapacities flips through `Updating` inside one call, so nobody ever sees it.
- DeleteEndpoint removes the endpoint at once; AWS shows `Deleting` first.
- CreateEndpoint over an existing name silently replaces it; AWS refuses.
- Nothing ever fails: AWS ends a CreateEndpoint whose container never gets healthy in `Failed`, and rolls a
  failed UpdateEndpoint back (`InService` on the previous config), each with a FailureReason. The setting
  `sagemaker_failure_reason` (settings.py) makes the transitions started while it is set end that way.
- UpdateEndpoint ignores Application Auto Scaling: AWS refuses an update that changes the instance type of a
  variant registered as a scalable target (deregister it first, re-register after).
- CreateEndpointConfig rejects the GPU/accelerator instance types used to serve LLMs (ml.g5, ml.g6, ml.g6e,
  ml.p4d, ml.p5, ml.inf2, ...) because moto validates against an old hard-coded list.

Transitions are lazy: the deadline is stored when the call is made, and every later call that reads
endpoints first settles what is due (no background thread, so nothing runs between requests and a moto
reset, which rebuilds the backend, drops pending transitions with the endpoints).
"""

from dataclasses import dataclass
from typing import Any

from moto.core.responses import ActionResult
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from .settings import STATE_LOCK, current, now

# Real SageMaker hosting instance types for LLM serving that moto's list lacks (AWS's CreateEndpointConfig
# accepts them; quotas aside).
LLM_SERVING_INSTANCE_TYPES = frozenset(
    [
        f"ml.{family}.{size}"
        for family in ("g5", "g6", "g6e")
        for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
    ]
    + ["ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge", "ml.p5en.48xlarge"]
    + [f"ml.inf2.{size}" for size in ("xlarge", "8xlarge", "24xlarge", "48xlarge")]
    + ["ml.trn1.2xlarge", "ml.trn1.32xlarge", "ml.trn1n.32xlarge"]
)

# Backend attribute holding pending transitions; moto's reset clears a backend's __dict__, so they go with it.
_PENDING_ATTR = "_llmserve_endpoint_transitions"


@dataclass
class _Transition:
    status: str  # Creating, Updating or Deleting
    done_at: float
    # UpdateEndpoint: the config the endpoint switches to when done, held from the call on (AWS copies the
    # config at UpdateEndpoint, so deleting it afterwards does not disturb the update).
    new_config: FakeEndpointConfig | None = None
    # Non-empty: the transition fails with this reason (from settings.sagemaker_failure_reason at the call).
    failure_reason: str = ""


def _pending(backend: SageMakerModelBackend) -> dict[str, _Transition]:
    return backend.__dict__.setdefault(_PENDING_ATTR, {})


def _endpoint_arn(backend: SageMakerModelBackend, endpoint_name: str) -> str:
    return FakeEndpoint.arn_formatter(endpoint_name, backend.account_id, backend.region_name)


def _config_arn(backend: SageMakerModelBackend, config_name: str) -> str:
    return FakeEndpointConfig.arn_formatter(config_name, backend.account_id, backend.region_name)


def _switch_to_config(endpoint: FakeEndpoint, config: FakeEndpointConfig) -> None:
    endpoint.endpoint_config_name = config.endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    endpoint.data_capture_config = config.data_capture_config


def _finish(backend: SageMakerModelBackend, name: str, transition: _Transition) -> None:
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        return
    if transition.status == "Deleting":
        del backend.endpoints[name]
        return
    endpoint.pending_deployment_summary = None
    endpoint.last_modified_time = utcnow()
    if transition.failure_reason:
        # Restores: a failed create ends `Failed`; a failed update rolls back, so the endpoint keeps serving
        # its previous config, `InService`; both carry the reason.
        endpoint.failure_reason = transition.failure_reason
        endpoint.endpoint_status = "Failed" if transition.status == "Creating" else "InService"
        return
    if transition.new_config is not None:
        _switch_to_config(endpoint, transition.new_config)
    endpoint.failure_reason = None
    endpoint.endpoint_status = "InService"


def settle(backend: SageMakerModelBackend) -> None:
    """Complete every transition whose time has come."""
    with STATE_LOCK:
        pending = _pending(backend)
        moment = now()
        for name, transition in list(pending.items()):
            if moment >= transition.done_at:
                del pending[name]
                _finish(backend, name, transition)


def _begin(backend: SageMakerModelBackend, endpoint: FakeEndpoint, transition: _Transition) -> None:
    """Enter a transitional status; with a zero delay, finish at once (moto's own behaviour)."""
    endpoint.endpoint_status = transition.status
    endpoint.last_modified_time = utcnow()
    if transition.done_at <= now():
        _finish(backend, endpoint.endpoint_name, transition)
    else:
        _pending(backend)[endpoint.endpoint_name] = transition


def _wrap_settling(original: Any) -> Any:
    def settled_first(self: SageMakerModelBackend, *args: Any, **kwargs: Any) -> Any:
        settle(self)
        return original(self, *args, **kwargs)

    settled_first.__wrapped__ = original  # type: ignore[attr-defined]
    return settled_first


def _patch_backend() -> None:
    original_create = SageMakerModelBackend.create_endpoint
    original_delete = SageMakerModelBackend.delete_endpoint
    original_weights = SageMakerModelBackend.update_endpoint_weights_and_capacities

    def create_endpoint(
        self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str, tags: list[dict[str, str]]
    ) -> FakeEndpoint:
        # Restores: AWS refuses a second CreateEndpoint for a live name ("Cannot create already existing
        # endpoint"); then the endpoint is `Creating` before `InService`.
        with STATE_LOCK:
            settle(self)
            if endpoint_name in self.endpoints:
                raise ValidationError(
                    message=f'Cannot create already existing endpoint "{_endpoint_arn(self, endpoint_name)}".'
                )
            endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
            settings = current()
            _begin(
                self,
                endpoint,
                _Transition(
                    "Creating", now() + settings.sagemaker_delay_s, failure_reason=settings.sagemaker_failure_reason
                ),
            )
            return endpoint

    def delete_endpoint(self: SageMakerModelBackend, endpoint_name: str) -> None:
        # Restores: AWS keeps the endpoint visible as `Deleting` before it is gone. A second delete while it
        # is Deleting is accepted and does not restart the clock.
        with STATE_LOCK:
            settle(self)
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:
                original_delete(self, endpoint_name)  # raises moto's ValidationException
                return
            if endpoint.endpoint_status == "Deleting":
                return
            _pending(self).pop(endpoint_name, None)
            endpoint.pending_deployment_summary = None
            _begin(self, endpoint, _Transition("Deleting", now() + current().sagemaker_delay_s))

    def update_endpoint(self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str) -> str:
        # Restores: UpdateEndpoint (moto: not implemented). The endpoint keeps serving its current variants
        # while `Updating`, shows the new config under PendingDeploymentSummary, then switches to it.
        # RetainAllVariantProperties, ExcludeRetainedVariantProperties, DeploymentConfig and
        # RetainDeploymentConfig are accepted by the API but ignored here: the new config replaces all variants.
        with STATE_LOCK:
            settle(self)
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:
                raise ValidationError(message=f"Could not find endpoint '{_endpoint_arn(self, endpoint_name)}'.")
            config = self.endpoint_configs.get(endpoint_config_name)
            if config is None:
                raise ValidationError(
                    message=f"Could not find endpoint configuration '{_config_arn(self, endpoint_config_name)}'."
                )
            _refuse_unless_in_service(self, endpoint)
            _refuse_instance_type_change_under_autoscaling(self, endpoint, config)
            endpoint.pending_deployment_summary = {
                "EndpointConfigName": endpoint_config_name,
                "ProductionVariants": [
                    {
                        key: value
                        for key, value in {
                            "VariantName": variant["VariantName"],
                            "DesiredInstanceCount": variant.get("InitialInstanceCount"),
                            "DesiredWeight": variant.get("InitialVariantWeight"),
                            "InstanceType": variant.get("InstanceType"),
                            "VariantStatus": [{"Status": "Creating", "StartTime": utcnow()}],
                        }.items()
                        if value is not None
                    }
                    for variant in config.production_variants
                ],
                "StartTime": utcnow(),
            }
            settings = current()
            _begin(
                self,
                endpoint,
                _Transition(
                    "Updating",
                    now() + settings.sagemaker_delay_s,
                    new_config=config,
                    failure_reason=settings.sagemaker_failure_reason,
                ),
            )
            return endpoint.arn

    def update_endpoint_weights_and_capacities(
        self: SageMakerModelBackend, endpoint_name: str, desired_weights_and_capacities: list[dict[str, Any]]
    ) -> str:
        # Restores: AWS refuses this while the endpoint is in progress, and then shows `Updating` for a while.
        with STATE_LOCK:
            settle(self)
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is not None:
                _refuse_unless_in_service(self, endpoint)
            arn = original_weights(self, endpoint_name, desired_weights_and_capacities)
            endpoint = self.endpoints[endpoint_name]
            _begin(self, endpoint, _Transition("Updating", now() + current().sagemaker_delay_s))
            return arn

    SageMakerModelBackend.create_endpoint = create_endpoint
    SageMakerModelBackend.delete_endpoint = delete_endpoint
    SageMakerModelBackend.update_endpoint = update_endpoint
    SageMakerModelBackend.update_endpoint_weights_and_capacities = update_endpoint_weights_and_capacities
    SageMakerModelBackend.describe_endpoint = _wrap_settling(SageMakerModelBackend.describe_endpoint)
    SageMakerModelBackend.list_endpoints = _wrap_settling(SageMakerModelBackend.list_endpoints)


def _refuse_unless_in_service(backend: SageMakerModelBackend, endpoint: FakeEndpoint) -> None:
    if endpoint.endpoint_status != "InService":
        raise ValidationError(
            message=f'Cannot update in-progress endpoint "{_endpoint_arn(backend, endpoint.endpoint_name)}".'
        )


VARIANT_SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _refuse_instance_type_change_under_autoscaling(
    backend: SageMakerModelBackend, endpoint: FakeEndpoint, new_config: FakeEndpointConfig
) -> None:
    """Restores: "If the update would change the instance type for any model that is a target for automatic
    scaling, the update fails" (SageMaker developer guide, "Update endpoints that use auto scaling")."""
    current_config = backend.endpoint_configs.get(endpoint.endpoint_config_name)
    if current_config is None:
        return
    scaling = applicationautoscaling_backends[backend.account_id][backend.region_name]
    registered = scaling.targets.get(VARIANT_SCALABLE_DIMENSION, {})
    new_types = {variant["VariantName"]: variant.get("InstanceType") for variant in new_config.production_variants}
    blocked = [
        variant["VariantName"]
        for variant in current_config.production_variants
        if f"endpoint/{endpoint.endpoint_name}/variant/{variant['VariantName']}" in registered
        and variant["VariantName"] in new_types
        and new_types[variant["VariantName"]] != variant.get("InstanceType")
    ]
    if blocked:
        raise ValidationError(
            message=f"The variant(s) {blocked} must be deregistered as scalable targets with AWS Application Auto "
            "Scaling before their instance type can be updated."
        )


def _patch_responses() -> None:
    def update_endpoint(self: SageMakerResponse) -> ActionResult:
        arn = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": arn})

    SageMakerResponse.update_endpoint = update_endpoint


def _patch_instance_types() -> None:
    original_validate = FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self: FakeEndpointConfig, instance_type: str) -> None:
        # Restores: AWS accepts the LLM-serving GPU/accelerator instance types moto's list predates.
        if instance_type in LLM_SERVING_INSTANCE_TYPES:
            return
        original_validate(self, instance_type)

    FakeEndpointConfig.validate_instance_type = validate_instance_type


def apply() -> None:
    _patch_instance_types()
    _patch_backend()
    _patch_responses()
