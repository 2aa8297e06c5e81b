# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spot drill's request generator, run on the instance (standard library only).

Opens N concurrent streaming chat completions against vLLM with ignore_eos (each runs exactly max_tokens) and,
once every stream has its first chunk, touches --ready-file and (bench) POSTs the spot notice to the IMDS
emulator's control API at --inject-url itself, so that the notice lands while all N are in flight whatever the
latency of the play. Writes a JSON report to --out: completed (ended with [DONE], HTTP 200, no in-band error
chunk), failed, notice_at, in_flight_at_notice (requests that had not ended when the notice was sent), and per
request its chunk count, finish reasons and end time (epoch seconds). The API key, if vLLM wants one, is read
from the 0600 file --api-key-file names: never from the command line or the environment, which Ansible puts on
the remote shell's command line (visible in ps and at -vvv).
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request


def read_api_key(path):
    if not path:
        return ""
    with open(path) as handle:
        return handle.read().strip()


def stream_one(index, args, first_chunk, result):
    parts = urllib.parse.urlsplit(args.url)
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = "Bearer " + args.api_key
    body = json.dumps(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": f"spot drill request {index}"}],
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    )
    result.update(index=index, status=0, chunks=0, done=False, error_chunks=0, finish_reasons=[], exception="")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=args.timeout)
    try:
        connection.request("POST", "/v1/chat/completions", body, headers)
        response = connection.getresponse()
        result["status"] = response.status
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                result["done"] = True
                continue
            result["chunks"] += 1
            first_chunk.set()
            chunk = json.loads(data)
            if "error" in chunk or chunk.get("object") == "error":
                result["error_chunks"] += 1
            for choice in chunk.get("choices", []):
                if choice.get("finish_reason"):
                    result["finish_reasons"].append(choice["finish_reason"])
    except (OSError, http.client.HTTPException, ValueError) as error:
        result["exception"] = f"{error.__class__.__name__}: {error}"
    finally:
        first_chunk.set()
        result["ended_at"] = time.time()
        result["ok"] = (
            result["status"] == 200 and result["done"] and not result["error_chunks"] and not result["exception"]
        )
        connection.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="vLLM base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--inject-url", default="", help="bench: the emulator's /_emulator/spot-action")
    parser.add_argument("--notice-seconds", type=int, default=120)
    parser.add_argument("--api-key-file", default="", help="a file holding vLLM's API key (an empty file: no key)")
    args = parser.parse_args(argv)
    args.api_key = read_api_key(args.api_key_file)

    results = [{} for _index in range(args.count)]
    first_chunks = [threading.Event() for _index in range(args.count)]
    threads = [
        threading.Thread(target=stream_one, args=(index, args, first_chunks[index], results[index]), daemon=True)
        for index in range(args.count)
    ]
    started = time.time()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.timeout
    for event in first_chunks:
        event.wait(max(0.0, deadline - time.monotonic()))
    notice_at = None
    if args.inject_url:
        notice_at = time.time()
        request = urllib.request.Request(
            args.inject_url,
            data=json.dumps({"action": "terminate", "in_seconds": args.notice_seconds}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(request, timeout=10) as answer:
            answer.read()
    with open(args.ready_file, "w", encoding="utf-8") as ready:
        ready.write(f"{time.time()}\n")
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    report = {
        "requests": args.count,
        "max_tokens": args.max_tokens,
        "started_at": started,
        "completed": sum(1 for result in results if result.get("ok")),
        "failed": sum(1 for result in results if not result.get("ok")),
        "error_chunks": sum(result.get("error_chunks", 0) for result in results),
        "notice_at": notice_at,
        "in_flight_at_notice": None
        if notice_at is None
        else sum(1 for result in results if result.get("ended_at", 0.0) > notice_at),
        "last_ended_at": max((result.get("ended_at", 0.0) for result in results), default=0.0),
        "results": results,
    }
    temporary = args.out + ".tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(report, out)
    os.replace(temporary, args.out)
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
