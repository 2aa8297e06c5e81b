"""The bench's vLLM venv and tiny model serve the OpenAI API on this host: a real engine on CPU, no mocks.

Slow (marker `vllm`): the first run builds the cached venv (~80 s with a warm pip cache) and the model
(seconds); every run starts a server, healthy in ~20-60 s on 2 cores.
"""

import contextlib
import http
import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.support.net import free_port
from tests.support.wait import poll, still_running

pytestmark = pytest.mark.vllm

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench"
SERVED_MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 2048  # make_tiny_model.py's max_position_embeddings
BUILD_TIMEOUT_S = 1800
HEALTH_TIMEOUT_S = 240
HEALTH_PROGRESS_EVERY_S = 10
STOP_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 60
COMPLETION_TOKENS = 12

# Only loopback is spoken to: never route it through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _last_stdout_line(command):
    completed = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, timeout=BUILD_TIMEOUT_S)
    return completed.stdout.strip().splitlines()[-1]


def _get(url):
    with _LOOPBACK.open(url, timeout=REQUEST_TIMEOUT_S) as response:
        return response.status, response.read()


def _post_json(url, payload):
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    return _LOOPBACK.open(request, timeout=REQUEST_TIMEOUT_S)


def _log_tail(log_path, lines=40):
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_for_health(base_url, process, log_path):
    def healthy():
        still_running(process, "vLLM", lambda: _log_tail(log_path))
        try:
            return _get(f"{base_url}/health")[0] == http.HTTPStatus.OK
        except OSError:
            return False  # not listening yet

    _unused, elapsed = poll(healthy, timeout_s=HEALTH_TIMEOUT_S, what=f"{base_url}/health", interval_s=0.5,
                            detail=lambda: _log_tail(log_path), progress_every_s=HEALTH_PROGRESS_EVERY_S)
    print(f"vLLM healthy after {elapsed:.1f} s", file=sys.stderr)
    return elapsed


def _stop_process_group(process):
    """SIGTERM the server's whole group (API server, engine core, worker); SIGKILL what outlives the wait."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    # Children that outlived the main process; ProcessLookupError means the group is already empty.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def tiny_model_dir():
    return pathlib.Path(_last_stdout_line([str(BENCH_DIR / "models.sh"), "tiny"]))


@pytest.fixture(scope="module")
def vllm_venv():
    return pathlib.Path(_last_stdout_line([str(BENCH_DIR / "vllm_venv.sh")]))


@pytest.fixture(scope="module")
def vllm_server(vllm_venv, tiny_model_dir, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("vllm")
    log_path = work_dir / "server.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CACHE_ROOT=str(work_dir / "vllm-cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        # Nothing may leave the host: vLLM otherwise reports usage statistics over the network.
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    command = [
        str(vllm_venv / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",  # `vllm serve` is broken in the vllm-cpu package
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "bfloat16",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches engine core and worker too
        )
    try:
        _wait_for_health(base_url, process, log_path)
        yield base_url
    finally:
        _stop_process_group(process)


def _chat_payload(**extra):
    return {
        "model": SERVED_MODEL_NAME,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": COMPLETION_TOKENS,
        "ignore_eos": True,  # a random model may emit EOS anywhere; this makes the length exact
        "temperature": 0,
        **extra,
    }


def test_health_answers_200(vllm_server):
    status, _unused = _get(f"{vllm_server}/health")
    assert status == http.HTTPStatus.OK


def test_models_lists_the_served_name(vllm_server, tiny_model_dir):
    status, body = _get(f"{vllm_server}/v1/models")
    assert status == http.HTTPStatus.OK
    models = json.loads(body)["data"]
    assert [model["id"] for model in models] == [SERVED_MODEL_NAME]
    assert models[0]["max_model_len"] == MAX_MODEL_LEN
    assert models[0]["root"] == str(tiny_model_dir)


def test_chat_completion_with_ignore_eos_has_exact_length(vllm_server):
    with _post_json(f"{vllm_server}/v1/chat/completions", _chat_payload()) as response:
        assert response.status == http.HTTPStatus.OK
        completion = json.loads(response.read())
    (choice,) = completion["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert completion["model"] == SERVED_MODEL_NAME


def test_streaming_chat_ends_with_done(vllm_server):
    payload = _chat_payload(stream=True, stream_options={"include_usage": True})
    with _post_json(f"{vllm_server}/v1/chat/completions", payload) as response:
        assert response.status == http.HTTPStatus.OK
        assert response.headers.get_content_type() == "text/event-stream"
        events = [line.decode().strip().removeprefix("data: ") for line in response if line.startswith(b"data: ")]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    finish_reasons = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"]]
    assert [reason for reason in finish_reasons if reason is not None] == ["length"]
    assert chunks[-1]["choices"] == []  # the usage chunk comes last, before [DONE]
    assert chunks[-1]["usage"]["completion_tokens"] == COMPLETION_TOKENS
