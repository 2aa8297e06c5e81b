"""The tests' one polling wait: every wait is bounded, and when it gives up it says what it waited for, for how
long, and the last value it saw."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool] = bool, timeout_s: float = 10.0, what: str = "",
         interval_s: float = 0.05, detail: Callable[[], str] | None = None,
         progress_every_s: float | None = None) -> tuple[T, float]:
    """read() every interval_s until done(value); returns the value and the seconds it took.

    After timeout_s: AssertionError naming `what`, the elapsed time, the last value and detail() (a log tail).
    read() may raise to end the wait early (a process that died). progress_every_s prints a line to stderr that
    often, for waits of minutes."""
    what = what or f"done({getattr(read, '__name__', 'read')}())"
    started = time.monotonic()
    next_report = started + progress_every_s if progress_every_s else None
    while True:
        value = read()
        elapsed = time.monotonic() - started
        if done(value):
            return value, elapsed
        if elapsed > timeout_s:
            message = f"timed out after {elapsed:.1f} s (limit {timeout_s} s) waiting for {what} (last: {value!r})"
            raise AssertionError(message + (f"\n{detail()}" if detail else ""))
        if next_report is not None and time.monotonic() >= next_report:
            print(f"waiting for {what}: {elapsed:.0f} s", file=sys.stderr)
            next_report += progress_every_s
        time.sleep(interval_s)


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05,
               detail: Callable[[], str] | None = None) -> T:
    """predicate()'s first truthy value, polled every interval_s; AssertionError naming `what` after timeout_s."""
    return poll(predicate, bool, timeout_s, what, interval_s, detail)[0]


def still_running(process: subprocess.Popen, name: str, detail: Callable[[], str] | None = None) -> bool:
    """False while the process runs (so a wait goes on); AssertionError with its exit status once it has exited."""
    if process.poll() is None:
        return False
    raise AssertionError(f"{name} exited with {process.returncode}" + (f":\n{detail()}" if detail else ""))
