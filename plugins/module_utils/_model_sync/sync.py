# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One model sync from a source (S3 prefix, Hugging Face repo) into a ModelStore: plan, stage, verify, switch.

Private to this collection. A *source* provides ``uri``, ``list()`` -> manifest, ``describe(remote, rels)`` (adds
checksum values to the entries about to be fetched; it runs in a thread while the engine already transfers) and
``jobs(remote, rels, staging)`` for its *engine* (``run(jobs, on_done, workdir)``). Everything that decides is
in manifest.py (pure); this file sequences it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import ChecksumMismatch
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import computable_algorithms
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import verify_file
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import ProgressMonitor
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import TransferError

DIFF_FILE_LIMIT = 200


class SyncError(Exception):
    """Stops the sync with a message for the operator; the current model is left as it was."""


def _diff(before, after):
    def lines(files):
        rows = ["%s  %d  %s" % (rel, files[rel]["size"], files[rel]["etag"]) for rel in sorted(files)]
        if len(rows) > DIFF_FILE_LIMIT:
            rows = rows[:DIFF_FILE_LIMIT] + ["... %d more" % (len(rows) - DIFF_FILE_LIMIT)]
        return "\n".join(rows) + "\n"

    return {"before_header": "model files (path  size  etag)", "after_header": "model files (path  size  etag)",
            "before": lines(before), "after": lines(after)}


class _Specs(object):
    """How to verify each file (``rel -> choose_verification()``), computed by ``describe`` in a background thread
    so that its S3 round trips overlap the transfer. ``get`` waits for it; its errors surface in the caller."""

    def __init__(self, describe, remote, rels):
        self.describe_s = None
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future = self._pool.submit(self._timed, describe, remote, rels)

    def _timed(self, describe, remote, rels):
        mark = time.monotonic()
        try:
            return describe(remote, rels)
        finally:
            self.describe_s = round(time.monotonic() - mark, 3)

    def wait(self):
        return self._future.result()

    def get(self, rel):
        return self.wait()[rel]

    def raise_failure(self):
        if self._future.done() and self._future.exception() is not None:
            raise self._future.exception()

    def close(self):
        self._pool.shutdown(wait=True)


