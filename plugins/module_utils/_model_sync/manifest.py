# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a model prefix holds, what a sync must do about it, and how each file is verified.

Private to this collection. Everything here is a pure function of listings, manifests and stat results (no
boto3, no filesystem writes), so the planner is unit-tested without S3 (tests/unit/plugins/module_utils/).

Vocabulary:
- an *entry* describes one object: ``{"key", "size", "etag", "checksums", "checksum_type"}``; ``checksums`` maps an
  S3 algorithm name (CRC64NVME, CRC32C, CRC32, SHA256, SHA1) to its base64 value as S3 returns it.
- a *manifest* maps a path relative to the model folder to its entry; it is stored with the model
  (MANIFEST_NAME) and is the only thing a re-run compares against, so an unchanged re-sync reads no file content.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import hashlib
import json
import posixpath
import re

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar

MANIFEST_NAME = ".llmserve-manifest.json"
MANIFEST_FORMAT = 1
VERSION_ID_LENGTH = 12

# Checksum methods, fastest first (measured on a 2-core x86_64 with SHA-NI: CRC64NVME/CRC32C via awscrt ~10 GB/s,
# CRC32 via zlib ~4 GB/s, SHA1/SHA256 via hashlib ~1.8-1.9 GB/s, MD5 ~0.77 GB/s). A method is used only when the
# object carries a full-object value for it and the host can compute it.
FULL_OBJECT_ALGORITHMS = ("CRC64NVME", "CRC32C", "CRC32", "SHA1", "SHA256")
METHOD_GIT_BLOB = "GIT_BLOB_SHA1"  # the Hub's id of a small (non-LFS) file: sha1("blob <size>\0" + content)
METHOD_MD5 = "MD5"
METHOD_MD5_MULTIPART = "MD5_MULTIPART"
METHOD_SIZE = "size"

MIB = 1024 * 1024
# S3 parts are at least 5 MiB (the last may be smaller) and tools choose whole MiB sizes. When S3 did not tell the
# part size (HeadObject PartNumber=1 does), a multipart ETag is checked against a few whole-MiB candidates, the
# defaults of common uploaders first: aws cli/boto3 8, s5cmd 50, rclone 5 (grown for big files), 16, 64, 100, 128.
S3_MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE_CANDIDATES = 4
COMMON_PART_SIZES_MIB = (8, 50, 5, 16, 64, 100, 128, 256, 512)

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")
_S3_URI = re.compile(r"s3://([^/]+)/?(.*)", re.DOTALL)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ManifestError(ValueError):
    """A listing or manifest that cannot be synced safely (unsafe key, clash, unreadable manifest)."""


def parse_s3_uri(uri):
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")``; the prefix always names a folder."""
    error = grammar.control_character("source", uri)
    if error:
        raise ManifestError(error)
    match = _S3_URI.fullmatch(uri or "")
    if not match:
        raise ManifestError("source %r is not an s3://bucket/prefix URI" % (uri,))
    bucket, prefix = match.group(1), match.group(2)
    if not _BUCKET_NAME.fullmatch(bucket):
        raise ManifestError("source %r: %r is not a valid S3 bucket name" % (uri, bucket))
    return bucket, normalize_prefix(prefix)


def normalize_prefix(prefix):
    """A prefix is a folder: no leading slash, one trailing slash, '' for the whole bucket."""
    prefix = (prefix or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


def normalize_etag(etag):
    """S3 quotes ETags in headers and XML; some servers (rclone) do not in listings. Compare them bare."""
    return (etag or "").strip().strip('"').lower()


def relative_path(key, prefix):
    """The path of ``key`` inside the model folder. Refuses keys that would escape it or clash with our files."""
    if not key.startswith(prefix):
        raise ManifestError("key %r is outside the prefix %r" % (key, prefix))
    rel = key[len(prefix):]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ManifestError("key %r has an unsafe path %r inside the model folder" % (key, rel))
    if any(char in rel for char in "\x00\n\r"):
        raise ManifestError("key %r contains a NUL or line break, which no model file name needs" % (key,))
    error = grammar.relative_path("key", rel)
    if error:
        raise ManifestError(error)
    if rel == MANIFEST_NAME:
        raise ManifestError("key %r clashes with the manifest this collection stores with the model" % (key,))
    return rel


def is_folder_marker(key, size):
    """Zero-byte keys ending in '/' are folder placeholders made by consoles, not files."""
    return key.endswith("/") and not size


def is_excluded(rel, patterns):
    """fnmatch patterns against the relative path (``*`` also crosses '/', as in rsync's ``**``)."""
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns or ())


def entry_from_listing(item):
    """One ListObjectsV2 ``Contents`` item -> entry (checksum values come later, from HeadObject)."""
    return {
        "key": item["Key"],
        "size": int(item["Size"]),
        "etag": normalize_etag(item.get("ETag")),
        "checksums": {},
        "checksum_type": item.get("ChecksumType"),
    }


