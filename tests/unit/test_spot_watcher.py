"""Pure logic of roles/spot_interruption/files/llmserve_spot_watcher.py: notice parsing, decisions, drain
arithmetic, metrics parsing, the drain's state machine, the token refresh rule and the configuration checks.
The daemon's I/O (IMDS, AWS, vLLM, systemd) is exercised for real in tests/integration/test_spot_watcher_on_host.py."""

import contextlib
import datetime
import errno
import importlib.util
import json
import time
from pathlib import Path

import pytest

ROLE_FILES = Path(__file__).resolve().parents[2] / "roles" / "spot_interruption" / "files"
WATCHER_PATH = ROLE_FILES / "llmserve_spot_watcher.py"
_spec = importlib.util.spec_from_file_location("llmserve_spot_watcher", WATCHER_PATH)
watcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(watcher)

NOW = datetime.datetime(2026, 11, 28, 17, 9, 44, tzinfo=datetime.timezone.utc).timestamp()
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vllm/0123456789abcdef"


def config(**changes):
    return watcher.Config.from_dict({"target_group_arns": [TG], **changes})


# ---------------------------------------------------------------------------------------------- time formats
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T17:11:44Z", "2026-11-28T17:11:44+00:00"),
        ("2026-11-28T17:11:44.250Z", "2026-11-28T17:11:44.250000+00:00"),
        ("2026-11-28T19:11:44+02:00", "2026-11-28T17:11:44+00:00"),
        ("2026-11-28t17:11:44z", "2026-11-28T17:11:44+00:00"),
    ],
)
def test_rfc3339_times_are_read_in_utc(text, expected):
    epoch = watcher.parse_rfc3339(text)
    assert datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat() == expected


@pytest.mark.parametrize(
    "text", ["2026-11-28", "2026-11-28T17:11:44", "28 Nov 2026 17:11:44 GMT", "2026-13-28T17:11:44Z", "", None, 17]
)
def test_rfc3339_rejects_times_without_zone_or_out_of_range(text):
    with pytest.raises(watcher.NoticeError):
        watcher.parse_rfc3339(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21 Jan 2019 09:00:43 GMT", "2019-01-21T09:00:43+00:00"),
        ("2 Jan 2006 15:04:05 GMT", "2006-01-02T15:04:05+00:00"),
        ("29 Feb 2028 00:00:00 GMT", "2028-02-29T00:00:00+00:00"),
    ],
)
def test_scheduled_event_times_use_gos_layout(text, expected):
    epoch = watcher.parse_scheduled_time(text)
    assert datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat() == expected


@pytest.mark.parametrize(
    "text",
    ["2019-01-21T09:00:43Z", "21 jan 2019 09:00:43 GMT", "21 Foo 2019 09:00:43 GMT", "31 Feb 2019 09:00:43 GMT",
     "21 Jan 2019 09:00:43 UTC", "21 Jan 2019 9:00:43 GMT", None],
)
def test_scheduled_event_times_reject_other_layouts(text):
    with pytest.raises(watcher.NoticeError):
        watcher.parse_scheduled_time(text)


# ---------------------------------------------------------------------------------------------- notices
def test_spot_action_is_a_notice_with_its_time_as_deadline():
    body = json.dumps({"action": "terminate", "time": "2026-11-28T17:11:44Z"})
    notice, warning = watcher.read_spot_action(200, body, NOW, config())
    assert warning is None
    assert notice.kind == "spot"
    assert notice.deadline - NOW == 120
    assert notice.key == "spot:terminate"


@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_spot_stop_and_hibernate_also_take_the_instance_away(action):
    body = json.dumps({"action": action, "time": "2026-11-28T17:11:44Z"})
    notice, _warning = watcher.read_spot_action(200, body, NOW, config())
    assert notice.kind == "spot" and action in notice.key


