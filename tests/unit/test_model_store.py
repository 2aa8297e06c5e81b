"""Verification and the local version store of a model sync (plugins/module_utils/_model_sync/store.py), on real files
in a temporary folder."""

import base64
import hashlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import store as store_mod  # noqa: E402

MIB = 1024 * 1024


def multipart_etag(data: bytes, part: int) -> str:
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(11 * MIB + 12345)
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    return path, data


def entry(data, **extra):
    return dict({"size": len(data), "etag": "", "checksums": {}}, **extra)


def test_md5_etag(blob):
    path, data = blob
    spec = {"method": "MD5", "expected": hashlib.md5(data).hexdigest()}
    assert store_mod.verify_file(str(path), "w.bin", entry(data), spec) == "MD5"


def test_multipart_etag_tries_candidate_part_sizes(blob):
    path, data = blob
    etag = multipart_etag(data, 6 * MIB)
    spec = mm.choose_verification(entry(data, etag=etag), set())
    assert spec["method"] == "MD5_MULTIPART" and 6 * MIB in spec["part_sizes"] and spec["part_sizes"][0] != 6 * MIB
    assert store_mod.verify_file(str(path), "w.bin", entry(data, etag=etag), spec) == "MD5_MULTIPART"


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("CRC32", lambda d: base64.b64encode(zlib.crc32(d).to_bytes(4, "big")).decode()),
        ("SHA256", lambda d: base64.b64encode(hashlib.sha256(d).digest()).decode()),
        ("SHA1", lambda d: base64.b64encode(hashlib.sha1(d).digest()).decode()),
    ],
)
def test_full_object_checksums(blob, algorithm, value):
    path, data = blob
    spec = {"method": algorithm, "expected": value(data)}
    assert store_mod.verify_file(str(path), "w.bin", entry(data), spec) == algorithm


def test_git_blob_id_matches_git(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"a": 1}\n')
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    spec = {"method": "GIT_BLOB_SHA1", "expected": expected.strip()}
    assert store_mod.verify_file(str(path), "config.json", {"size": 9}, spec) == "GIT_BLOB_SHA1"


def test_mismatch_and_size_mismatch_are_raised(blob):
    path, data = blob
    with pytest.raises(store_mod.ChecksumMismatch, match="w.bin: MD5 mismatch"):
        store_mod.verify_file(str(path), "w.bin", entry(data), {"method": "MD5", "expected": "0" * 32})
    with pytest.raises(store_mod.ChecksumMismatch, match="size mismatch"):
        store_mod.verify_file(str(path), "w.bin", {"size": len(data) + 1}, {"method": "size"})


def test_awscrt_algorithms_are_offered_only_when_importable():
    algorithms = store_mod.computable_algorithms()
    assert {"CRC32", "SHA1", "SHA256"} <= algorithms
    assert ({"CRC32C", "CRC64NVME"} <= algorithms) == store_mod.HAS_AWSCRT


def remote_of(files):
    return {rel: {"key": "m/" + rel, "size": len(data), "etag": hashlib.md5(data).hexdigest(), "checksums": {}}
            for rel, data in files.items()}


def publish(store, files, reuse_dir=None, reuse=None):
    remote = remote_of(files)
    verified, to_verify, to_fetch = store.prepare_staging(remote, reuse_dir, reuse or {})
    for rel in to_fetch:
        target = Path(store.staging) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[rel])
        store.record_verified(rel, remote[rel], "MD5")
        verified[rel] = {"method": "MD5", "mtime_ns": target.stat().st_mtime_ns}
    manifest = mm.new_manifest("s3://b/m/", remote, verified, "2026-01-01T00:00:00Z")
    store.publish(manifest)
    return manifest, to_verify, to_fetch


