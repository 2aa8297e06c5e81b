"""Auto Scaling termination lifecycle hooks as AWS runs them, on top of moto 5.2.5.

What moto lags on (measured with moto 5.2.5 server mode, boto3 1.44.8):
- CompleteLifecycleAction is not implemented. AWS completes the action an instance is waiting on and, for a
  termination hook, lets the termination proceed; with no action pending it answers ValidationError
  "No active Lifecycle Action found with instance ID i-...".
- TerminateInstanceInAutoScalingGroup terminates at once even when the group has an
  `autoscaling:EC2_INSTANCE_TERMINATING` hook. AWS puts the instance in `Terminating:Wait` (what IMDS's
  autoscaling/target-lifecycle-state reports as `Terminated`) until CompleteLifecycleAction or the hook's
  heartbeat timeout. The timeout is not emulated: a test completes the action or reads the waiting state.

Pending actions live on the backend (reset with it).
"""

from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend, TerminateInstanceActivity
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult

from .settings import STATE_LOCK

_PENDING_ATTR = "_llmserve_pending_lifecycle_actions"
TERMINATING_TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"


def _pending(backend: AutoScalingBackend) -> dict[str, dict[str, Any]]:
    return backend.__dict__.setdefault(_PENDING_ATTR, {})


def _instance_state(backend: AutoScalingBackend, instance_id: str) -> Any:
    for group in backend.autoscaling_groups.values():
        for instance_state in group.instance_states:
            if instance_state.instance.id == instance_id:
                return instance_state
    return None


def _patch_backend() -> None:
    original_terminate = AutoScalingBackend.terminate_instance

    def terminate_instance(self: AutoScalingBackend, instance_id: str, should_decrement: bool) -> Any:
        # Restores: a termination hook holds the instance in Terminating:Wait instead of terminating it.
        with STATE_LOCK:
            instance_state = _instance_state(self, instance_id)
            if instance_state is None:
                return original_terminate(self, instance_id, should_decrement)
            group = instance_state.instance.autoscaling_group
            hooks = [
                hook.name
                for hook in self.describe_lifecycle_hooks(group.name)
                if hook.lifecycle_transition == TERMINATING_TRANSITION
            ]
            if not hooks:
                return original_terminate(self, instance_id, should_decrement)
            instance_state.lifecycle_state = "Terminating:Wait"
            _pending(self)[instance_id] = {
                "group": group.name,
                "hooks": set(hooks),
                "should_decrement": should_decrement,
            }
            return TerminateInstanceActivity(instance_state.instance, group.desired_capacity)

    def complete_lifecycle_action(
        self: AutoScalingBackend, group_name: str, hook_name: str, instance_id: str, result: str
    ) -> None:
        # Restores: CompleteLifecycleAction (missing in moto), with AWS's error when nothing is pending.
        if result not in ("CONTINUE", "ABANDON"):
            raise ValidationError(f"LifecycleActionResult must be CONTINUE or ABANDON, got {result}")
        with STATE_LOCK:
            action = _pending(self).get(instance_id)
            if action is None or action["group"] != group_name or hook_name not in action["hooks"]:
                raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
            action["hooks"].discard(hook_name)
            if action["hooks"]:
                return  # AWS waits for every termination hook of the group
            del _pending(self)[instance_id]
            instance_state = _instance_state(self, instance_id)
            if instance_state is not None:
                # For a termination hook CONTINUE and ABANDON both let the termination go ahead.
                instance_state.lifecycle_state = "Terminating:Proceed"
                original_terminate(self, instance_id, action["should_decrement"])

    AutoScalingBackend.terminate_instance = terminate_instance
    AutoScalingBackend.complete_lifecycle_action = complete_lifecycle_action


def _patch_responses() -> None:
    def complete_lifecycle_action(self: AutoScalingResponse) -> Any:
        self.autoscaling_backend.complete_lifecycle_action(
            group_name=self._get_param("AutoScalingGroupName"),
            hook_name=self._get_param("LifecycleHookName"),
            instance_id=self._get_param("InstanceId"),
            result=self._get_param("LifecycleActionResult"),
        )
        return EmptyResult()

    AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action


def apply() -> None:
    _patch_backend()
    _patch_responses()
