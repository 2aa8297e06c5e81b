"""A local stand-in for the Hugging Face Hub's HTTP API (the Hub is unreachable from the bench), serving the
parts hf_model_sync uses, with the Hub's documented shapes:

- ``GET /api/models/<org>/<name>/revision/<rev>?blobs=true`` -> ``{"sha", "siblings": [{"rfilename", "size",
  "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}`` (``lfs`` only for LFS files);
- ``GET /<org>/<name>/resolve/<rev>/<path>`` -> the file, or for LFS files a 302 to a CDN on another host name
  (``localhost`` instead of ``127.0.0.1``), which serves ``/cdn/<sha256>``; both honour ``Range``;
- gated repos answer 401 with ``X-Error-Code: GatedRepo`` without the right ``Authorization: Bearer`` token.

It records what each request carried, so tests can check the token never reached the CDN and that a resumed
download asked for a range.
"""

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024  # files larger than this are "LFS" files here (the Hub's rule is by extension and size)


@dataclass
class Repo:
    files: dict[str, bytes]
    token: str | None = None  # gated: this token is required

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for rel in sorted(self.files):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(self.files[rel]).digest())
        return digest.hexdigest()


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "Hub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_GET(self):
                hub.requests.append({"path": self.path, "host": self.headers.get("Host", ""),
                                     "authorization": self.headers.get("Authorization"),
                                     "range": self.headers.get("Range")})
                hub.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routes --------------------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        if match := re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$", path):
            return self._model_info(request, match.group(1), unquote(match.group(2)))
        if match := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
            return self._resolve(request, match.group(1), unquote(match.group(2)), unquote(match.group(3)))
        if match := re.match(r"^/cdn/([0-9a-f]{64})$", path):
            for repo in self.repos.values():
                for data in repo.files.values():
                    if hashlib.sha256(data).hexdigest() == match.group(1):
                        return self._send_bytes(request, data)
        return self._error(request, 404, "EntryNotFound")

    def _authorized(self, request, repo: Repo) -> bool:
        return repo.token is None or request.headers.get("Authorization") == f"Bearer {repo.token}"

    def _repo(self, request, repo_id: str, revision: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(request, 401 if request.headers.get("Authorization") is None else 404, "RepoNotFound")
            return None
        if not self._authorized(request, repo):
            self._error(request, 401, "GatedRepo")
            return None
        if revision not in ("main", repo.commit):
            self._error(request, 404, "RevisionNotFound")
            return None
        return repo

    def _model_info(self, request, repo_id: str, revision: str) -> None:
        repo = self._repo(request, repo_id, revision)
        if repo is None:
            return
        siblings = []
        for rel, data in sorted(repo.files.items()):
            sibling = {"rfilename": rel, "size": len(data),
                       "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if len(data) > LFS_THRESHOLD:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                sibling["blobId"] = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps({"id": repo_id, "sha": repo.commit, "siblings": siblings}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _resolve(self, request, repo_id: str, revision: str, rel: str) -> None:
        repo = self._repo(request, repo_id, revision)
        if repo is None:
            return
        if rel not in repo.files:
            return self._error(request, 404, "EntryNotFound")
        data = repo.files[rel]
        if len(data) > LFS_THRESHOLD:
            port = self.server.server_address[1]
            request.send_response(302)
            request.send_header("Location", f"http://localhost:{port}/cdn/{hashlib.sha256(data).hexdigest()}")
            request.send_header("Content-Length", "0")
            request.end_headers()
            return None
        return self._send_bytes(request, data)

    @staticmethod
    def _send_bytes(request, data: bytes) -> None:
        start = 0
        if match := re.match(r"^bytes=(\d+)-$", request.headers.get("Range") or ""):
            start = int(match.group(1))
            if start >= len(data):
                request.send_response(416)
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            request.send_response(200)
        request.send_header("Content-Length", str(len(data) - start))
        request.end_headers()
        request.wfile.write(data[start:])

    @staticmethod
    def _error(request, status: int, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
