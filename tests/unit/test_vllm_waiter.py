"""The shared wait loop (_waiter.py) on a fake monotonic clock: no test sleeps."""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _waiter as waiter


class FakeClock:
    """A monotonic clock that moves only when the loop sleeps or a check takes time."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def checks(*answers, clock=None, cost=0.0):
    """A check returning the given CheckResults in turn; each call advances the clock by cost."""
    remaining = list(answers)
    calls = []

    def check():
        calls.append(clock.now if clock else None)
        if clock:
            clock.now += cost
        return remaining.pop(0)
    check.calls = calls
    return check


def test_returns_at_once_when_the_first_check_is_done():
    clock = FakeClock()
    result = waiter.wait_for(checks(waiter.CheckResult(True, "up", 42), clock=clock), "thing", 10, 2,
                             clock=clock, sleeper=clock.sleep)
    assert (result.value, result.detail, result.attempts, result.elapsed) == (42, "up", 1, 0.0)
    assert clock.sleeps == []


def test_polls_every_sleep_seconds_until_done_and_reports_elapsed_and_progress():
    clock = FakeClock()
    progress = []
    check = checks(waiter.CheckResult(False, "down"), waiter.CheckResult(False, "loading"),
                   waiter.CheckResult(True, "up"), clock=clock)
    result = waiter.wait_for(check, "vLLM /health", 60, 5, progress=lambda *args: progress.append(args),
                             clock=clock, sleeper=clock.sleep)
    assert result.attempts == 3
    assert result.elapsed == 10.0
    assert clock.sleeps == [5, 5]
    assert progress == [(1, 0.0, "down"), (2, 5.0, "loading")]
    assert result.as_dict() == {"waited_for": "vLLM /health", "elapsed_s": 10.0, "attempts": 3, "detail": "up"}


def test_timeout_names_what_it_waited_for_how_long_and_the_last_check():
    clock = FakeClock()
    never = checks(*[waiter.CheckResult(False, "HTTP 503")] * 10, clock=clock)
    with pytest.raises(waiter.WaitTimeout) as raised:
        waiter.wait_for(never, "vLLM /health at http://127.0.0.1:8000", 12, 5, clock=clock, sleeper=clock.sleep)
    error = raised.value
    assert error.what == "vLLM /health at http://127.0.0.1:8000"
    assert error.elapsed == 12.0
    assert error.attempts == 4  # at 0, 5, 10 and, after a sleep cut to 2 s, at the deadline
    assert clock.sleeps == [5, 5, 2]
    assert "timed out after 12.0 s" in str(error) and "HTTP 503" in str(error) and "4 attempts" in str(error)


def test_a_slow_check_never_pushes_the_loop_past_the_deadline_by_more_than_one_check():
    clock = FakeClock()
    slow = checks(*[waiter.CheckResult(False, "slow")] * 10, clock=clock, cost=4.0)
    with pytest.raises(waiter.WaitTimeout) as raised:
        waiter.wait_for(slow, "slow thing", 10, 3, clock=clock, sleeper=clock.sleep)
    assert raised.value.elapsed <= 10 + 4.0
    assert all(seconds > 0 for seconds in clock.sleeps)


def test_an_exception_from_the_check_ends_the_wait_at_once():
    clock = FakeClock()

    def crashed():
        raise RuntimeError("service crashed")

    with pytest.raises(RuntimeError, match="service crashed"):
        waiter.wait_for(crashed, "thing", 100, 1, clock=clock, sleeper=clock.sleep)
    assert clock.sleeps == []


@pytest.mark.parametrize("timeout, sleep", [(0, 1), (-1, 1), (10, -1)])
def test_rejects_a_wait_that_could_not_end_or_sleeps_backwards(timeout, sleep):
    with pytest.raises(ValueError):
        waiter.wait_for(lambda: waiter.CheckResult(True), "thing", timeout, sleep)


def test_real_clock_and_sleep_by_default():
    answers = iter([waiter.CheckResult(False, "no"), waiter.CheckResult(True, "yes")])
    result = waiter.wait_for(lambda: next(answers), "thing", 5, 0.01)
    assert result.attempts == 2
    assert 0.005 <= result.elapsed < 1
