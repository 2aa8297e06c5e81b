# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one bounded wait loop every module of this collection uses.

Private to this collection. A wait polls a check until it reports done or a deadline on the monotonic clock
passes; it always knows what it waited for, how long, and the last thing the check said, so a timeout
message can name all three. The clock and the sleep are injectable so the loop is unit-tested without
sleeping.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


class WaitTimeout(Exception):
    """The deadline passed before the check reported done."""

    def __init__(self, what, timeout, elapsed, attempts, last_detail):
        message = "timed out after %.1f s (limit %s s, %d attempts) waiting for %s" % (elapsed, timeout, attempts, what)
        if last_detail:
            message += "; last check: %s" % last_detail
        super(WaitTimeout, self).__init__(message)
        self.what = what
        self.timeout = timeout
        self.elapsed = elapsed
        self.attempts = attempts
        self.last_detail = last_detail


class WaitResult:
    """What a finished wait returns: the check's final value and detail, elapsed seconds and attempts."""

    def __init__(self, what, value, detail, elapsed, attempts):
        self.what = what
        self.value = value
        self.detail = detail
        self.elapsed = elapsed
        self.attempts = attempts

    def as_dict(self):
        return {"waited_for": self.what, "elapsed_s": round(self.elapsed, 3), "attempts": self.attempts,
                "detail": self.detail}


class CheckResult:
    """One poll's answer: done or not, a short detail for progress and timeout messages, an optional value."""

    def __init__(self, done, detail="", value=None):
        self.done = done
        self.detail = detail
        self.value = value


def wait_for(check, what, timeout, sleep, progress=None, clock=time.monotonic, sleeper=time.sleep):
    """Poll check() until it returns a CheckResult with done=True; return a WaitResult.

    check: callable taking no arguments, returning a CheckResult. An exception it raises ends the wait at
      once and propagates: that is how a check says "this will never succeed" (a crashed service, say).
    what: words naming what is awaited, used in the timeout message ("vLLM /health on 127.0.0.1:8000").
    timeout: seconds (> 0) measured on the monotonic clock from the first poll.
    sleep: seconds between polls; the last sleep is cut short so the loop never overshoots the deadline
      by more than one check's own duration.
    progress: optional callable(attempt, elapsed, detail) called after every poll that is not done.
    Raises WaitTimeout when the deadline passes; the check always runs at least once.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive, got %r" % (timeout,))
    if sleep < 0:
        raise ValueError("sleep must not be negative, got %r" % (sleep,))
    started = clock()
    deadline = started + timeout
    attempts = 0
    detail = ""
    while True:
        attempts += 1
        result = check()
        detail = result.detail
        now = clock()
        if result.done:
            return WaitResult(what, result.value, detail, now - started, attempts)
        if progress is not None:
            progress(attempts, now - started, detail)
        remaining = deadline - now
        if remaining <= 0:
            raise WaitTimeout(what, timeout, now - started, attempts, detail)
        sleeper(min(sleep, remaining))
