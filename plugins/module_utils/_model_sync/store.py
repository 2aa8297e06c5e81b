# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local side of a model sync: versions, staging, verification, the atomic switch.

Private to this collection. Layout under ``dest``::

    current -> versions/<version>      the only path vLLM is given; switched with one rename(2)
    versions/<version>/...             complete, verified copies, each with its manifest (MANIFEST_NAME)
    .model-sync/staging/               the version being built: unchanged files hard-linked from current,
                                       the rest downloaded, each verified before it counts
    .model-sync/verified.jsonl         journal of staged files that passed verification (lets a re-run resume)
    .model-sync/progress.json          what the running sync has done, for the action plugin's progress lines
    .model-sync/lock                   flock: one sync per folder at a time
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import time
import zlib

from ansible_collections.llmserve.aws.plugins.module_utils._atomic_file import write_atomically
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm

try:
    from awscrt import checksums as crt_checksums

    HAS_AWSCRT = True
except ImportError:
    crt_checksums = None
    HAS_AWSCRT = False

READ_CHUNK = 8 * 1024 * 1024
PARTIAL_SUFFIX = ".part"
STATE_DIR = ".model-sync"
CURRENT = "current"
VERSIONS = "versions"


class StoreError(Exception):
    """A local condition that stops the sync (lock held, foreign layout, no space)."""


class ChecksumMismatch(Exception):
    def __init__(self, rel, method, expected, actual):
        super(ChecksumMismatch, self).__init__(
            "%s: %s mismatch, expected %s, got %s" % (rel, method, expected, actual)
        )
        self.rel, self.method, self.expected, self.actual = rel, method, expected, actual


def computable_algorithms():
    """Full-object checksum algorithms this interpreter can compute at speed."""
    algorithms = {"CRC32", "SHA1", "SHA256"}
    if HAS_AWSCRT:
        algorithms.update(("CRC32C", "CRC64NVME"))
    return algorithms


class _Crc(object):
    """A running CRC with hashlib's update/digest shape; S3 sends the big-endian value in base64."""

    def __init__(self, function, width):
        self._function, self._width, self._value = function, width, 0

    def update(self, data):
        self._value = self._function(data, self._value)

    def digest(self):
        return self._value.to_bytes(self._width, "big")


def _new_hasher(method):
    if method == "CRC32":
        return _Crc(zlib.crc32, 4)
    if method == "CRC32C":
        return _Crc(crt_checksums.crc32c, 4)
    if method == "CRC64NVME":
        return _Crc(crt_checksums.crc64nvme, 8)
    if method in ("SHA1", "SHA256"):
        return hashlib.new(method.lower())
    raise ValueError("no hasher for %s" % method)


def _read_chunks(path, chunk=READ_CHUNK):
    """The file's bytes in ``chunk``-sized views. A file that was just downloaded is still in the page cache, so it
    is mapped and hashed in place: reading it into a buffer would copy every byte once more (half the CPU a
    CRC64NVME check costs)."""
    with open(path, "rb", buffering=0) as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):
            mapped = None  # an empty file, or a filesystem that cannot map: read it
        if mapped is None:
            view = bytearray(chunk)
            while True:
                count = handle.readinto(view)
                if not count:
                    return
                yield memoryview(view)[:count]
        if hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        whole = memoryview(mapped)
        try:
            for offset in range(0, len(whole), chunk):
                yield whole[offset:offset + chunk]
        finally:
            whole.release()
            try:
                mapped.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes when that view does


def _md5_multipart(path, part_size):
    """S3's multipart ETag: MD5 of the concatenated MD5 digests of each part, then '-<parts>'."""
    digests, part, filled = [], hashlib.md5(), 0
    for block in _read_chunks(path, min(READ_CHUNK, part_size)):
        while len(block):
            take = min(len(block), part_size - filled)
            part.update(block[:take])
            filled += take
            block = block[take:]
            if filled == part_size:
                digests.append(part.digest())
                part, filled = hashlib.md5(), 0
    if filled or not digests:
        digests.append(part.digest())
    return "%s-%d" % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))


