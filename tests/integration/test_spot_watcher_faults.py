"""The spot watcher under faults, one case per class: whatever AWS (moto with tests/bench/moto_ext/faults.py), IMDS
(the emulator's faults) or vLLM's /metrics (a stand-in serving what vLLM must never crash the watcher with) do,
vLLM's stop is requested by the notice's deadline minus the stop margin, and the log names the step it abandoned.

As in test_spot_watcher_on_host.py, "vLLM stopped" is the watcher running its stop command (here it records
that it ran); the real stop is proven there (marker `vllm`) and by the role's molecule scenario.
"""

import datetime
import http.server
import json
import sys
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.bench import spot_bench  # noqa: E402
from tests.integration.test_spot_watcher_on_host import SPOT, Bench, stops_recorded  # noqa: E402

REBALANCE = "meta-data/events/recommendations/rebalance"
# A notice 8 s ahead with a 5 s margin: the stop is due 2-3 s after the notice (IMDS times have whole seconds).
NOTICE_IN_S = 8
STOP_MARGIN_S = 5.0
# The main loop checks every drain_check_interval_s (0.25 s here) and wakes at a step's bound; a loaded machine
# may add a little.
LATENESS_S = 1.0
FAST = {"poll_interval_s": 0.5, "drain_check_interval_s": 0.25, "stop_margin_s": STOP_MARGIN_S}


