"""The spot watcher as a process on this host, against the IMDSv2 emulator, moto and (marker `vllm`) vLLM on CPU.

No part is imitated: the watcher (roles/spot_interruption/files/llmserve_spot_watcher.py) runs as its own process,
takes its credentials from the emulator's instance-role endpoint, calls moto's ELBv2 and Auto Scaling APIs, and
reads vLLM's real /metrics. The host has no systemd, so here the watcher stops vLLM with a `stop_command` (SIGTERM
to vLLM's main process, what KillMode=mixed does); the role's molecule scenario proves the systemd path.
Tests that need no vLLM point the watcher at a closed port: to the watcher that is "vLLM not listening, nothing
to drain", and their stop command only records that it ran.
"""

import json
import signal
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.bench import spot_bench  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.playbook import run_playbook  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402
from tests.bench.imds_emulator import ImdsEmulator  # noqa: E402

SPOT = "meta-data/spot/instance-action"
REBALANCE = "meta-data/events/recommendations/rebalance"
SCHEDULED = "meta-data/events/maintenance/scheduled"
LIFECYCLE = "meta-data/autoscaling/target-lifecycle-state"
EVENT_TIMEOUT_S = 20.0


def stop_marker_command(marker):
    """A stop command that only records each time it ran (tests that keep vLLM, or have none)."""
    return ["/bin/sh", "-c", f"echo stop >> {marker}"]


def stops_recorded(marker):
    return len(marker.read_text().splitlines()) if marker.exists() else 0


class Bench:
    """One instance's bench: moto holding the instance and its target group, the emulator, the watcher."""

    def __init__(self, aws, tmp_path, vllm_port, with_asg=False):
        self.aws_url = aws.endpoint_url
        self.tmp_path = tmp_path
        self.instance = spot_bench.provision(self.aws_url, port=vllm_port, with_asg=with_asg)
        self.imds = ImdsEmulator(instance_id=self.instance.instance_id, aws_endpoint_url=self.aws_url).start()
        self.marker = tmp_path / "stops"
        self.watcher = None
        self.vllm_port = vllm_port

    def make_watcher(self, stop_command=None, **overrides):
        config = spot_bench.watcher_config(
            imds_url=self.imds.url,
            aws_url=self.aws_url,
            instance=self.instance,
            vllm_port=self.vllm_port,
            state_dir=self.tmp_path / "state",
            stop_command=stop_command or stop_marker_command(self.marker),
            **overrides,
        )
        self.watcher = spot_bench.WatcherProcess(self.tmp_path, config)
        return self.watcher

    def target_state(self):
        return spot_bench.target_state(self.aws_url, self.instance)

    def close(self):
        if self.watcher is not None:
            self.watcher.stop()
        self.imds.stop()


@pytest.fixture
def bench(aws_clean, tmp_path):
    created = []

    def make(vllm_port=None, with_asg=False):
        made = Bench(aws_clean, tmp_path, vllm_port or free_port(), with_asg=with_asg)
        created.append(made)
        return made

    yield make
    for made in created:
        made.close()


def imds_failures(watcher, path, text):
    return [
        event
        for event in watcher.named("imds_failure")
        if event["path"] == path and text in event["error"]
    ]


def assert_no_imdsv1(imds):
    assert imds.imdsv1_requests() == []
    assert all(entry["had_token"] for entry in imds.requests() if entry["method"] == "GET")


# ---------------------------------------------------------------------------------------------- IMDS edge cases
NOTICE_BODIES = {
    SPOT: lambda imds: imds.set_spot_action("terminate", in_seconds=120),
    REBALANCE: lambda imds: imds.set_rebalance_recommendation(),
    SCHEDULED: lambda imds: imds.add_scheduled_event("instance-stop", in_seconds=300),
    LIFECYCLE: lambda imds: imds.set_lifecycle_state("Terminated"),
}
# What a malformed 200 looks like on each path (the lifecycle state is plain text, not JSON).
BAD_BODIES = {SPOT: "{not json", REBALANCE: "{not json", SCHEDULED: "{not json", LIFECYCLE: "Termin@ted?"}
BAD_BODY_ERRORS = {SPOT: "bad JSON", REBALANCE: "bad JSON", SCHEDULED: "bad JSON", LIFECYCLE: "unexpected value"}