def test_publish_switch_reuse_and_prune(tmp_path):
    store = store_mod.ModelStore(str(tmp_path / "dest"))
    first, _verified, fetched = publish(store, {"a": b"1", "d/b": b"22"})
    assert sorted(fetched) == ["a", "d/b"]
    assert os.readlink(store.current) == f"versions/{first['version']}"
    current = store.current_version_dir()
    assert store.read_manifest(current)["version"] == first["version"]
    assert store.is_complete(first["version"])

    second, _verified, fetched = publish(store, {"a": b"1", "d/b": b"33"}, reuse_dir=current, reuse={"a": "MD5"})
    assert fetched == ["d/b"]
    new_dir = store.current_version_dir()
    assert os.stat(os.path.join(new_dir, "a")).st_ino == os.stat(os.path.join(current, "a")).st_ino
    assert store.prune(keep=1) == [first["version"]]
    assert os.listdir(store.versions) == [second["version"]]


def test_staging_keeps_verified_and_hands_back_unverified_files(tmp_path):
    store = store_mod.ModelStore(str(tmp_path / "dest"))
    files = {"a": b"aaaa", "b": b"bbbb", "c": b"cccc"}
    remote = remote_of(files)
    store.prepare_staging(remote, None, {})
    staging = Path(store.staging)
    (staging / "a").write_bytes(files["a"])
    store.record_verified("a", remote["a"], "MD5")
    (staging / "b").write_bytes(files["b"])  # landed, not verified when the run stopped
    (staging / "c1234567").write_bytes(b"cc")  # an s5cmd temporary file
    (staging / "old").write_bytes(b"stale")  # no longer in the source

    verified, to_verify, to_fetch = store.prepare_staging(remote, None, {})

    assert list(verified) == ["a"] and to_verify == ["b"] and to_fetch == ["c"]
    assert sorted(p.name for p in staging.iterdir()) == ["a", "b"]


def test_a_foreign_current_is_refused(tmp_path):
    (tmp_path / "dest" / "current").mkdir(parents=True)
    with pytest.raises(store_mod.StoreError, match="not a symlink"):
        store_mod.ModelStore(str(tmp_path / "dest")).current_version_dir()


def test_second_sync_on_the_same_folder_is_refused_while_one_runs(tmp_path):
    first, second = store_mod.ModelStore(str(tmp_path / "d")), store_mod.ModelStore(str(tmp_path / "d"))
    first.lock()
    try:
        with pytest.raises(store_mod.StoreError, match="another model sync"):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()


def test_repairing_the_served_version_never_touches_the_folder_current_points_at(tmp_path):
    store = store_mod.ModelStore(str(tmp_path / "dest"))
    first = publish(store, {"a": b"1", "b": b"2"})[0]
    served = store.current_version_dir()
    held_open = open(os.path.join(served, "b"), "rb")  # a reader (vLLM) mid-load

    second, _verified, fetched = publish(store, {"a": b"1", "b": b"2"}, reuse_dir=served, reuse={"a": "MD5"})

    assert second["version"] == first["version"] and fetched == ["b"]
    assert os.readlink(store.current) == f"versions/{first['version']}-1"
    assert os.path.isdir(served)  # the old folder stays until prune(), after the switch
    assert held_open.read() == b"2"
    held_open.close()
    assert store.prune(keep=1) == [first["version"]]


def test_empty_and_tiny_files_are_verified(tmp_path):
    """Files are hashed through a memory map; an empty file cannot be mapped and is read instead."""
    for data in (b"", b"x"):
        path = tmp_path / "f.bin"
        path.write_bytes(data)
        md5 = hashlib.md5(data).hexdigest()
        spec = mm.choose_verification(entry(data, etag=md5), set())
        assert store_mod.verify_file(str(path), "f.bin", entry(data, etag=md5), spec) == mm.METHOD_MD5


@pytest.mark.parametrize("foreign", ["notes", "backup-2026", "0" * 64])
def test_prune_removes_only_versions_this_collection_wrote(tmp_path, foreign):
    store = store_mod.ModelStore(str(tmp_path / "dest"))
    publish(store, {"a": b"1"})
    other = Path(store.versions) / foreign
    other.mkdir()
    (other / "keep.txt").write_text("an admin's file")
    publish(store, {"a": b"2"})
    assert len(store.prune(keep=1)) == 1
    assert (other / "keep.txt").read_text() == "an admin's file"