def checksums_from_head(head):
    """HeadObject (ChecksumMode=ENABLED) -> ``({"CRC64NVME": "base64", ...}, "FULL_OBJECT"|"COMPOSITE"|None)``."""
    checksums = {}
    for algorithm in FULL_OBJECT_ALGORITHMS:
        value = head.get("Checksum" + algorithm)
        if value:
            checksums[algorithm] = value
    checksum_type = head.get("ChecksumType")
    if not checksum_type and checksums:
        # Before ChecksumType existed, a composite (per-part) value was marked by a "-<parts>" suffix. Stores that
        # give neither (moto 5.2) on a multipart object cannot say which kind it is: a whole-file check would fail
        # a good download, so treat it as per-part and verify by the multipart ETag instead.
        suffixed = any(re.search(r"-\d+$", v) for v in checksums.values())
        multipart = multipart_parts(normalize_etag(head.get("ETag"))) is not None
        checksum_type = "COMPOSITE" if suffixed or multipart else "FULL_OBJECT"
    return checksums, checksum_type


def build_remote_manifest(items, prefix, exclude=()):
    """Listing items under ``prefix`` -> manifest. Folder markers and excluded paths are left out."""
    manifest = {}
    for item in items:
        key, size = item["Key"], int(item["Size"])
        if is_folder_marker(key, size):
            continue
        rel = relative_path(key, prefix)
        if is_excluded(rel, exclude):
            continue
        manifest[rel] = entry_from_listing(item)
    refuse_file_folder_clashes(manifest, "keys %s are both a file and a folder under the prefix")
    return manifest


def refuse_file_folder_clashes(manifest, message):
    """A file and a folder of the same name cannot both exist locally: fail (message takes the names) before
    anything is downloaded."""
    folders = set()
    for rel in manifest:
        parent = posixpath.dirname(rel)
        while parent:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    clashes = sorted(folders.intersection(manifest))
    if clashes:
        raise ManifestError(message % ", ".join(repr(c) for c in clashes))


def same_content(remote, local):
    """True when a local entry holds what a remote entry describes: same size and ETag, and no checksum disagrees."""
    if local is None or remote["size"] != local.get("size") or remote["etag"] != local.get("etag"):
        return False
    local_sums = local.get("checksums") or {}
    return all(local_sums[a] == v for a, v in (remote.get("checksums") or {}).items() if a in local_sums)


def version_id(manifest):
    """A content id: the same files with the same sizes and ETags give the same id, whatever the bucket."""
    canonical = json.dumps(
        sorted((rel, entry["size"], entry["etag"]) for rel, entry in manifest.items()),
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:VERSION_ID_LENGTH]


def total_size(manifest):
    return sum(entry["size"] for entry in manifest.values())


def same_mtime(found_ns, recorded_ns):
    """The file's mtime is the one recorded, or that one cut to whole seconds: a copy or image that keeps seconds
    only (tar, ``docker commit``, FAT) moved nothing else (rsync's --modify-window, for the same reason)."""
    if recorded_ns is None or found_ns is None:
        return False
    return found_ns == recorded_ns or (found_ns % 10 ** 9 == 0 and found_ns == recorded_ns - recorded_ns % 10 ** 9)


def plan_sync(remote, local, local_stats):
    """Decide what moves.

    ``remote``: the prefix's manifest now. ``local``: the manifest stored with the current model ({} when none).
    ``local_stats``: ``{rel: (size, mtime_ns)}`` of the files present in the current model folder, so a file that
    was deleted or resized locally since it was verified is fetched again.

    An mtime cut to whole seconds counts as the same (``same_mtime``). A file of the right size whose mtime
    otherwise moved goes to ``recheck``: its content is verified again in place and fetched only if that fails.
    Its bytes may well be intact (a copy that set a new mtime, such as rsync without ``-t``, or a ``touch``), and
    re-reading a large model costs less than downloading it.

    Returns ``{"download": [...], "recheck": [...], "unchanged": [...], "delete": [...], "download_bytes": n,
    "total_bytes": n}`` with sorted relative paths; ``unchanged`` files are reused (hard-linked) into the new
    version.
    """
    download, recheck, unchanged = [], [], []
    for rel in sorted(remote):
        entry = local.get(rel)
        stat = local_stats.get(rel)
        if entry is None or stat is None or stat[0] != entry.get("size") or not same_content(remote[rel], entry):
            download.append(rel)
        elif same_mtime(stat[1], entry.get("mtime_ns")):
            unchanged.append(rel)
        else:
            recheck.append(rel)
    delete = sorted(set(local) - set(remote))
    return {
        "download": download,
        "recheck": recheck,
        "unchanged": unchanged,
        "delete": delete,
        "download_bytes": sum(remote[rel]["size"] for rel in download),
        "total_bytes": total_size(remote),
    }