@pytest.mark.parametrize("path", [SPOT, REBALANCE, SCHEDULED, LIFECYCLE], ids=["spot", "rebalance", "scheduled", "asg"])
def test_each_path_survives_imds_faults_then_its_notice_drains(bench, path):
    bench = bench()
    imds = bench.imds
    imds.set_max_token_ttl(2)  # tokens expire every 2 s while the watcher polls
    watcher = bench.make_watcher(poll_interval_s=0.5, act_on_rebalance=True, max_identical_failures=20)
    watcher.start()

    # 404 (none of these paths has a notice yet; the scheduled-events path answers [] and here a 404 too).
    mark = len(imds.requests())
    imds.add_fault(path, status=404, count=2)
    wait_until(
        lambda: len([entry for entry in imds.requests()[mark:] if entry["path"] == "/latest/" + path]) >= 3,
        EVENT_TIMEOUT_S,
        "the two 404s and one more poll",
    )
    assert watcher.named("imds_failure") == []
    # 500, then a malformed body, then a timeout: each logged as a failure, each followed by normal polls.
    imds.add_fault(path, status=500, count=2)
    wait_until(lambda: len(imds_failures(watcher, path, "HTTP 500")) == 2, EVENT_TIMEOUT_S, "two HTTP 500s")
    imds.add_fault(path, body=BAD_BODIES[path], count=2)
    wait_until(lambda: len(imds_failures(watcher, path, BAD_BODY_ERRORS[path])) == 2, EVENT_TIMEOUT_S, "bad bodies")
    imds.add_fault(path, delay_s=1.5, count=1)  # longer than the watcher's 1 s timeout
    wait_until(lambda: imds_failures(watcher, path, "timeout"), EVENT_TIMEOUT_S, "a timeout")
    # 401: every token revoked at once; the watcher takes a new one and repeats the read. A long-lived token
    # first, so that no refresh due anyway can get in before the revoked token is used.
    imds.set_max_token_ttl(3600)
    mark = len(imds.requests())
    wait_until(
        lambda: any(entry["path"] == "/latest/api/token" for entry in imds.requests()[mark:]),
        EVENT_TIMEOUT_S,
        "a long-lived token",
    )
    mark = len(imds.requests())
    imds.expire_tokens()
    wait_until(
        lambda: any(entry["status"] == 401 for entry in imds.requests()[mark:]), EVENT_TIMEOUT_S, "a 401"
    )

    def two_requests_after_the_first_401():
        after = imds.requests()[mark:]
        first = next(index for index, entry in enumerate(after) if entry["status"] == 401)
        return (after, first) if len(after) >= first + 3 else None

    after, first_401 = wait_until(two_requests_after_the_first_401, EVENT_TIMEOUT_S, "the token retry")
    assert after[first_401 + 1]["path"] == "/latest/api/token"
    assert after[first_401 + 2]["path"] == after[first_401]["path"]
    assert after[first_401 + 2]["status"] in (200, 404)
    assert not [event for event in watcher.named("imds_failure") if "401" in event["error"]]
    imds.set_max_token_ttl(2)
    # No failure beyond the injected ones, the target still registered, no drain yet.
    injected = {"HTTP 500": 2, BAD_BODY_ERRORS[path]: 2, "timeout": 1}
    failures = watcher.named("imds_failure")
    assert len(failures) == sum(injected.values()), failures
    assert bench.target_state() == "healthy"
    assert watcher.state()["phase"] == "idle"
    assert watcher.process.poll() is None

    NOTICE_BODIES[path](imds)
    watcher.wait_for("drain_finished", EVENT_TIMEOUT_S)
    assert bench.target_state() in ("draining", "unused")
    kinds = {SPOT: "spot", REBALANCE: "rebalance", SCHEDULED: "scheduled", LIFECYCLE: "asg"}
    assert [event["kind"] for event in watcher.named("notice")] == [kinds[path]]
    assert stops_recorded(bench.marker) == 1
    tokens = [entry for entry in imds.requests() if entry["path"] == "/latest/api/token"]
    assert len(tokens) >= 4, "tokens of 2 s must have been refreshed while polling"
    refused = [entry for entry in imds.requests() if entry["status"] == 401]
    assert len(refused) == 1, "only the revoked token may be refused: the watcher refreshes tokens before expiry"
    assert_no_imdsv1(imds)