def test_spot_action_404_means_no_notice():
    assert watcher.read_spot_action(404, "<html>404 - Not Found</html>", NOW, config()) == (None, None)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, "", "HTTP 500"),
        (401, "", "HTTP 401"),
        (200, "{not json", "bad JSON"),
        (200, "[]", "no action"),
        (200, json.dumps({"time": "2026-11-28T17:11:44Z"}), "no action"),
    ],
)
def test_spot_action_failures_are_errors_not_notices(status, body, message):
    with pytest.raises(watcher.NoticeError, match=message):
        watcher.read_spot_action(status, body, NOW, config())


def test_spot_action_with_an_unreadable_time_still_acts_on_the_fallback():
    body = json.dumps({"action": "terminate", "time": "soon"})
    notice, warning = watcher.read_spot_action(200, body, NOW, config(fallback_notice_s=120.0))
    assert notice.deadline == NOW + 120
    assert "not an RFC 3339 time" in warning


def test_rebalance_gets_a_budget_from_when_it_was_seen():
    body = json.dumps({"noticeTime": "2026-11-28T17:00:00Z"})
    notice, warning = watcher.read_rebalance(200, body, NOW, config(rebalance_drain_budget_s=300.0))
    assert (notice.kind, notice.deadline, warning) == ("rebalance", NOW + 300, None)
    assert notice.key == "rebalance"


def test_rebalance_with_a_bad_time_is_kept_with_a_warning():
    notice, warning = watcher.read_rebalance(200, json.dumps({"noticeTime": "yesterday"}), NOW, config())
    assert notice.kind == "rebalance"
    assert "yesterday" in warning


def test_rebalance_without_notice_time_is_an_error():
    with pytest.raises(watcher.NoticeError, match="noticeTime"):
        watcher.read_rebalance(200, json.dumps({"time": "x"}), NOW, config())


def _event(code="system-reboot", not_before_s=600, state="active", event_id="instance-event-0d59937288b749b32"):
    moment = datetime.datetime.fromtimestamp(NOW + not_before_s, datetime.timezone.utc)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    text = f"{moment.day} {months[moment.month - 1]} {moment.year} {moment:%H:%M:%S} GMT"
    return {"Code": code, "NotBefore": text, "NotAfter": text, "State": state, "EventId": event_id,
            "Description": "scheduled"}


def test_scheduled_event_within_the_lead_time_acts():
    body = json.dumps([_event(not_before_s=600)])
    notices, warnings = watcher.read_scheduled_events(200, body, NOW, config(scheduled_event_lead_s=900.0))
    assert warnings == []
    (notice,) = notices
    assert (notice.kind, notice.deadline) == ("scheduled", NOW + 600)
    assert notice.key == "scheduled:instance-event-0d59937288b749b32"


@pytest.mark.parametrize(
    "event",
    [
        _event(not_before_s=3600),  # too far ahead
        _event(state="completed"),
        _event(state="canceled"),
        _event(code="system-maintenance-network"),  # not a listed code
    ],
)
def test_scheduled_events_outside_the_rules_do_not_act(event):
    notices, warnings = watcher.read_scheduled_events(200, json.dumps([event]), NOW, config())
    assert (notices, warnings) == ([], [])


def test_scheduled_events_empty_list_and_404_mean_none():
    assert watcher.read_scheduled_events(200, "[]", NOW, config()) == ([], [])
    assert watcher.read_scheduled_events(404, "", NOW, config()) == ([], [])


def test_scheduled_event_with_a_bad_time_is_skipped_with_a_warning_and_others_still_act():
    bad = dict(_event(event_id="instance-event-bad"), NotBefore="2026-11-28T17:11:44Z")
    good = _event(event_id="instance-event-good")
    notices, warnings = watcher.read_scheduled_events(200, json.dumps([bad, good]), NOW, config())
    assert [notice.key for notice in notices] == ["scheduled:instance-event-good"]
    assert len(warnings) == 1 and "instance-event-bad" in warnings[0]


@pytest.mark.parametrize("body", ['{"events": []}', "{not json"])
def test_scheduled_events_that_are_not_a_list_are_errors(body):
    with pytest.raises(watcher.NoticeError):
        watcher.read_scheduled_events(200, body, NOW, config())


