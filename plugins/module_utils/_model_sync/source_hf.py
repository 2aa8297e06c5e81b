# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Hugging Face Hub as a model sync source, over its public HTTP API with the standard library only.

Private to this collection. ``GET /api/models/<repo>/revision/<rev>?blobs=true`` lists the files of one commit
with their sizes, the SHA-256 of LFS files and the git blob id of the others; ``GET /<repo>/resolve/<commit>/<path>``
serves a file (LFS files through a redirect to a CDN). The token goes only to the Hub's own host, never to the
host a redirect leads to. Downloads resume from a ``.part`` file with an HTTP Range request.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import re
import ssl
import threading

from urllib.error import HTTPError
from urllib.error import URLError
from urllib.parse import quote
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler
from urllib.request import HTTPSHandler
from urllib.request import ProxyHandler
from urllib.request import Request
from urllib.request import build_opener

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import fetch_in_threads

# A branch, tag or commit: git ref characters, no '..', no control characters or spaces (it goes into a URL).
_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,255}")
CHUNK = 4 * 1024 * 1024


class HfError(Exception):
    """A Hub failure with a message an operator can act on."""


def check_repo_id(repo):
    error = grammar.hub_id("repo", repo)
    if error:
        raise HfError(error)
    return repo


def check_revision(revision):
    error = grammar.control_character("revision", revision)
    if error is None and (not _REVISION.fullmatch(revision or "") or ".." in revision):
        error = "revision %r is not a branch, tag or commit (letters, digits, '.', '_', '-', '/'; no '..')" % (
            revision,)
    if error:
        raise HfError(error)
    return revision


def describe_http_error(status, repo, revision, has_token, error_code=None):
    """The message for an HTTP error from the Hub's API or file endpoint."""
    if status == 401 or error_code == "GatedRepo" or (status == 403 and error_code != "RepoNotFound"):
        if error_code == "GatedRepo" or has_token:
            return (
                "%s is gated or private (HTTP %d%s): accept its license on the Hub with the account whose token "
                "is given (model_sync_hf_token), and check the token can read it"
                % (repo, status, ", " + error_code if error_code else "")
            )
        return "%s needs a Hugging Face token (HTTP %d): set model_sync_hf_token" % (repo, status)
    if status == 404:
        return "%s at revision %r was not found on the Hub (or is private and the token cannot see it)" % (
            repo, revision)
    if status == 429:
        return "the Hub rate-limited the requests (HTTP 429); give a token or retry later"
    return "the Hub answered HTTP %d for %s@%s" % (status, repo, revision)


def manifest_from_model_info(info, exclude=()):
    """The Hub's model info (with ``blobs=true``) -> ``(commit sha, manifest)``.

    LFS files carry their SHA-256 (checked as S3's SHA256 would be); the others their git blob id.
    """
    commit = info.get("sha")
    if not commit:
        raise HfError("the Hub's answer has no commit sha")
    items = []
    for sibling in info.get("siblings") or []:
        rel = sibling.get("rfilename")
        if rel is None or sibling.get("size") is None:
            raise HfError("the Hub listed %r without a size; is the API answering with blobs=true?" % (rel,))
        items.append((rel, sibling))
    manifest = {}
    for rel, sibling in items:
        mm.relative_path(rel, "")
        if mm.is_excluded(rel, exclude):
            continue
        lfs = sibling.get("lfs") or {}
        entry = {"key": rel, "size": int(sibling["size"]), "checksums": {}, "checksum_type": None}
        if lfs.get("sha256"):
            entry["etag"] = lfs["sha256"].lower()
            entry["checksums"]["SHA256"] = base64.b64encode(bytes.fromhex(lfs["sha256"])).decode("ascii")
            entry["checksum_type"] = "FULL_OBJECT"
        elif sibling.get("blobId"):
            entry["etag"] = sibling["blobId"].lower()
            entry["git_blob"] = sibling["blobId"].lower()
        else:
            raise HfError("the Hub listed %r without a blob id or LFS hash" % rel)
        manifest[rel] = entry
    mm.refuse_file_folder_clashes(manifest, "paths %s are both a file and a folder in the repository")
    return commit, manifest


