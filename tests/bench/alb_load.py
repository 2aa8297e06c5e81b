"""Steady load through the bench's ALB stand-in, counting what the load balancer's clients saw.

For scenarios that must show "0 failed requests through the load balancer" (a rolling update, a spot drill):

    client = AlbClient.for_listener(listeners_file, https_listener_arn, cafile)
    with AlbLoad(client, body=chat_request("Say OK.", model)) as load:
        ... roll the fleet ...
    print(load.summary())            # "through the ALB: 120 requests, 120 ok, 0 failed"
    assert load.failed() == []

Each request is a fresh HTTPS connection (as independent clients make), sent `workers` at a time, each worker
waiting `pause_s` between its requests so the targets' CPUs are not starved. A request fails when the answer is
not 200 or the connection breaks; each failure keeps its time, status and error for the report.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

if __package__:
    from .alb_client import AlbClient
else:  # run as a script: the module sits next to this file
    from alb_client import AlbClient


def chat_request(question: str, model: str, max_tokens: int = 1) -> bytes:
    """An OpenAI chat completion request body (greedy, short)."""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": question}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()


@dataclass
class Outcome:
    at: float  # time.time() when it was sent
    seconds: float
    status: int | None  # None: no HTTP answer
    error: str = ""


@dataclass
class AlbLoad:
    client: AlbClient
    body: bytes | None = None
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    workers: int = 1
    pause_s: float = 1.0
    outcomes: list[Outcome] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.pause_s < 0:
            raise ValueError("AlbLoad needs workers >= 1 and pause_s >= 0")
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _worker in range(self.workers)]

    def _work(self) -> None:
        while not self._done.is_set():
            sent, started = time.time(), time.monotonic()
            try:
                status, _headers, answer = self.client.request(self.method, self.path, self.body, self.headers)
                outcome = Outcome(sent, time.monotonic() - started, status,
                                  "" if status == 200 else answer[:200].decode(errors="replace"))
            except OSError as error:  # ssl.SSLError, connection refused/reset, timeouts
                outcome = Outcome(sent, time.monotonic() - started, None, f"{type(error).__name__}: {error}")
            with self._lock:
                self.outcomes.append(outcome)
            self._done.wait(self.pause_s)

    def __enter__(self) -> "AlbLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(self.client.timeout_s + 5)

    def failed(self) -> list[Outcome]:
        with self._lock:
            return [outcome for outcome in self.outcomes if outcome.status != 200]

    def summary(self) -> str:
        with self._lock:
            total = len(self.outcomes)
        failed = self.failed()
        line = f"through the ALB: {total} requests, {total - len(failed)} ok, {len(failed)} failed"
        return line + "".join(f"\n  failed at {o.at:.1f}: status {o.status} {o.error}" for o in failed[:10])
