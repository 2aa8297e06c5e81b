"""The model sync planner (plugins/module_utils/_model_sync/manifest.py): pure functions of listings and manifests."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm  # noqa: E402

MIB = 1024 * 1024


def listing(*items):
    return [{"Key": key, "Size": size, "ETag": f'"{etag}"'} for key, size, etag in items]


def local_entry(remote_entry, mtime_ns=111):
    return dict(remote_entry, verified_by="MD5", mtime_ns=mtime_ns)


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://models/llama-3.1-8b", "models", "llama-3.1-8b/"),
        ("s3://models/llama-3.1-8b/", "models", "llama-3.1-8b/"),
        ("s3://my.bucket-1//nested/x", "my.bucket-1", "nested/x/"),
        ("s3://models", "models", ""),
    ],
)
def test_parse_s3_uri(uri, bucket, prefix):
    assert mm.parse_s3_uri(uri) == (bucket, prefix)


@pytest.mark.parametrize("uri", ["models/x", "s3:/models/x", "https://models/x", "s3://UPPER/x", "s3://ab/x", ""])
def test_parse_s3_uri_refuses(uri):
    with pytest.raises(mm.ManifestError):
        mm.parse_s3_uri(uri)


@pytest.mark.parametrize(
    "key",
    ["m/../etc/passwd", "m//x", "m/./x", "m/", "m/a/..", "m/.llmserve-manifest.json", "m/a\nb", "m/a\x00"],
)
def test_relative_path_refuses_keys_that_escape_or_clash(key):
    with pytest.raises(mm.ManifestError):
        mm.relative_path(key, "m/")


def test_build_remote_manifest_skips_folder_markers_and_excluded_files():
    items = listing(
        ("m/", 0, "d41d8cd98f00b204e9800998ecf8427e"),
        ("m/original/", 0, "d41d8cd98f00b204e9800998ecf8427e"),
        ("m/config.json", 10, "a" * 32),
        ("m/original/consolidated.00.pth", 99, "b" * 32),
        ("m/sub/w.safetensors", 20, "c" * 32 + "-2"),
    )
    manifest = mm.build_remote_manifest(items, "m/", exclude=["original/*"])
    assert sorted(manifest) == ["config.json", "sub/w.safetensors"]
    assert manifest["sub/w.safetensors"] == {
        "key": "m/sub/w.safetensors", "size": 20, "etag": "c" * 32 + "-2", "checksums": {}, "checksum_type": None,
    }


def test_build_remote_manifest_refuses_a_file_that_is_also_a_folder():
    with pytest.raises(mm.ManifestError, match="both a file and a folder"):
        mm.build_remote_manifest(listing(("m/a", 1, "a" * 32), ("m/a/b", 1, "b" * 32)), "m/")


def test_rclone_unquoted_and_s3_quoted_etags_compare_equal():
    quoted = mm.build_remote_manifest(listing(("m/x", 1, "ABC" + "a" * 29)), "m/")
    bare = mm.build_remote_manifest([{"Key": "m/x", "Size": 1, "ETag": "abc" + "a" * 29}], "m/")
    assert quoted == bare


class TestPlan:
    remote = mm.build_remote_manifest(
        listing(("m/a", 10, "a" * 32), ("m/b", 20, "b" * 32), ("m/c", 30, "c" * 32)), "m/")

    def stats(self, local):
        return {rel: (entry["size"], entry["mtime_ns"]) for rel, entry in local.items()}

    def test_first_sync_downloads_everything(self):
        plan = mm.plan_sync(self.remote, {}, {})
        assert plan == {"download": ["a", "b", "c"], "recheck": [], "unchanged": [], "delete": [],
                        "download_bytes": 60, "total_bytes": 60}

    def test_nothing_changed_is_a_noop(self):
        local = {rel: local_entry(entry) for rel, entry in self.remote.items()}
        plan = mm.plan_sync(self.remote, local, self.stats(local))
        assert plan["download"] == [] and plan["delete"] == [] and plan["unchanged"] == ["a", "b", "c"]
        assert mm.is_noop(plan, mm.version_id(self.remote), mm.version_id(self.remote))

    def test_changed_added_and_removed_objects(self):
        local = {rel: local_entry(entry) for rel, entry in self.remote.items()}
        local["gone"] = local_entry({"key": "m/gone", "size": 5, "etag": "d" * 32, "checksums": {}})
        remote = dict(self.remote)
        remote["b"] = dict(remote["b"], etag="e" * 32)
        remote["new"] = {"key": "m/new", "size": 7, "etag": "f" * 32, "checksums": {}}
        plan = mm.plan_sync(remote, local, self.stats(local))
        assert plan["download"] == ["b", "new"] and plan["unchanged"] == ["a", "c"] and plan["delete"] == ["gone"]
        assert plan["download_bytes"] == 27

    def test_local_file_resized_or_missing_is_fetched_again(self):
        local = {rel: local_entry(entry) for rel, entry in self.remote.items()}
        stats = self.stats(local)
        stats["a"] = (11, stats["a"][1])  # rewritten with another size, same mtime
        del stats["c"]  # deleted locally
        plan = mm.plan_sync(self.remote, local, stats)
        assert plan["download"] == ["a", "c"] and plan["unchanged"] == ["b"] and plan["recheck"] == []

    def test_local_file_with_another_mtime_is_rechecked_not_fetched(self):
        local = {rel: local_entry(entry) for rel, entry in self.remote.items()}
        stats = self.stats(local)
        stats["a"] = (10, 222)  # same size, mtime changed (touched, or an image that kept whole seconds)
        plan = mm.plan_sync(self.remote, local, stats)
        assert plan["recheck"] == ["a"] and plan["download"] == [] and plan["unchanged"] == ["b", "c"]
        assert plan["download_bytes"] == 0
        assert not mm.is_noop(plan, mm.version_id(self.remote), mm.version_id(self.remote))

    def test_an_mtime_cut_to_whole_seconds_is_the_same_file(self):
        local = {rel: local_entry(dict(entry)) for rel, entry in self.remote.items()}
        for entry in local.values():
            entry["mtime_ns"] = 1_764_900_000_123_456_789
        stats = {rel: (entry["size"], 1_764_900_000_000_000_000) for rel, entry in local.items()}
        stats["c"] = (30, 1_764_899_999_000_000_000)  # whole seconds, but another second: rechecked
        plan = mm.plan_sync(self.remote, local, stats)
        assert plan["unchanged"] == ["a", "b"] and plan["recheck"] == ["c"] and plan["download"] == []

    @pytest.mark.parametrize(("found", "recorded", "same"), [
        (5_000_000_000, 5_000_000_000, True),
        (5_000_000_000, 5_999_999_999, True),
        (5_000_000_001, 5_999_999_999, False),
        (6_000_000_000, 5_999_999_999, False),
        (5_000_000_000, None, False),
        (None, 5_000_000_000, False),
    ])
    def test_same_mtime(self, found, recorded, same):
        assert mm.same_mtime(found, recorded) is same

    def test_a_changed_object_is_fetched_even_when_its_local_mtime_moved(self):
        local = {rel: local_entry(entry) for rel, entry in self.remote.items()}
        stats = self.stats(local)
        stats["a"] = (10, 222)
        remote = dict(self.remote, a=dict(self.remote["a"], etag="f" * 32))
        plan = mm.plan_sync(remote, local, stats)
        assert plan["download"] == ["a"] and plan["recheck"] == []

    def test_a_disagreeing_checksum_counts_as_changed(self):
        local = {rel: local_entry(dict(entry, checksums={"CRC32": "AAAAAA=="})) for rel, entry in self.remote.items()}
        remote = {rel: dict(entry, checksums={"CRC32": "AAAAAA==" if rel != "a" else "BBBBBB=="})
                  for rel, entry in self.remote.items()}
        assert mm.plan_sync(remote, local, self.stats(local))["download"] == ["a"]


def test_version_id_depends_on_content_only():
    a = mm.build_remote_manifest(listing(("m/x", 1, "a" * 32), ("m/y", 2, "b" * 32)), "m/")
    b = mm.build_remote_manifest(listing(("other/y", 2, "b" * 32), ("other/x", 1, "a" * 32)), "other/")
    c = mm.build_remote_manifest(listing(("m/x", 1, "a" * 32), ("m/y", 2, "c" * 32)), "m/")
    assert mm.version_id(a) == mm.version_id(b) != mm.version_id(c)
    assert len(mm.version_id(a)) == 12


@pytest.mark.parametrize(
    ("size", "parts", "expected"),
    [
        (12 * MIB + 3, 3, [5 * MIB, 6 * MIB]),  # boto3 with 5 MiB parts, or 6 MiB parts: both split it in 3
        (512 * MIB, 64, [8 * MIB]),  # aws s3 cp's 8 MiB default
        (512 * MIB, 11, [50 * MIB, 47 * MIB, 48 * MIB, 49 * MIB]),  # s5cmd's 50 MiB default first (47..51 fit)
        (1000, 1, [1000]),
        (3 * MIB, 2, []),  # parts below S3's 5 MiB minimum cannot make a 2-part upload of 3 MiB
    ],
)
def test_multipart_part_sizes(size, parts, expected):
    assert mm.multipart_part_sizes(size, parts) == expected


def test_a_part_size_s3_gave_is_the_only_one_tried():
    entry = {"checksums": {}, "etag": "a" * 32 + "-11", "size": 512 * MIB, "part_size": 51 * MIB}
    assert mm.choose_verification(entry, set()) == {
        "method": "MD5_MULTIPART", "expected": "a" * 32 + "-11", "part_sizes": [51 * MIB]}


@pytest.mark.parametrize(
    ("entry", "computable", "method"),
    [
        ({"checksums": {"CRC64NVME": "x", "SHA256": "y"}, "checksum_type": "FULL_OBJECT", "etag": "a" * 32},
         {"CRC64NVME", "SHA256"}, "CRC64NVME"),
        ({"checksums": {"CRC64NVME": "x", "SHA256": "y"}, "checksum_type": "FULL_OBJECT", "etag": "a" * 32},
         {"SHA256", "CRC32"}, "SHA256"),  # no awscrt: the next algorithm S3 gave
        ({"checksums": {"CRC32": "x-3"}, "checksum_type": "COMPOSITE", "etag": "a" * 32 + "-3", "size": 12 * MIB},
         {"CRC32"}, "MD5_MULTIPART"),  # composite checksums need part boundaries: use the ETag
        ({"checksums": {}, "checksum_type": None, "etag": "a" * 32}, {"CRC32"}, "MD5"),
        ({"checksums": {}, "checksum_type": None, "etag": "opaque-kms-etag"}, {"CRC32"}, "size"),
        ({"checksums": {}, "etag": "b" * 40, "git_blob": "b" * 40}, set(), "GIT_BLOB_SHA1"),
    ],
)
def test_choose_verification_takes_the_cheapest_sound_check(entry, computable, method):
    assert mm.choose_verification(entry, computable)["method"] == method


def test_verify_size_skips_content_checks():
    entry = {"checksums": {"CRC32": "x"}, "checksum_type": "FULL_OBJECT", "etag": "a" * 32}
    assert mm.choose_verification(entry, {"CRC32"}, method="size") == {"method": "size"}


def test_checksums_from_head():
    head = {"ChecksumCRC32": "AAAAAA==", "ChecksumSHA256": "y", "ChecksumType": "FULL_OBJECT", "ETag": '"x"'}
    assert mm.checksums_from_head(head) == ({"CRC32": "AAAAAA==", "SHA256": "y"}, "FULL_OBJECT")
    assert mm.checksums_from_head({"ChecksumCRC32": "AAAAAA==-4"}) == ({"CRC32": "AAAAAA==-4"}, "COMPOSITE")
    assert mm.checksums_from_head({}) == ({}, None)
    # No ChecksumType and no suffix on a multipart object (moto 5.2): ambiguous, so not trusted as whole-file.
    multipart_head = {"ChecksumCRC32": "dZe/Ww==", "ETag": '"e8ee54e3f3c5848a0c51f7d09770dfed-33"'}
    assert mm.checksums_from_head(multipart_head) == ({"CRC32": "dZe/Ww=="}, "COMPOSITE")
    single_head = {"ChecksumCRC32": "dZe/Ww==", "ETag": '"e8ee54e3f3c5848a0c51f7d09770dfed"'}
    assert mm.checksums_from_head(single_head) == ({"CRC32": "dZe/Ww=="}, "FULL_OBJECT")


def test_manifest_round_trip_and_unreadable_manifests():
    remote = mm.build_remote_manifest(listing(("m/x", 1, "a" * 32)), "m/")
    manifest = mm.new_manifest("s3://b/m/", remote, {"x": {"method": "MD5", "mtime_ns": 5}}, "2026-01-01T00:00:00Z")
    assert mm.load_manifest(mm.dump_manifest(manifest)) == manifest
    assert manifest["files"]["x"]["verified_by"] == "MD5" and manifest["version"] == mm.version_id(remote)
    for text in ("", "{", "[]", '{"format": 99, "files": {}}', '{"format": 1, "files": []}'):
        assert mm.load_manifest(text) is None


def test_disk_shortfall():
    assert mm.disk_shortfall(free_bytes=100, needed_bytes=50, reserve_bytes=50) == 0
    assert mm.disk_shortfall(free_bytes=100, needed_bytes=80, reserve_bytes=50) == 30


def test_progress_line():
    line = mm.progress_line({"phase": "download", "bytes_done": 3 * 1024 ** 3, "bytes_total": 12 * 1024 ** 3,
                             "files_done": 1, "files_total": 5, "rate_bytes_per_s": 900e6})
    assert line == "download  25.0% 3.0 GiB/12.0 GiB, 1/5 files, 900 MB/s, ~11 s left"
    assert mm.human_bytes(512) == "512 B" and mm.human_bytes(1536) == "1.5 KiB"