@pytest.mark.parametrize(("body", "acts"), [("Terminated", True), ("InService", False), ("Warmed:Running", False)])
def test_lifecycle_state_terminated_is_an_asg_notice(body, acts):
    notice, _warning = watcher.read_lifecycle_state(200, body + "\n", NOW, config(asg_drain_budget_s=90.0))
    assert (notice is not None) == acts
    if acts:
        assert (notice.kind, notice.deadline) == ("asg", NOW + 90)


@pytest.mark.parametrize("body", ["", "<html>", "{\"state\": 1}"])
def test_lifecycle_state_garbage_is_an_error(body):
    with pytest.raises(watcher.NoticeError):
        watcher.read_lifecycle_state(200, body, NOW, config())


@pytest.mark.parametrize(
    ("kind", "setting"),
    [("spot", "act_on_spot_interruption"), ("rebalance", "act_on_rebalance"),
     ("scheduled", "act_on_scheduled_events"), ("asg", "act_on_asg_termination")],
)
def test_each_notice_kind_follows_its_toggle(kind, setting):
    notice = watcher.Notice(kind, f"{kind}:x", NOW, "")
    assert watcher.notice_acts(notice, config(**{setting: True}))
    assert not watcher.notice_acts(notice, config(**{setting: False}))


def test_rebalance_does_not_act_by_default():
    assert not watcher.notice_acts(watcher.Notice("rebalance", "rebalance:x", NOW, ""), config())


# ---------------------------------------------------------------------------------------------- arithmetic
def test_deadline_is_the_earliest_notice():
    notices = [{"deadline": NOW + 120}, {"deadline": NOW + 30}, {"deadline": NOW + 600}]
    assert watcher.effective_deadline(notices) == NOW + 30


def test_vllm_is_stopped_a_margin_before_the_deadline():
    assert watcher.stop_by(NOW + 120, config(stop_margin_s=20.0)) == NOW + 100


def test_alb_wait_is_the_deregistration_delay_unless_the_deadline_is_nearer():
    relaxed = config(deregistration_delay_s=5.0, stop_margin_s=20.0)
    assert watcher.alb_wait_until(NOW, NOW + 120, relaxed) == NOW + 5
    tight = config(deregistration_delay_s=90.0, stop_margin_s=20.0)
    assert watcher.alb_wait_until(NOW, NOW + 60, tight) == NOW + 40


def test_stop_wait_covers_the_stop_timeout_and_at_least_the_deadline():
    assert watcher.stop_wait_until(NOW, NOW + 10, config(stop_timeout_s=90.0)) == NOW + 90
    assert watcher.stop_wait_until(NOW, NOW + 200, config(stop_timeout_s=90.0)) == NOW + 200