class ModelSync(object):
    def __init__(self, store, source, engine, verify="checksum", keep_versions=1, reserve_bytes=0,
                 verify_workers=None, warn=None, progress_id=None):
        self.store, self.source, self.engine = store, source, engine
        self.verify, self.keep_versions, self.reserve_bytes = verify, max(1, keep_versions), reserve_bytes
        self.verify_workers = verify_workers or max(1, min(4, os.cpu_count() or 1))
        self.warn = warn or (lambda message: None)
        self.progress_id = progress_id

    def run(self, check_mode=False):
        started = time.monotonic()
        if not check_mode:
            self.store.lock()
        try:
            result = self._run(check_mode, started)
        finally:
            self.store.unlock()
        result["elapsed_s"] = round(time.monotonic() - started, 3)
        return result

    def _run(self, check_mode, started):
        store = self.store
        current_dir = store.current_version_dir()
        local = store.read_manifest(current_dir) or {"files": {}}
        local_files, local_version = local["files"], local.get("version")
        timings = {}
        mark = time.monotonic()
        remote = self.source.list()
        timings["list_s"] = round(time.monotonic() - mark, 3)
        if not remote:
            raise SyncError("%s holds no files to sync (all excluded?)" % self.source.uri)
        version = mm.version_id(remote)
        stats = store.stat_files(current_dir, local_files) if current_dir else {}
        plan = mm.plan_sync(remote, local_files, stats)
        result = {
            "changed": False,
            "model_path": store.current,
            "version": version,
            "previous_version": local_version,
            "version_path": store.version_dir(version),
            "source": self.source.uri,
            "engine": self.engine.name,
            "files": len(remote),
            "total_bytes": plan["total_bytes"],
            "downloaded": [],
            "downloaded_bytes": 0,
            "reused": len(plan["unchanged"]),
            "deleted": plan["delete"],
            "resumed": 0,
            "rechecked": len(plan["recheck"]),
            "verification": {},
            "pruned": [],
            "throughput_mb_s": None,
            "timings": timings,
            "diff": _diff(local_files, remote),
        }
        if mm.is_noop(plan, local_version, version):
            if not check_mode and set(os.listdir(store.state)) - {"lock"}:
                store.clear_staging()  # leftovers of an interrupted sync towards other content
            return result

        result["changed"] = True
        if current_dir != os.path.realpath(store.version_dir(version)) and store.is_complete(version):
            # This content is already here as an older version (a rollback): switch, download nothing.
            if not check_mode:
                store.switch(version)
                result["pruned"] = store.prune(self.keep_versions)
            return result

        if check_mode:
            result["downloaded"] = plan["download"]
            result["downloaded_bytes"] = plan["download_bytes"]
            self._check_space(plan["download_bytes"])
            return result

        reuse = dict((rel, local_files[rel].get("verified_by", mm.METHOD_SIZE)) for rel in plan["unchanged"])
        verified, to_verify, to_fetch = store.prepare_staging(remote, current_dir, reuse, plan["recheck"])
        result["resumed"] = len([rel for rel in verified if rel not in reuse])
        result["resumed"] += len([rel for rel in to_verify if rel not in plan["recheck"]])
        self._check_space(sum(remote[rel]["size"] for rel in to_fetch))

        # The checksums (HeadObject, after building a boto3 client: about 0.3 s of CPU) are fetched while the
        # transfer already runs; each landed file waits for them before it is verified. Nothing is published
        # before every file is verified against them, so starting early weakens no check.
        specs = _Specs(self._describe, remote, plan["download"] + plan["recheck"])
        already = sum(remote[rel]["size"] for rel in verified) + sum(remote[rel]["size"] for rel in to_verify)
        monitor = ProgressMonitor(store, plan["total_bytes"], len(remote), already, len(verified),
                                  progress_id=self.progress_id).start()
        transfer_started = time.monotonic()
        try:
            mismatches = self._verify_many(remote, specs, to_verify, verified)
            to_fetch = sorted(set(to_fetch) | set(mismatches))
            fetched = list(to_fetch)
            mismatches = self._fetch_and_verify(remote, specs, to_fetch, verified, monitor)
            specs.wait()  # its errors count even when every file was verified by an earlier run
            timings["describe_s"] = specs.describe_s
            if mismatches:
                # One more try: a torn transfer heals, a server whose bytes disagree with its checksum does not.
                mismatches = self._fetch_and_verify(remote, specs, sorted(mismatches), verified, monitor)
            if mismatches:
                first = mismatches[sorted(mismatches)[0]]
                raise SyncError(
                    "checksum mismatch on %d file(s), refusing to publish them (the current model is untouched): %s"
                    % (len(mismatches), "; ".join(str(mismatches[rel]) for rel in sorted(mismatches)[:5]))
                    if len(mismatches) > 1 else
                    "checksum mismatch, refusing to publish it (the current model is untouched): %s" % first
                )
            monitor.phase = "publish"
        finally:
            monitor.stop()
            specs.close()
        transfer_s = time.monotonic() - transfer_started
        size_only = sorted(rel for rel in set(fetched) | set(to_verify) if verified[rel]["method"] == mm.METHOD_SIZE)
        if size_only and self.verify != mm.METHOD_SIZE:
            self.warn(
                "S3 gives no checksum or MD5 ETag this host can check for %d file(s) (e.g. %s); they were verified "
                "by size only" % (len(size_only), size_only[0])
            )
        timings["transfer_and_verify_s"] = round(transfer_s, 3)
        mark = time.monotonic()

        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest = mm.new_manifest(self.source.uri, remote, verified, created)
        result["version_path"] = store.publish(manifest)
        result["pruned"] = store.prune(self.keep_versions)
        store.clear_staging()
        timings["publish_s"] = round(time.monotonic() - mark, 3)
        result["downloaded"] = fetched
        result["downloaded_bytes"] = sum(remote[rel]["size"] for rel in fetched)
        counts = {}
        for rel in set(fetched) | set(to_verify):
            method = verified[rel]["method"]
            counts[method] = counts.get(method, 0) + 1
        result["verification"] = counts
        if result["downloaded_bytes"] and transfer_s > 0:
            result["throughput_mb_s"] = round(result["downloaded_bytes"] / transfer_s / 1e6, 1)
        return result

    def _check_space(self, needed):
        shortfall = mm.disk_shortfall(self.store.free_bytes(), needed, self.reserve_bytes)
        if shortfall:
            raise SyncError(
                "not enough disk space in %s: the download needs %s plus a reserve of %s, but only %s is free "
                "(%s short); free space, use a larger volume or the instance store, or lower the reserve"
                % (self.store.dest, mm.human_bytes(needed), mm.human_bytes(self.reserve_bytes),
                   mm.human_bytes(self.store.free_bytes()), mm.human_bytes(shortfall))
            )

    def _describe(self, remote, rels):
        self.source.describe(remote, rels)
        return dict((rel, mm.choose_verification(remote[rel], computable_algorithms(), self.verify)) for rel in remote)

    def _verify_one(self, remote, specs, rel, verified, lock):
        path = os.path.join(self.store.staging, rel)
        method = verify_file(path, rel, remote[rel], specs.get(rel))
        with lock:
            record = self.store.record_verified(rel, remote[rel], method)
            verified[rel] = {"method": method, "mtime_ns": record["mtime_ns"]}

    def _verify_many(self, remote, specs, rels, verified):
        """Verify files a previous run left complete but unverified; returns {rel: mismatch} (files removed)."""
        mismatches, lock = {}, threading.Lock()
        with ThreadPoolExecutor(max_workers=self.verify_workers) as pool:
            futures = dict((rel, pool.submit(self._verify_one, remote, specs, rel, verified, lock)) for rel in rels)
            for rel, future in futures.items():
                try:
                    future.result()
                except ChecksumMismatch as exc:
                    self.store.discard_staged(rel)
                    mismatches[rel] = exc
        return mismatches

    def _fetch_and_verify(self, remote, specs, rels, verified, monitor):
        """Download ``rels``; each file is verified as soon as it lands, while the others still download."""
        mismatches, lock, futures = {}, threading.Lock(), {}
        jobs = self.source.jobs(remote, rels, self.store.staging)
        with ThreadPoolExecutor(max_workers=self.verify_workers) as pool:

            def landed(rel):
                monitor.file_done()
                specs.raise_failure()  # e.g. the object changed since the listing: stop the transfer now
                futures[rel] = pool.submit(self._verify_one, remote, specs, rel, verified, lock)

            try:
                self.engine.run(jobs, landed, self.store.state)
            except TransferError:
                specs.wait()  # raises the HeadObject error if there is one: it names the cause better than s5cmd's
                raise
            monitor.phase = "verify"
            for rel, future in futures.items():
                try:
                    future.result()
                except ChecksumMismatch as exc:
                    self.store.discard_staged(rel)
                    mismatches[rel] = exc
        missing = set(rels) - set(futures)
        if missing:
            raise SyncError(
                "the transfer engine reported success but did not deliver %s" % ", ".join(sorted(missing)[:5]))
        return mismatches
