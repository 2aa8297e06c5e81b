# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What vllm_launch asks a running vLLM over HTTP: /health, /v1/models, /version and a smoke completion.

Private to this collection. The health and models probes are checks for _waiter.wait_for; the others answer once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.llmserve.aws.plugins.module_utils import _systemd as systemd
from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm
from ansible_collections.llmserve.aws.plugins.module_utils import _waiter as waiter

HTTP_TIMEOUT_S = 10
SMOKE_PROMPT = "The capital of France is"


class ServiceCrashed(Exception):
    """vLLM's main process died while the module waited for it."""

    def __init__(self, status):
        super(ServiceCrashed, self).__init__("vLLM exited while starting (%s)" % status.summary())
        self.status = status


class ServingCheckFailed(Exception):
    """The server answered, but wrongly: the served name missing, the API key refused, the smoke test failed."""


def http_request(url, headers=None, data=None, method="GET"):
    """(status code, body text) of one request; connection failures raise URLError/socket errors."""
    try:
        response = open_url(url, method=method, headers=headers or {}, data=data, timeout=HTTP_TIMEOUT_S,
                            follow_redirects="none", use_proxy=False)
        return response.getcode(), response.read().decode("utf-8", "replace")
    except HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace") if error.fp else ""


def auth_headers(params):
    headers = {"Content-Type": "application/json"}
    if params.get("api_key"):
        headers["Authorization"] = "Bearer %s" % params["api_key"]
    return headers


def health_check(runner, unit, baseline, url):
    def check():
        status = runner.status(unit)
        if systemd.crashed_since(baseline, status):
            raise ServiceCrashed(status)
        try:
            code, _body = http_request(url + "/health")
        except (URLError, socket.error, socket.timeout) as error:
            return waiter.CheckResult(False, "%s; /health: %s" % (status.summary(), getattr(error, "reason", error)))
        return waiter.CheckResult(code == 200, "%s; /health: HTTP %d" % (status.summary(), code), status)
    return check


def models_check(params, url):
    name = vllm.served_name(params)

    def check():
        try:
            code, body = http_request(url + "/v1/models", auth_headers(params))
        except (URLError, socket.error, socket.timeout) as error:
            return waiter.CheckResult(False, "/v1/models: %s" % getattr(error, "reason", error))
        if code == 401:
            raise ServingCheckFailed("/v1/models answered 401: the server does not accept the configured api_key")
        if code != 200:
            return waiter.CheckResult(False, "/v1/models: HTTP %d" % code)
        try:
            listed = [entry.get("id") for entry in json.loads(body).get("data", [])]
        except (ValueError, AttributeError):
            return waiter.CheckResult(False, "/v1/models: unreadable answer %r" % body[:200])
        if name in listed:
            return waiter.CheckResult(True, "/v1/models lists %s" % name, listed)
        raise ServingCheckFailed("/v1/models lists %s, not the served name %s" % (listed, name))
    return check


def serving_version(url):
    try:
        code, body = http_request(url + "/version")
        if code == 200:
            return json.loads(body).get("version")
    except (URLError, socket.error, socket.timeout, ValueError, AttributeError):
        return None
    return None


def smoke_completion(params, url):
    request = json.dumps({"model": vllm.served_name(params), "prompt": SMOKE_PROMPT, "max_tokens": 4,
                          "temperature": 0})
    started = time.monotonic()
    code, body = http_request(url + "/v1/completions", auth_headers(params), data=request, method="POST")
    latency = time.monotonic() - started
    if code != 200:
        raise ServingCheckFailed("smoke completion failed with HTTP %d: %s" % (code, body[:500]))
    try:
        answer = json.loads(body)
        return {"text": answer["choices"][0]["text"], "completion_tokens": answer["usage"]["completion_tokens"],
                "latency_s": round(latency, 3)}
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServingCheckFailed("smoke completion answered something that is not a completion: %s"
                                 % body[:500]) from None