# ---------------------------------------------------------------------------------------------- metrics
METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 12.0
vllm:num_requests_running{engine="1",model_name="tiny"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 7.0
http_requests_total{handler="/health"} 12.0
"""


def test_metrics_sum_engines_and_ignore_metrics_sharing_the_prefix():
    assert watcher.parse_vllm_in_flight(METRICS) == (15, 1)


def test_metrics_idle_server():
    text = 'vllm:num_requests_running{engine="0"} 0.0\nvllm:num_requests_waiting{engine="0"} 0.0\n'
    assert watcher.parse_vllm_in_flight(text) == (0, 0)


@pytest.mark.parametrize(
    "text",
    ["", 'vllm:num_requests_running{engine="0"} 1.0\n', "vllm:num_requests_running 1\nvllm:num_requests_waiting x\n"],
)
def test_metrics_without_both_gauges_are_an_error(text):
    with pytest.raises(watcher.NoticeError):
        watcher.parse_vllm_in_flight(text)


# ---------------------------------------------------------------------------------------------- state machine
def _notice(kind="spot", key="spot:terminate:t", deadline=NOW + 120):
    return watcher.Notice(kind, key, deadline, "")


def test_first_acting_notice_starts_the_drain_and_later_ones_only_add_deadlines():
    state = watcher.new_state("boot-1")
    assert watcher.next_step(state, config()) is None
    assert watcher.record_notice(state, _notice(), NOW)
    assert state["phase"] == watcher.PHASE_DRAINING
    assert watcher.next_step(state, config()) == "deregister"
    assert not watcher.record_notice(state, _notice(), NOW + 1)  # the same notice, polled again
    assert watcher.record_notice(state, _notice("scheduled", "scheduled:e", NOW + 60), NOW + 2)
    assert state["drain_started_at"] == NOW
    assert watcher.effective_deadline(state["notices"]) == NOW + 60


def test_steps_run_in_order_and_each_once():
    state = watcher.new_state("boot-1")
    watcher.record_notice(state, _notice(), NOW)
    seen = []
    while (step := watcher.next_step(state, config())) is not None:
        seen.append(step)
        state["steps"][step] = NOW
    assert seen == ["deregister", "wait_alb", "wait_requests", "stop_vllm"]


def test_lifecycle_completion_needs_a_configured_hook_and_an_asg_termination():
    with_hook = config(asg_name="fleet", lifecycle_hook_name="drain")
    state = watcher.new_state("boot-1")
    watcher.record_notice(state, _notice(), NOW)
    state["steps"].update(dict.fromkeys(watcher.STEPS[:4], NOW))
    assert watcher.next_step(state, with_hook) is None  # spot only: no lifecycle action is pending
    watcher.record_notice(state, _notice("asg", "asg:Terminated"), NOW + 5)
    assert watcher.next_step(state, with_hook) == "complete_lifecycle"
    assert watcher.next_step(state, config()) is None  # no hook configured


def test_a_restart_on_the_same_boot_resumes_and_a_new_boot_starts_fresh():
    state = watcher.new_state("boot-1")
    watcher.record_notice(state, _notice(), NOW)
    state["steps"]["deregister"] = NOW
    saved = json.loads(json.dumps(state))
    assert watcher.state_for_boot(saved, "boot-1") is saved
    assert watcher.next_step(saved, config()) == "wait_alb"
    fresh = watcher.state_for_boot(saved, "boot-2")
    assert fresh["phase"] == watcher.PHASE_IDLE
    assert fresh["previous_boot"]["steps"] == {"deregister": NOW}
    assert watcher.state_for_boot(None, "boot-2")["phase"] == watcher.PHASE_IDLE
    assert watcher.state_for_boot({"version": 0, "boot_id": "boot-1"}, "boot-1")["phase"] == watcher.PHASE_IDLE


def test_identical_failures_count_until_success_or_a_different_failure():
    tracker = watcher.FailureTracker(limit=3)
    assert tracker.observe(["spot: HTTP 500"]) == 1
    assert tracker.observe(["spot: HTTP 500"]) == 2
    assert tracker.observe(["spot: timeout"]) == 1
    assert tracker.observe([]) == 0
    for _poll in range(3):
        tracker.observe(["b", "a"])
    assert tracker.exhausted
    assert tracker.observe(["a", "b"]) == 4  # order within a poll does not matter


# ---------------------------------------------------------------------------------------------- IMDS tokens
@pytest.mark.parametrize(("granted", "refresh_after"), [(21600, 21540), (300, 240), (60, 48), (2, 1.6), (1, 0.8)])
def test_tokens_are_refreshed_before_they_expire(granted, refresh_after):
    assert watcher.ImdsClient.refresh_delay(granted) == pytest.approx(refresh_after)
    assert watcher.ImdsClient.refresh_delay(granted) < granted


# ---------------------------------------------------------------------------------------------- configuration
def test_defaults_fit_the_two_minute_notice():
    defaults = watcher.Config()
    assert defaults.deregistration_delay_s + defaults.stop_margin_s < 120
    assert defaults.imds_endpoint == "http://169.254.169.254"
    assert not defaults.act_on_rebalance


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_group_arns": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1"]}, "not a target group ARN"),
        ({"asg_name": "fleet"}, "go together"),
        ({"imds_token_ttl_s": 21601}, "imds_token_ttl_s"),
        ({"imds_endpoint": "https://169.254.169.254"}, "http://"),
        ({"poll_interval_s": 0}, "must be > 0"),
        ({"poll_interval_s": "1"}, "expected a number"),
        ({"act_on_rebalance": "yes"}, "true or false"),
        ({"target_port": 8000.5}, "integer"),
        ({"scheduled_event_codes": "system-reboot"}, "list of strings"),
        ({"no_such_key": 1}, "unknown keys"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(changes, message):
    with pytest.raises(watcher.ConfigError, match=message):
        watcher.Config.from_dict({"target_group_arns": [TG], **changes})


def test_configuration_lists_become_tuples_and_numbers_floats():
    loaded = config(stop_command=["/bin/true"], poll_interval_s=2, scheduled_event_codes=["instance-stop"])
    assert loaded.stop_command == ("/bin/true",)
    assert loaded.poll_interval_s == 2.0 and isinstance(loaded.poll_interval_s, float)
    assert loaded.scheduled_event_codes == ("instance-stop",)


def test_log_lines_carry_a_utc_timestamp_and_quote_values_with_spaces():
    line = watcher.format_event("notice", {"kind": "spot", "detail": "spot terminate", "seconds_left": 1.5}, NOW)
    assert line == '2026-11-28T17:09:44.000Z event=notice kind=spot detail="spot terminate" seconds_left=1.500'


# ---------------------------------------------------------------------------------------------- hardening
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Any number of fraction digits: fromisoformat before Python 3.11 takes only 3 or 6.
        ("2026-11-28T17:11:44.5Z", "2026-11-28T17:11:44.500000+00:00"),
        ("2026-11-28T17:11:44.123456789Z", "2026-11-28T17:11:44.123456+00:00"),
    ],
)
def test_rfc3339_fractions_of_any_length(text, expected):
    epoch = watcher.parse_rfc3339(text)
    assert datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat() == expected


def test_rfc3339_matches_the_whole_text():
    with pytest.raises(watcher.NoticeError):
        watcher.parse_rfc3339("2026-11-28T17:11:44Z\nExecStart=x")


@pytest.mark.parametrize(
    ("served", "body"),
    [
        ("spot", lambda moment: json.dumps({"action": "terminate", "time": moment})),
        ("rebalance", lambda moment: json.dumps({"noticeTime": moment})),
    ],
)
def test_a_notice_re_served_with_a_fresh_time_keeps_its_key(served, body):
    reader = {"spot": watcher.read_spot_action, "rebalance": watcher.read_rebalance}[served]
    first, _warning = reader(200, body("2026-11-28T17:11:44Z"), NOW, config())
    again, _warning = reader(200, body("2026-11-28T17:11:49Z"), NOW + 5, config())
    assert first.key == again.key


@pytest.mark.parametrize(("seconds_ahead", "capped"), [(120, False), (3600, True), (10 ** 9, True)])
def test_a_spot_deadline_further_than_the_fallback_is_capped(seconds_ahead, capped):
    moment = datetime.datetime.fromtimestamp(NOW + seconds_ahead, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    notice, warning = watcher.read_spot_action(
        200, json.dumps({"action": "terminate", "time": moment}), NOW, config(fallback_notice_s=120.0)
    )
    assert notice.deadline == NOW + min(seconds_ahead, 120)
    assert (warning is not None and "capped" in warning) == capped


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-1", "1e400"])
def test_metrics_values_that_are_not_a_count_are_errors_not_crashes(value):
    text = f'vllm:num_requests_running{{engine="0"}} {value}\nvllm:num_requests_waiting{{engine="0"}} 0\n'
    with pytest.raises(watcher.NoticeError, match="bad value"):
        watcher.parse_vllm_in_flight(text)


def test_backoff_is_jittered_and_capped():
    assert watcher.backoff_delay(1, 0.5, 8.0, rng=lambda: 1.0) == 1.0
    assert watcher.backoff_delay(10, 0.5, 8.0, rng=lambda: 1.0) == 8.0
    assert watcher.backoff_delay(10 ** 6, 0.5, 8.0, rng=lambda: 0.25) == 2.0
    assert watcher.backoff_delay(3, 0.5, 8.0, rng=lambda: 0.0) == 0.0


class _FullDisk:
    """A state store on a full disk: every write fails with ENOSPC."""

    path = "/var/lib/llmserve-spot-watcher/state.json"

    @contextlib.contextmanager
    def locked(self):
        yield

    def load(self):
        return None

    def save(self, state):
        raise OSError(errno.ENOSPC, "No space left on device")


class _Answers:
    """The IMDS poller's queue, filled by the test."""

    def __init__(self, answers):
        self.answers = list(answers)

    def take(self):
        taken, self.answers = self.answers, []
        return taken


class _Parts:
    """AWS, vLLM and the stopper of a healthy instance, recording what the watcher asked."""

    def __init__(self):
        self.calls = []

    def deregister(self, arn, instance_id, port):
        self.calls.append("deregister")
        return True

    def target_state(self, arn, instance_id, port):
        return "draining"

    def in_flight(self):
        return None

    def request(self, key):
        self.calls.append("stop")

    def finished(self):
        return True, "stopped"


def _drain(spot, action, seen):
    """A spot notice for `action` two minutes out, read at `seen`, driven tick by tick until the drain ends."""
    moment = datetime.datetime.fromtimestamp(seen + 120, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    spot.poller = _Answers([(watcher.SPOT_ACTION_PATH, seen, 200, json.dumps({"action": action, "time": moment}), None)])
    deadline = time.monotonic() + 10
    while spot.state["phase"] != watcher.PHASE_DRAINED and time.monotonic() < deadline:
        spot.tick()
        spot._wake.wait(0.05)
        spot._wake.clear()
    assert spot.state["phase"] == watcher.PHASE_DRAINED


def test_a_full_disk_does_not_stop_a_drain(capsys):
    parts = _Parts()
    spot = watcher.Watcher(
        config(), _FullDisk(), imds=None, aws=parts, vllm=parts, stopper=parts, instance_id="i-0123456789abcdef0"
    )
    spot.start()
    _drain(spot, "terminate", time.time())
    assert parts.calls == ["deregister", "stop"]
    logged = capsys.readouterr().out
    assert logged.count("event=state_not_saved") == 1, logged
    assert "event=vllm_stop_requested" in logged


class _StartRecorder(_Parts):
    def request_start(self, reason):
        self.calls.append("start")


def _drain_then_read(spot, action, after_s):
    """A spot notice for `action` drained to the end; then a read `after_s` seconds after the notice that finds
    no notice any more (IMDS stops serving it once the instance is back)."""
    seen = time.time()
    _drain(spot, action, seen)
    spot.poller = _Answers([(watcher.SPOT_ACTION_PATH, seen + after_s, 404, "", None)])
    spot.tick()


@pytest.mark.parametrize(
    ("action", "after_s", "started"),
    [
        ("hibernate", 200, True),  # resumed from RAM on this boot: vLLM again, the host back in service
        ("stop", 200, True),
        ("hibernate", 60, False),  # before the deadline a missing notice proves nothing: stay drained
        ("terminate", 200, False),  # a terminated instance does not come back
    ],
)
def test_a_resumed_instance_asks_for_vllm_again_only_after_a_resumable_interruption(capsys, action, after_s, started):
    parts = _StartRecorder()
    spot = watcher.Watcher(
        config(), _FullDisk(), imds=None, aws=parts, vllm=parts, stopper=parts, instance_id="i-0123456789abcdef0"
    )
    spot.start()
    _drain_then_read(spot, action, after_s)
    logged = capsys.readouterr().out
    assert parts.calls == ["deregister", "stop"] + (["start"] if started else [])
    assert ("event=vllm_start_requested" in logged) is started
    assert spot.state["phase"] == (watcher.PHASE_IDLE if started else watcher.PHASE_DRAINED)


def test_the_start_request_is_a_file_for_the_path_unit(tmp_path):
    stopper = watcher.VllmStopper(config(state_dir=str(tmp_path)))
    stopper.request_start("resumed after spot:hibernate")
    request = json.loads((tmp_path / "start-vllm.request").read_text())
    assert request["unit"] == "vllm.service" and request["reason"] == "resumed after spot:hibernate"
    assert not list(tmp_path.glob("*.tmp"))