class _SameHostAuthRedirect(HTTPRedirectHandler):
    """Follow redirects, but send the Authorization header to the host it was meant for only (LFS files redirect
    to a CDN that must never see the token)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = HTTPRedirectHandler.redirect_request(self, req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
        return new


class HubClient(object):
    def __init__(self, endpoint, token=None, validate_certs=True, timeout=60, use_proxy=True):
        self.endpoint, self.token, self.timeout = endpoint.rstrip("/"), token or None, timeout
        handlers = [_SameHostAuthRedirect()]
        if not validate_certs:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            handlers.append(HTTPSHandler(context=context))
        if not use_proxy:
            handlers.append(ProxyHandler({}))
        self._opener = build_opener(*handlers)

    def request(self, url, headers=None):
        request = Request(url, headers=dict(headers or {}))
        if self.token and urlsplit(url).netloc == urlsplit(self.endpoint).netloc:
            request.add_unredirected_header("Authorization", "Bearer %s" % self.token)
        return self._opener.open(request, timeout=self.timeout)

    def model_info(self, repo, revision):
        url = "%s/api/models/%s/revision/%s?blobs=true" % (self.endpoint, repo, quote(revision, safe=""))
        try:
            with self.request(url) as response:
                return json.loads(response.read().decode("utf-8"))
        except HTTPError as exc:
            code = exc.headers.get("X-Error-Code")
            raise HfError(describe_http_error(exc.code, repo, revision, bool(self.token), code))
        except (URLError, ValueError, OSError) as exc:
            raise HfError("cannot read %s: %s" % (url, exc))

    def file_url(self, repo, commit, rel):
        return "%s/%s/resolve/%s/%s" % (self.endpoint, repo, commit, quote(rel))


class HfSource(object):
    def __init__(self, client, repo, revision, exclude=()):
        self.client, self.repo, self.exclude = client, check_repo_id(repo), list(exclude or ())
        self.revision = check_revision(revision)
        self.commit = None
        self.uri = "hf://%s@%s" % (repo, revision)

    def list(self):
        self.commit, manifest = manifest_from_model_info(self.client.model_info(self.repo, self.revision), self.exclude)
        self.uri = "hf://%s@%s" % (self.repo, self.commit)
        if not manifest:
            raise HfError("%s@%s holds no files to sync (all excluded?)" % (self.repo, self.revision))
        return manifest

    def describe(self, remote, rels):
        """The Hub's listing already carries every hash; nothing to add."""
        return None

    def jobs(self, remote, rels, staging):
        return [HttpJob(rel, self.client.file_url(self.repo, self.commit, rel), remote[rel]["size"],
                        os.path.join(staging, rel)) for rel in rels]


class HttpJob(object):
    __slots__ = ("rel", "url", "size", "path")

    def __init__(self, rel, url, size, path):
        self.rel, self.url, self.size, self.path = rel, url, size, path


class HttpEngine(object):
    """Parallel HTTPS downloads into ``<path>.part`` (resumed with Range), renamed when complete."""

    name = "https"

    def __init__(self, client, repo, revision, workers=8):
        self.client, self.repo, self.revision, self.workers = client, repo, revision, workers
        self._lock = threading.Lock()

    def _fetch(self, job):
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
        part = job.path + ".part"
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        if offset >= job.size:
            offset = 0  # a complete-looking part file that never got renamed is not trusted
        headers = {"Range": "bytes=%d-" % offset} if offset else {}
        try:
            response = self.client.request(job.url, headers)
        except HTTPError as exc:
            if exc.code == 416:  # range not satisfiable: start over
                os.unlink(part)
                return self._fetch(job)
            raise HfError("%s: %s" % (job.rel, describe_http_error(
                exc.code, self.repo, self.revision, bool(self.client.token), exc.headers.get("X-Error-Code"))))
        except (URLError, OSError) as exc:
            raise HfError("%s: download failed: %s" % (job.rel, exc))
        with response:
            mode = "ab" if offset and response.status == 206 else "wb"
            with open(part, mode) as handle:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    handle.write(block)
        os.rename(part, job.path)
        return job.rel

    def run(self, jobs, on_done, workdir):
        fetch_in_threads(self._fetch, jobs, self.workers, on_done)