def multipart_parts(etag):
    """The part count of a multipart ETag ("<md5>-<parts>"), else None."""
    match = _MULTIPART_ETAG.match(etag or "")
    return int(match.group(2)) if match else None


def is_noop(plan, local_version, remote_version):
    return not plan["download"] and not plan["recheck"] and not plan["delete"] and local_version == remote_version


def multipart_part_sizes(size, parts):
    """Whole-MiB part sizes that split ``size`` bytes into exactly ``parts`` parts: common uploader defaults first,
    then the smallest, at most MAX_PART_SIZE_CANDIDATES."""
    if parts < 1 or size < 0:
        return []
    if parts == 1:
        return [max(size, 1)]
    # ceil(size / p) == parts  <=>  size / parts <= p < size / (parts - 1)
    low = max(-(-size // parts), S3_MIN_PART_SIZE)
    high = -(-size // (parts - 1)) - 1

    def fits(part):
        return low <= part <= high

    candidates = [mib * MIB for mib in COMMON_PART_SIZES_MIB if fits(mib * MIB)]
    part = -(-low // MIB) * MIB
    while part <= high and len(candidates) < MAX_PART_SIZE_CANDIDATES:
        if part not in candidates:
            candidates.append(part)
        part += MIB
    return candidates[:MAX_PART_SIZE_CANDIDATES]


def choose_verification(entry, computable, method="checksum"):
    """How to verify one downloaded file, cheapest sound method first.

    ``computable``: the full-object algorithms this host can compute (CRC64NVME and CRC32C need awscrt).
    Returns ``{"method": ..., "expected": ..., "part_sizes": [...]}``; method ``size`` means S3 gave nothing
    content-based we can check (for example an SSE-KMS object's opaque ETag uploaded without a checksum).
    """
    if method == METHOD_SIZE:
        return {"method": METHOD_SIZE}
    checksums = entry.get("checksums") or {}
    if entry.get("checksum_type") != "COMPOSITE":
        for algorithm in FULL_OBJECT_ALGORITHMS:
            if algorithm in checksums and algorithm in computable:
                return {"method": algorithm, "expected": checksums[algorithm]}
    if entry.get("git_blob"):
        return {"method": METHOD_GIT_BLOB, "expected": entry["git_blob"]}
    etag = entry.get("etag") or ""
    if _MD5_ETAG.match(etag):
        return {"method": METHOD_MD5, "expected": etag}
    multipart = _MULTIPART_ETAG.match(etag)
    if multipart:
        # S3 tells the part size (HeadObject PartNumber=1); otherwise try likely sizes.
        part_size = entry.get("part_size")
        part_sizes = [part_size] if part_size else multipart_part_sizes(entry["size"], int(multipart.group(2)))
        if part_sizes:
            return {"method": METHOD_MD5_MULTIPART, "expected": etag, "part_sizes": part_sizes}
    return {"method": METHOD_SIZE}


def new_manifest(source, remote, verified, created):
    """The manifest stored with a finished version: the remote entries plus what verified each file locally.

    ``verified``: ``{rel: {"method": ..., "mtime_ns": ...}}`` for every file of ``remote``.
    """
    files = {}
    for rel, entry in sorted(remote.items()):
        record = dict(entry)
        record["verified_by"] = verified[rel]["method"]
        record["mtime_ns"] = verified[rel]["mtime_ns"]
        files[rel] = record
    return {
        "format": MANIFEST_FORMAT,
        "source": source,
        "version": version_id(remote),
        "created": created,
        "total_bytes": total_size(remote),
        "files": files,
    }


def load_manifest(text):
    """Parse a stored manifest; anything unreadable counts as no manifest (the next sync fetches everything)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        return None
    return data


def dump_manifest(manifest):
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def disk_shortfall(free_bytes, needed_bytes, reserve_bytes):
    """Bytes missing to hold ``needed_bytes`` more and still leave ``reserve_bytes`` free (0 when it fits)."""
    return max(0, needed_bytes + reserve_bytes - free_bytes)


def human_bytes(count):
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%d B" % count


def progress_line(progress):
    """One human line from a progress record (written by the module, printed by its action plugin)."""
    done, total = progress.get("bytes_done", 0), progress.get("bytes_total", 0)
    percent = (100.0 * done / total) if total else 100.0
    line = "%s %5.1f%% %s/%s, %d/%d files" % (
        progress.get("phase", "sync"),
        percent,
        human_bytes(done),
        human_bytes(total),
        progress.get("files_done", 0),
        progress.get("files_total", 0),
    )
    rate = progress.get("rate_bytes_per_s") or 0
    if rate > 0:
        line += ", %.0f MB/s" % (rate / 1e6)
        if total > done:
            line += ", ~%d s left" % int((total - done) / rate + 0.5)
    return line