def test_spot_notice_with_an_unreadable_time_still_drains(bench):
    bench = bench()
    watcher = bench.make_watcher()
    watcher.start()
    bench.imds.add_fault(SPOT, body=json.dumps({"action": "terminate", "time": "in two minutes"}))
    watcher.wait_for("drain_finished", EVENT_TIMEOUT_S)
    (warning,) = {event["warning"] for event in watcher.named("imds_warning")}
    assert "not an RFC 3339 time" in warning
    (notice,) = watcher.named("notice")
    assert 100 < float(notice["seconds_left"]) <= 120
    assert bench.target_state() in ("draining", "unused")
    assert_no_imdsv1(bench.imds)


def test_scheduled_event_with_an_unreadable_time_is_skipped(bench):
    bench = bench()
    watcher = bench.make_watcher(poll_interval_s=0.5)
    watcher.start()
    bench.imds.set_scheduled_events(
        [{"Code": "instance-stop", "NotBefore": "tomorrow", "NotAfter": "later", "State": "active",
          "EventId": "instance-event-0123456789abcdef0", "Description": "scheduled instance stop"}]
    )
    wait_until(lambda: watcher.named("imds_warning"), EVENT_TIMEOUT_S, "a warning")
    time.sleep(1.0)
    assert watcher.named("notice") == []
    assert bench.target_state() == "healthy"
    assert "instance-event-0123456789abcdef0" in watcher.named("imds_warning")[0]["warning"]


def test_repeated_identical_failures_make_it_exit_non_zero(bench):
    bench = bench()
    watcher = bench.make_watcher(poll_interval_s=0.2, max_identical_failures=5)
    watcher.start()
    bench.imds.add_fault(SPOT, status=500)
    wait_until(lambda: watcher.process.poll() is not None, EVENT_TIMEOUT_S, "the watcher to exit")
    assert watcher.process.returncode == 3
    (giving_up,) = watcher.named("giving_up")
    assert giving_up["identical_failures"] == "5"
    assert "HTTP 500" in giving_up["failure"]
    assert bench.target_state() == "healthy"


def test_changing_failures_do_not_count_as_identical(bench):
    bench = bench()
    watcher = bench.make_watcher(poll_interval_s=0.2, max_identical_failures=3)
    watcher.start()
    for _round in range(4):
        bench.imds.add_fault(SPOT, status=500, count=1)
        bench.imds.add_fault(SPOT, status=503, count=1)
    wait_until(lambda: len(watcher.named("imds_failure")) >= 8, EVENT_TIMEOUT_S, "eight failures")
    assert watcher.process.poll() is None


# ---------------------------------------------------------------------------------------------- notice handling
def test_rebalance_with_handling_off_changes_nothing(bench):
    bench = bench()
    watcher = bench.make_watcher(act_on_rebalance=False, poll_interval_s=0.5)
    watcher.start()
    bench.imds.set_rebalance_recommendation()
    ignored = watcher.wait_for("notice_ignored", EVENT_TIMEOUT_S)
    assert ignored["kind"] == "rebalance"
    time.sleep(2.0)  # four more polls
    assert len(watcher.named("notice_ignored")) == 1
    assert watcher.named("notice") == [] and watcher.named("deregistered") == []
    assert bench.target_state() == "healthy"
    assert watcher.state()["phase"] == "idle"
    assert stops_recorded(bench.marker) == 0