def epoch(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class MetricsStandIn:
    """vLLM's /metrics as a stand-in HTTP server on loopback, serving a fixed Prometheus text."""

    def __init__(self, text):
        body = text.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bench(aws_clean, tmp_path):
    made = []

    def make(vllm_port=None):
        from tests.integration.test_spot_watcher_on_host import free_port

        made.append(Bench(aws_clean, tmp_path, vllm_port or free_port()))
        return made[-1]

    yield make
    for one in made:
        one.close()


def assert_stopped_in_time(bench, watcher):
    """vLLM's stop was requested by deadline - stop margin, once, and the watcher is still running."""
    requested = watcher.wait_for("vllm_stop_requested", 30)
    (notice,) = [event for event in watcher.named("notice") if event["kind"] == "spot"][-1:]
    deadline = epoch(notice["deadline"])
    stop_by = deadline - STOP_MARGIN_S
    assert epoch(requested["time"]) <= stop_by + LATENESS_S, (requested, notice, watcher.log_tail())
    spot_bench.wait_until(lambda: stops_recorded(bench.marker) == 1, 10, "the stop command to run")
    assert watcher.process.poll() is None, watcher.log_tail()
    return requested


# (id, what the local AWS does, the step abandoned, text its reason names)
AWS_FAULTS = [
    ("denied", ("DeregisterTargets", "denied", {}), "deregister", "AccessDenied"),
    ("throttled", ("DescribeTargetHealth", "throttled", {}), "wait_alb", "Throttling"),
    ("slow", ("DeregisterTargets", "slow", {"delay_s": 30}), "deregister", "no answer from DeregisterTargets"),
    ("html_502", ("DeregisterTargets", "html_502", {}), "deregister", "ResponseParserError"),
]


@pytest.mark.parametrize(("fault", "step", "reason"), [case[1:] for case in AWS_FAULTS], ids=[c[0] for c in AWS_FAULTS])
def test_aws_faults_abandon_the_step_and_vllm_still_stops_in_time(bench, aws_clean, fault, step, reason):
    bench = bench()
    action, kind, options = fault
    watcher = bench.make_watcher(**FAST)
    watcher.start()
    aws_clean.inject_fault(action, kind, **options)
    bench.imds.set_spot_action("terminate", in_seconds=NOTICE_IN_S)
    assert_stopped_in_time(bench, watcher)
    abandoned = [event for event in watcher.named("step_abandoned") if event["step"] == step]
    assert abandoned and reason in abandoned[0]["reason"], watcher.log_tail()
    watcher.wait_for("drain_finished", 10)
    # Retries back off with jitter: a few calls in the ~4 s to the bound, not one per 0.25 s check.
    failures = [event for event in watcher.named("step_failure") if event["step"] == step]
    assert len(failures) <= 8, failures


def test_imds_hanging_during_a_drain_does_not_delay_the_stop(bench):
    bench = bench(vllm_port=None)
    metrics = MetricsStandIn('vllm:num_requests_running{engine="0"} 3.0\nvllm:num_requests_waiting{engine="0"} 0.0\n')
    try:
        bench.vllm_port = metrics.port
        watcher = bench.make_watcher(imds_timeout_s=2.0, **FAST)
        watcher.start()
        bench.imds.set_spot_action("terminate", in_seconds=NOTICE_IN_S)
        watcher.wait_for("notice", 10)
        for path in (SPOT, REBALANCE, "meta-data/events/maintenance/scheduled",
                     "meta-data/autoscaling/target-lifecycle-state"):
            bench.imds.add_fault(path, delay_s=30)  # every read now hangs past the watcher's timeout
        assert_stopped_in_time(bench, watcher)
        # Bounded, not failed: vLLM still had requests running (a /metrics read may be in flight at the bound).
        bounded = watcher.named("requests_wait_bounded") + watcher.named("step_abandoned")
        assert [event["step"] for event in bounded] == ["wait_requests"], bounded
    finally:
        metrics.close()


@pytest.mark.parametrize("value", ["NaN", "+Inf"])
def test_metrics_that_are_not_a_count_abandon_the_wait_and_vllm_stops(bench, value):
    bench = bench()
    metrics = MetricsStandIn(f'vllm:num_requests_running{{engine="0"}} {value}\nvllm:num_requests_waiting 0\n')
    try:
        bench.vllm_port = metrics.port
        watcher = bench.make_watcher(**FAST)
        watcher.start()
        bench.imds.set_spot_action("terminate", in_seconds=NOTICE_IN_S)
        assert_stopped_in_time(bench, watcher)
        (abandoned,) = watcher.named("step_abandoned")
        assert abandoned["step"] == "wait_requests" and value in abandoned["reason"]
    finally:
        metrics.close()


def test_a_notice_re_served_with_fresh_times_is_one_notice(bench):
    bench = bench()
    watcher = bench.make_watcher(act_on_rebalance=True, **FAST)
    watcher.start()
    bench.imds.set_fresh_notice_times(True)
    bench.imds.set_rebalance_recommendation()
    bench.imds.set_spot_action("terminate", in_seconds=NOTICE_IN_S)
    watcher.wait_for("drain_finished", 20)
    mark = len(bench.imds.requests())
    spot_bench.wait_until(lambda: len(bench.imds.requests()) - mark >= 8, 10, "two more poll cycles")
    assert sorted(event["kind"] for event in watcher.named("notice")) == ["rebalance", "spot"]
    assert len(watcher.state()["notices"]) == 2
    assert stops_recorded(bench.marker) == 1


def test_failures_on_a_path_it_does_not_act_on_never_make_it_give_up(bench):
    bench = bench()
    watcher = bench.make_watcher(act_on_rebalance=False, poll_interval_s=0.2, max_identical_failures=3)
    watcher.start()
    bench.imds.add_fault(REBALANCE, status=500)
    spot_bench.wait_until(lambda: len(watcher.named("imds_failure")) >= 6, 10, "six rebalance failures")
    assert watcher.process.poll() is None and watcher.named("giving_up") == []


def test_a_notice_far_in_the_future_is_capped(bench):
    bench = bench()
    watcher = bench.make_watcher(fallback_notice_s=float(NOTICE_IN_S), **FAST)
    watcher.start()
    bench.imds.set_spot_action("terminate", in_seconds=3600)  # clock skew, or a bad notice
    notice = watcher.wait_for("notice", 10)
    assert float(notice["seconds_left"]) <= NOTICE_IN_S
    assert "capped" in watcher.named("imds_warning")[0]["warning"]
    assert_stopped_in_time(bench, watcher)


def test_a_spot_hibernate_that_resumes_does_not_leave_the_host_drained(bench):
    bench = bench()
    starts = bench.marker.with_name("starts")
    watcher = bench.make_watcher(**FAST, start_command=["/bin/sh", "-c", f"echo start >> {starts}"])
    watcher.start()
    bench.imds.set_spot_action("hibernate", in_seconds=STOP_MARGIN_S + 2)
    watcher.wait_for("drain_finished", 20)
    # The instance hibernated and resumed on the same boot: IMDS no longer serves the notice.
    spot_bench.wait_until(lambda: time.time() > epoch(watcher.named("notice")[0]["deadline"]), 15, "the deadline")
    bench.imds.clear_notices()
    resumed = watcher.wait_for("resumed_after_interruption", 10)
    assert "spot:hibernate" in resumed["notices"]
    state = watcher.state()
    assert state["phase"] == "idle" and state["previous_drain"]["notices"][0]["key"] == "spot:hibernate"
    # The drain stopped vLLM; nothing else would start it again on this boot.
    watcher.wait_for("vllm_start_requested", 5)
    spot_bench.wait_until(starts.exists, 10, "the start command to run")
    assert starts.read_text().splitlines() == ["start"]
    # A later notice drains again.
    bench.imds.set_spot_action("terminate", in_seconds=NOTICE_IN_S)
    watcher.wait_for("drain_finished", 20, count=2)
    assert stops_recorded(bench.marker) == 2
    assert json.loads(json.dumps(watcher.state()))["phase"] == "drained"
