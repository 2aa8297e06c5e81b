"""The bench's smoke test: the vLLM unit on the systemd host is active and answers a chat completion."""

import json

PORT = 18080


def test_unit_is_active_under_systemd(host):
    service = host.service("bench-vllm")
    assert service.is_running
    assert service.is_enabled
    assert host.run("systemctl is-system-running --wait").stdout.strip() in {"running", "degraded"}


def test_chat_completion_answers(host):
    request = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "ignore_eos": True,
    }
    result = host.run(
        "curl -sf -H 'Content-Type: application/json' -d %s %s",
        json.dumps(request),
        "http://127.0.0.1:%d/v1/chat/completions" % PORT,
    )
    assert result.rc == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["message"]["role"] == "assistant"