def test_rebalance_with_handling_on_drains(bench):
    bench = bench()
    watcher = bench.make_watcher(act_on_rebalance=True, rebalance_drain_budget_s=60.0)
    watcher.start()
    bench.imds.set_rebalance_recommendation()
    watcher.wait_for("drain_finished", EVENT_TIMEOUT_S)
    assert bench.target_state() in ("draining", "unused")
    state = watcher.state()
    assert [notice["kind"] for notice in state["notices"]] == ["rebalance"]
    assert state["deregister_calls"] == 1
    assert stops_recorded(bench.marker) == 1


def test_asg_termination_drains_then_completes_the_lifecycle_action(bench, aws_clean):
    bench = bench(with_asg=True)
    autoscaling = spot_bench.aws_client(bench.aws_url, "autoscaling")
    instance_id = bench.instance.instance_id
    watcher = bench.make_watcher()
    watcher.start()
    # Scale-in: the group's termination hook holds the instance in Terminating:Wait, and IMDS says Terminated.
    autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=True)
    (waiting,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    assert waiting["LifecycleState"] == "Terminating:Wait"
    bench.imds.set_lifecycle_state("Terminated")
    completed = watcher.wait_for("lifecycle_completed", EVENT_TIMEOUT_S)
    assert completed["asg"] == bench.instance.asg_name
    events = [event["event"] for event in watcher.events()]
    assert events.index("vllm_stopped") < events.index("lifecycle_completed")
    assert autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"] == []
    ec2 = spot_bench.aws_client(bench.aws_url, "ec2")
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")


def test_spot_notice_with_an_asg_but_no_pending_action_says_so(bench):
    bench = bench(with_asg=True)
    watcher = bench.make_watcher()
    watcher.start()
    bench.imds.set_spot_action("terminate", in_seconds=120)
    watcher.wait_for("drain_finished", EVENT_TIMEOUT_S)
    # The group has not started terminating yet: nothing to complete until IMDS says Terminated.
    assert watcher.named("lifecycle_completed") == [] and watcher.named("lifecycle_none_pending") == []
    bench.imds.set_lifecycle_state("Terminated")
    watcher.wait_for("lifecycle_none_pending", EVENT_TIMEOUT_S)
    assert watcher.state()["deregister_calls"] == 1


def test_the_instance_role_policy_is_valid_iam_json(aws_clean, tmp_path):
    arns = [
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vllm-a/0123456789abcdef",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vllm-b/fedcba9876543210",
    ]
    policy_file = tmp_path / "policy.json"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Render the spot watcher's instance role policy",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Render it",
                            "ansible.builtin.include_role": {"name": "llmserve.aws.spot_interruption",
                                                             "tasks_from": "iam_policy"},
                            "vars": {
                                "spot_interruption_target_group_arns": arns,
                                "spot_interruption_asg_name": "gpu-fleet",
                                "spot_interruption_iam_policy_file": str(policy_file),
                            },
                        }
                    ],
                }
            ]
        )
    )
    completed = run_playbook("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                             str(playbook), timeout_s=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads(policy_file.read_text())
    statements = {statement["Sid"]: statement for statement in document["Statement"]}
    assert document["Version"] == "2012-10-17"
    assert statements["RegisterWithOwnTargetGroups"]["Resource"] == arns
    assert set(statements["RegisterWithOwnTargetGroups"]["Action"]) == {
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
    }
    assert statements["ReadTargetHealth"] == {
        "Sid": "ReadTargetHealth",
        "Effect": "Allow",
        "Action": ["elasticloadbalancing:DescribeTargetHealth"],
        "Resource": "*",
    }
    assert statements["CompleteTerminationLifecycleHook"]["Resource"] == (
        "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/gpu-fleet"
    )
    every_action = {action for statement in document["Statement"] for action in statement["Action"]}
    assert every_action == {
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DescribeTargetHealth",
        "autoscaling:CompleteLifecycleAction",
    }
    # IAM itself (moto validates policy grammar, actions and resource ARNs) accepts it.
    iam = aws_clean.client("iam")
    created = iam.create_policy(PolicyName="llmserve-spot-watcher", PolicyDocument=policy_file.read_text())
    assert created["Policy"]["Arn"].endswith(":policy/llmserve-spot-watcher")


# ---------------------------------------------------------------------------------------------- with vLLM
@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    server = spot_bench.VllmServer(tmp_path_factory.mktemp("vllm"), free_port(), shutdown_timeout_s=60)
    server.start()
    yield server
    server.stop()


@pytest.mark.vllm
def test_planned_stop_deregisters_and_waits_for_in_flight_requests(bench, vllm):
    bench = bench(vllm_port=vllm.port)
    watcher = bench.make_watcher()
    spot_bench.aws_client(bench.aws_url, "elbv2").deregister_targets(
        TargetGroupArn=bench.instance.target_group_arn,
        Targets=[{"Id": bench.instance.instance_id, "Port": bench.instance.port}],
    )
    registered = watcher.run_command("register")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert "event=vllm_healthy" in registered.stdout and "event=registered" in registered.stdout
    assert bench.target_state() == "healthy"

    load = spot_bench.StreamingLoad(vllm.url, 4, 1200).start()
    load.wait_all_streaming(timeout_s=60)
    started = time.time()
    deregistered = watcher.run_command("deregister", timeout_s=120)
    returned = time.time()
    assert deregistered.returncode == 0, deregistered.stdout + deregistered.stderr
    assert load.join(timeout_s=60)
    assert load.completed == 4, [result for result in load.results if not result.ok]
    assert returned >= load.last_ended_at - 0.5, "returned while requests were still streaming"
    assert returned - started > 1.0
    print(f"deregister returned {returned - load.last_ended_at:.2f} s after the last request ended")
    assert bench.target_state() in ("draining", "unused")
    assert "event=planned_stop_drained" in deregistered.stdout
    assert vllm.running

    again = watcher.run_command("register")
    assert again.returncode == 0 and bench.target_state() == "healthy"
    assert_no_imdsv1(bench.imds)


@pytest.mark.vllm
def test_restart_during_a_drain_resumes_without_repeating_a_step(bench, vllm):
    bench = bench(vllm_port=vllm.port)
    watcher = bench.make_watcher()
    watcher.start()
    # Streams long enough (1900 tokens, near the tiny model's 2048 context) to outlast the kill below on a busy machine.
    load = spot_bench.StreamingLoad(vllm.url, 16, 1900).start()
    load.wait_all_streaming(timeout_s=60)
    notice_at = time.time()
    bench.imds.set_spot_action("terminate", in_seconds=120)
    # A crash mid-drain, right after the deregistration step; systemd's Restart=on-failure starts it again.
    watcher.wait_for("deregister_done", EVENT_TIMEOUT_S)
    watcher.stop(signal.SIGKILL)
    before = watcher.state()
    assert before["phase"] == "draining" and before["deregister_calls"] == 1
    assert "deregister" in before["steps"] and not {"wait_requests", "stop_vllm"} & set(before["steps"])
    # Put the target back behind the load balancer: a watcher that deregistered again would take it out.
    spot_bench.register(bench.aws_url, bench.instance)
    assert bench.target_state() == "healthy"

    watcher.start(wait_for="resumed")
    (resumed,) = watcher.named("resumed")
    assert resumed["next_step"] in ("wait_alb", "wait_requests")
    watcher.wait_for("drain_finished", 60)
    assert load.join(timeout_s=60)
    assert load.completed == 16
    assert min(result.ended_at for result in load.results) > notice_at
    after = watcher.state()
    assert after["deregister_calls"] == 1
    assert after["steps"]["deregister"] == before["steps"]["deregister"]
    assert len(watcher.named("deregistered")) == 1
    assert bench.target_state() == "healthy", "the resumed watcher deregistered a second time"
    assert stops_recorded(bench.marker) == 1
    # The notice is still there: the next polls add nothing, and registration is refused on this boot.
    time.sleep(1.5)
    assert len(watcher.named("notice")) == 1
    refused = watcher.run_command("register")
    assert refused.returncode == 0 and "event=register_refused" in refused.stdout
    assert_no_imdsv1(bench.imds)