def verify_file(path, rel, entry, spec):
    """Check one downloaded file against its entry. Returns the method used; raises ChecksumMismatch."""
    size = os.stat(path).st_size
    if size != entry["size"]:
        raise ChecksumMismatch(rel, "size", entry["size"], size)
    method = spec["method"]
    if method == mm.METHOD_SIZE:
        return method
    if method == mm.METHOD_MD5:
        hasher = hashlib.md5()
        for block in _read_chunks(path):
            hasher.update(block)
        actual = hasher.hexdigest()
    elif method == mm.METHOD_GIT_BLOB:
        hasher = hashlib.sha1(b"blob %d\x00" % size)
        for block in _read_chunks(path):
            hasher.update(block)
        actual = hasher.hexdigest()
    elif method == mm.METHOD_MD5_MULTIPART:
        actual = None
        for part_size in spec["part_sizes"]:
            actual = _md5_multipart(path, part_size)
            if actual == spec["expected"]:
                break
    else:
        hasher = _new_hasher(method)
        for block in _read_chunks(path):
            hasher.update(block)
        actual = base64.b64encode(hasher.digest()).decode("ascii")
    if actual != spec["expected"]:
        raise ChecksumMismatch(rel, method, spec["expected"], actual)
    return method


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore(object):
    def __init__(self, dest):
        self.dest = os.path.abspath(dest)
        self.current = os.path.join(self.dest, CURRENT)
        self.versions = os.path.join(self.dest, VERSIONS)
        self.state = os.path.join(self.dest, STATE_DIR)
        self.staging = os.path.join(self.state, "staging")
        self.journal = os.path.join(self.state, "verified.jsonl")
        self.progress_path = os.path.join(self.state, "progress.json")
        self._lock_handle = None

    # -- reading what is there -------------------------------------------------------------------------
    def current_version_dir(self):
        """The folder ``current`` points at, or None. Refuses a ``current`` this collection did not make."""
        if os.path.islink(self.current):
            target = os.path.realpath(self.current)
            return target if os.path.isdir(target) else None
        if os.path.exists(self.current):
            raise StoreError(
                "%s exists and is not a symlink made by this module; move it away or choose another dest" % self.current
            )
        return None

    def read_manifest(self, version_dir):
        if not version_dir:
            return None
        try:
            with open(os.path.join(version_dir, mm.MANIFEST_NAME)) as handle:
                return mm.load_manifest(handle.read())
        except (IOError, OSError):
            return None

    @staticmethod
    def stat_files(folder, rels):
        stats = {}
        for rel in rels:
            try:
                st = os.lstat(os.path.join(folder, rel))
            except OSError:
                continue
            stats[rel] = (st.st_size, st.st_mtime_ns)
        return stats

    def version_dir(self, version):
        return os.path.join(self.versions, version)

    def free_bytes(self):
        probe = self.dest
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        st = os.statvfs(probe)
        return st.f_bavail * st.f_frsize

    def staged_bytes(self):
        """Bytes on disk in staging, partial files included: the download side of the progress line."""
        total = 0
        for root, _dirs, files in os.walk(self.staging):
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if st.st_nlink == 1:  # hard links from current are not downloads
                    total += min(st.st_size, st.st_blocks * 512)
        return total

    # -- lock ----------------------------------------------------------------------------------------
    def lock(self):
        os.makedirs(self.state, exist_ok=True)
        self._lock_handle = open(os.path.join(self.state, "lock"), "w")
        try:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError("another model sync holds %s/lock; wait for it to finish" % self.state)
            raise

    def unlock(self):
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # -- staging -------------------------------------------------------------------------------------
    def _journal_records(self):
        records = {}
        try:
            with open(self.journal) as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        records[record["rel"]] = record
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from an interrupted run
        except (IOError, OSError):
            pass
        return records

    def record_verified(self, rel, entry, method):
        st = os.stat(os.path.join(self.staging, rel))
        record = {"rel": rel, "etag": entry["etag"], "size": entry["size"], "method": method,
                  "mtime_ns": st.st_mtime_ns}
        with open(self.journal, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        return record

    def prepare_staging(self, remote, reuse_dir, reuse, recheck=()):
        """Bring staging to: every file of ``remote`` either verified, to verify, or to fetch.

        ``reuse_dir``/``reuse``: files of the current version whose content is unchanged (rel -> the method that
        verified them); they are hard-linked in. ``recheck``: files of the current version to verify again in
        place (right size, other mtime); they are hard-linked in as unverified.
        Files a previous, interrupted run left are kept when the journal vouches for them (same ETag, size and
        mtime) or, when complete but unverified, handed back for verification. Anything else is removed.
        Returns ``(verified, to_verify, to_fetch)``; ``verified`` maps rel -> {"method", "mtime_ns"}.
        """
        os.makedirs(self.staging, exist_ok=True)
        journal = self._journal_records()
        verified, to_verify = {}, []
        for root, dirs, files in os.walk(self.staging, topdown=False):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, self.staging).replace(os.sep, "/")
                st = os.lstat(path)
                whole = rel[:-len(PARTIAL_SUFFIX)] if rel.endswith(PARTIAL_SUFFIX) else None
                if rel not in remote and whole in remote and whole not in reuse:
                    continue  # a partial download an engine can resume (HTTP Range)
                entry = remote.get(rel)
                if entry is None or st.st_size != entry["size"] or rel in reuse:
                    os.unlink(path)
                    continue
                record = journal.get(rel)
                recorded = record and (record.get("etag"), record.get("size"), record.get("mtime_ns"))
                if recorded == (entry["etag"], entry["size"], st.st_mtime_ns):
                    verified[rel] = {"method": record["method"], "mtime_ns": st.st_mtime_ns}
                else:
                    to_verify.append(rel)
            for name in dirs:
                try:
                    os.rmdir(os.path.join(root, name))
                except OSError:
                    pass  # not empty
        # Rewrite the journal with only what still holds, so it does not grow across runs.
        write_atomically(
            self.journal,
            "".join(
                "%s\n" % json.dumps(dict(rel=rel, etag=remote[rel]["etag"], size=remote[rel]["size"], **info), sort_keys=True)
                for rel, info in sorted(verified.items())
            ),
        )
        for rel in reuse:
            target = self._link_from(reuse_dir, rel)
            verified[rel] = {"method": reuse[rel], "mtime_ns": os.stat(target).st_mtime_ns}
        for rel in recheck:
            if rel not in verified and rel not in to_verify:  # an interrupted run's copy is already here
                self._link_from(reuse_dir, rel)
                to_verify.append(rel)
        to_fetch = sorted(set(remote) - set(verified) - set(to_verify))
        return verified, sorted(to_verify), to_fetch

    def _link_from(self, folder, rel):
        """``folder/rel`` into staging, hard-linked (copied, keeping mtime, across filesystems); its staged path."""
        target = os.path.join(self.staging, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        source = os.path.join(folder, rel)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)  # another filesystem: copy, keeping mtime
        return target

    def discard_staged(self, rel):
        try:
            os.unlink(os.path.join(self.staging, rel))
        except OSError:
            pass

    def clear_staging(self):
        shutil.rmtree(self.staging, ignore_errors=True)
        for path in (self.journal, self.progress_path):
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- publishing ----------------------------------------------------------------------------------
    def publish(self, manifest):
        """Make staging a version folder and point ``current`` at it in one rename; returns the folder.

        The folder is ``versions/<version>``, or ``versions/<version>-<n>`` when ``current`` already points at a
        folder of that name (a repair of locally damaged files): the folder ``current`` points at is never
        changed in place; prune() removes the old one after the switch.
        """
        version = manifest["version"]
        write_atomically(os.path.join(self.staging, mm.MANIFEST_NAME), mm.dump_manifest(manifest))
        os.makedirs(self.versions, exist_ok=True)
        name = version
        if name == self._current_name():
            counter = 1
            while os.path.lexists(self.version_dir("%s-%d" % (version, counter))):
                counter += 1
            name = "%s-%d" % (version, counter)
        target = self.version_dir(name)
        if os.path.lexists(target):
            # An earlier, incomplete publish of the same content (a complete one is switched to without staging).
            shutil.rmtree(target)
        os.rename(self.staging, target)
        os.utime(target)  # prune() keeps the most recently published versions
        _fsync_dir(self.versions)
        self.switch(name)
        try:
            os.unlink(self.journal)
        except OSError:
            pass
        return target

    def _current_name(self):
        return os.path.basename(os.path.realpath(self.current)) if os.path.islink(self.current) else None

    def switch(self, name):
        """Point ``current`` at ``versions/<name>`` with one rename(2) of a new symlink over the old one."""
        link_tmp = self.current + ".new"
        if os.path.lexists(link_tmp):
            os.unlink(link_tmp)
        os.symlink(os.path.join(VERSIONS, name), link_tmp)
        os.rename(link_tmp, self.current)
        _fsync_dir(self.dest)

    def is_complete(self, version):
        """A version folder whose stored manifest matches its files' sizes and mtimes (no content read)."""
        folder = self.version_dir(version)
        manifest = self.read_manifest(folder)
        if not manifest or manifest.get("version") != version:
            return None
        stats = self.stat_files(folder, manifest["files"])
        for rel, entry in manifest["files"].items():
            stat = stats.get(rel)
            if stat is None or stat[0] != entry["size"] or not mm.same_mtime(stat[1], entry.get("mtime_ns")):
                return None
        return manifest

    def prune(self, keep):
        """Remove versions beyond the ``keep`` most recent; never the one ``current`` points at, and never a folder
        without this collection's manifest (someone else's: only what the module wrote is removed)."""
        current = self._current_name()
        try:
            # Only folders holding this collection's manifest are versions it wrote.
            names = [n for n in os.listdir(self.versions) if os.path.isfile(os.path.join(self.versions, n, mm.MANIFEST_NAME))]
        except OSError:
            return []
        names.sort(key=lambda n: os.stat(os.path.join(self.versions, n)).st_mtime, reverse=True)
        kept = [current] if current in names else []
        removed = []
        for name in names:
            if name == current:
                continue
            if len(kept) < keep:
                kept.append(name)
                continue
            shutil.rmtree(os.path.join(self.versions, name), ignore_errors=True)
            removed.append(name)
        return removed

    # -- progress ------------------------------------------------------------------------------------
    def write_progress(self, record):
        record = dict(record, updated=time.time())
        try:
            # Readers only need a whole record (the rename); a crash loses nothing worth an fsync every second.
            write_atomically(self.progress_path, json.dumps(record, sort_keys=True), durable=False)
        except (IOError, OSError):
            pass  # progress is informative; never fail a sync over it
