"""llmserve.aws.s3_model_sync against a real local S3 (rclone serve s3, moto for multipart ETags and IAM), with
the real s5cmd and the role's Python packages.

Each test builds a small model under s3://models/tiny/ and syncs it into a temporary dest.
"""

import base64
import hashlib
import json
import os
import signal
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.support.playbook import ansible_env, run_playbook
from tests.support.wait import still_running, wait_until

BUCKET, PREFIX = "models", "tiny/"
MIB = 1024 * 1024


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def crc64nvme_b64(data: bytes) -> str:
    """CRC-64/NVME, bit by bit (reference implementation; the module uses awscrt). Small inputs only."""
    poly, crc = 0x9A6C9329AC4BC9B5, 0xFFFFFFFFFFFFFFFF  # reflected 0xAD93D23594C93659
    for byte in data:
        crc ^= byte
        for _bit in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return base64.b64encode((crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")).decode()


def test_crc64nvme_reference_matches_the_published_check_value():
    # CRC-64/NVME check value for "123456789" (NVMe spec / reveng catalogue): 0xAE8B14860A799888
    assert base64.b64decode(crc64nvme_b64(b"123456789")).hex() == "ae8b14860a799888"


def model_files() -> dict[str, bytes]:
    rng = __import__("random").Random(5)
    return {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 128}).encode(),
        "tokenizer.json": json.dumps({"model": {"vocab": {str(i): i for i in range(300)}}}).encode(),
        "model-00001-of-00002.safetensors": rng.randbytes(3 * MIB + 17),
        "model-00002-of-00002.safetensors": rng.randbytes(2 * MIB + 5),
        "nested/extra weights [v2].bin": rng.randbytes(64 * 1024),
    }


def upload(s3, files: dict[str, bytes], bucket=BUCKET, prefix=PREFIX, checksum: dict | None = None) -> None:
    client = s3.client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    for rel, data in files.items():
        kwargs = {}
        algorithm = (checksum or {}).get(rel)
        if algorithm == "CRC64NVME":
            kwargs["ChecksumCRC64NVME"] = crc64nvme_b64(data)
        elif algorithm:
            kwargs["ChecksumAlgorithm"] = algorithm
        client.put_object(Bucket=bucket, Key=prefix + rel, Body=data, **kwargs)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".llmserve-manifest.json"
    }


def sync(run_module, s3, dest: Path, check_mode=False, **args):
    return run_module(
        "s3_model_sync", s3.module_args(source=f"s3://{BUCKET}/{PREFIX}", dest=str(dest), **args), check_mode
    )


def test_first_sync_verifies_every_file_and_switches_current(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files, checksum={"config.json": "SHA256", "nested/extra weights [v2].bin": "CRC64NVME"})
    dest = tmp_path / "dest"

    result = sync(run_module, local_s3, dest)

    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["engine"] == "s5cmd"
    assert sorted(result["downloaded"]) == sorted(files)
    current = dest / "current"
    assert current.is_symlink() and os.readlink(current) == f"versions/{result['version']}"
    assert tree(current) == files
    # boto3 uploads with CRC32 by default; the two others were asked for; rclone serves all as S3 does.
    assert result["verification"] == {"CRC32": 3, "SHA256": 1, "CRC64NVME": 1}
    manifest = json.loads((current / ".llmserve-manifest.json").read_text())
    assert manifest["source"] == f"s3://{BUCKET}/{PREFIX}"
    assert manifest["files"]["config.json"]["checksums"]["SHA256"] == base64.b64encode(
        hashlib.sha256(files["config.json"]).digest()).decode()
    assert not (dest / ".model-sync" / "staging").exists()


def test_rerun_with_nothing_changed_downloads_nothing(run_module, local_s3, tmp_path):
    upload(local_s3, model_files())
    dest = tmp_path / "dest"
    first = sync(run_module, local_s3, dest)
    inodes = {p.name: p.stat().st_ino for p in (dest / "current").rglob("*") if p.is_file()}

    again = sync(run_module, local_s3, dest)

    assert again["changed"] is False, again
    assert again["downloaded"] == [] and again["version"] == first["version"]
    assert {p.name: p.stat().st_ino for p in (dest / "current").rglob("*") if p.is_file()} == inodes
    # How fast is the benchmark's business (benchmarks/model_sync prints the unchanged re-sync seconds).
    print(f"unchanged re-sync: module {again['elapsed_s']:.3f} s, wall {again['_wall_s']:.2f} s")


def test_one_changed_object_is_the_only_download(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)
    dest = tmp_path / "dest"
    first = sync(run_module, local_s3, dest)
    unchanged_inode = (dest / "current" / "model-00001-of-00002.safetensors").stat().st_ino
    files["config.json"] = json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 256}).encode()
    upload(local_s3, {"config.json": files["config.json"]})

    result = sync(run_module, local_s3, dest)

    assert result["changed"] is True and result["downloaded"] == ["config.json"]
    assert result["reused"] == len(files) - 1
    assert result["previous_version"] == first["version"] != result["version"]
    assert tree(dest / "current") == files
    # unchanged weights are hard links of the previous version's files, not copies
    assert (dest / "current" / "model-00001-of-00002.safetensors").stat().st_ino == unchanged_inode
    assert result["pruned"] == [first["version"]]
    assert sorted(os.listdir(dest / "versions")) == [result["version"]]


def test_removed_object_is_dropped_without_downloading(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)
    dest = tmp_path / "dest"
    sync(run_module, local_s3, dest)
    local_s3.client().delete_object(Bucket=BUCKET, Key=PREFIX + "tokenizer.json")
    del files["tokenizer.json"]

    result = sync(run_module, local_s3, dest)

    assert result["changed"] is True
    assert result["downloaded"] == [] and result["deleted"] == ["tokenizer.json"]
    assert tree(dest / "current") == files


def test_locally_damaged_file_is_fetched_again(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)
    dest = tmp_path / "dest"
    sync(run_module, local_s3, dest)
    (dest / "current" / "tokenizer.json").write_bytes(b"{}")

    result = sync(run_module, local_s3, dest)

    assert result["changed"] is True and result["downloaded"] == ["tokenizer.json"]
    assert tree(dest / "current") == files


def set_mtimes(folder: Path, change) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, change(stat.st_mtime_ns)))


def test_files_whose_mtime_moved_are_verified_again_not_downloaded(run_module, local_s3, tmp_path):
    """Mtimes cut to whole seconds (an image or copy that keeps seconds only: the bench's docker commit, tar) are
    the same files: nothing to do. Mtimes moved otherwise (a copy that set new ones, a touch): the content is
    checked in place against S3's checksums, nothing is downloaded, and a changed file of the same size is
    fetched."""
    files = model_files()
    upload(local_s3, files, checksum={"model-00001-of-00002.safetensors": "CRC64NVME"})
    dest = tmp_path / "dest"
    first = sync(run_module, local_s3, dest)
    set_mtimes(dest / "current", lambda ns: ns - ns % 10**9)
    truncated = sync(run_module, local_s3, dest)
    assert truncated["changed"] is False and truncated["rechecked"] == 0, truncated
    set_mtimes(dest / "current", lambda ns: ns - 10**9)
    shard = dest / "current" / "model-00002-of-00002.safetensors"
    inode = shard.stat().st_ino
    damaged = dest / "current" / "tokenizer.json"
    damaged.write_bytes(damaged.read_bytes().replace(b"1", b"7", 1))  # same size, other bytes

    result = sync(run_module, local_s3, dest)

    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["version"] == first["version"]
    assert result["rechecked"] == len(files) and result["downloaded"] == ["tokenizer.json"], result
    assert result["verification"]["CRC64NVME"] == 1
    assert tree(dest / "current") == files
    assert shard.stat().st_ino == inode  # the repaired version links the same bytes: nothing was copied
    assert os.readlink(dest / "current") == f"versions/{first['version']}-1"
    assert sorted(os.listdir(dest / "versions")) == [f"{first['version']}-1"]
    again = sync(run_module, local_s3, dest)
    assert again["changed"] is False and again["rechecked"] == 0, again


def test_check_mode_plans_and_changes_nothing(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)
    dest = tmp_path / "dest"

    result = sync(run_module, local_s3, dest, check_mode=True)

    assert result["changed"] is True
    assert sorted(result["downloaded"]) == sorted(files)
    assert result["downloaded_bytes"] == sum(len(v) for v in files.values())
    assert not dest.exists()


def test_interrupted_transfer_resumes(run_module, rclone_factory, tmp_path):
    # A bandwidth-limited server makes the interruption land mid-transfer every time.
    s3 = rclone_factory("slow", "--bwlimit", "8M")
    rng = __import__("random").Random(7)
    files = {f"shard-{i}.safetensors": rng.randbytes(4 * MIB) for i in range(5)}
    upload(s3, files)
    dest = tmp_path / "dest"
    args = s3.module_args(source=f"s3://{BUCKET}/{PREFIX}", dest=str(dest), workers=1, concurrency=2, part_size_mib=5)
    proc = subprocess.Popen(
        run_module.command("s3_model_sync", args), env=run_module.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    journal = dest / ".model-sync" / "verified.jsonl"
    wait_until(lambda: (journal.exists() and journal.read_text().count("\n") >= 2)
               or still_running(proc, "the sync", lambda: str(proc.communicate())),
               60, "two verified files in the journal", interval_s=0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the module and s5cmd, as a lost SSH session or a reboot would
    proc.wait(10)
    assert not (dest / "current").exists()
    verified_before = journal.read_text().count("\n")
    assert 2 <= verified_before < len(files)

    result = run_module("s3_model_sync", args)

    assert result.get("failed") is not True, result
    assert result["resumed"] >= verified_before
    assert len(result["downloaded"]) == len(files) - result["resumed"]
    assert tree(dest / "current") == files
    assert not (dest / ".model-sync" / "staging").exists()


def test_checksum_mismatch_is_refused_and_current_kept(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)
    dest = tmp_path / "dest"
    first = sync(run_module, local_s3, dest)
    # New content, then bytes on the server that no longer match what it advertises (same size and mtime, so the
    # server keeps serving the stored CRC32 and ETag): corruption at rest, as a faulty disk or cache would cause.
    files["model-00002-of-00002.safetensors"] = os.urandom(2 * MIB + 5)
    upload(local_s3, {"model-00002-of-00002.safetensors": files["model-00002-of-00002.safetensors"]})
    served = local_s3.data_dir / BUCKET / PREFIX / "model-00002-of-00002.safetensors"
    stat = served.stat()
    with open(served, "r+b") as handle:
        handle.seek(MIB)
        handle.write(b"\x00" * 4096)
    os.utime(served, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    result = sync(run_module, local_s3, dest)

    assert result.get("failed") is True
    assert "checksum mismatch" in result["msg"] and "model-00002-of-00002.safetensors" in result["msg"]
    assert "CRC32" in result["msg"] and "current model is untouched" in result["msg"]
    assert os.readlink(dest / "current") == f"versions/{first['version']}"
    assert tree(dest / "current")["model-00002-of-00002.safetensors"] != files["model-00002-of-00002.safetensors"]
    staged = dest / ".model-sync" / "staging" / "model-00002-of-00002.safetensors"
    assert not staged.exists()


def test_empty_prefix_is_refused(run_module, local_s3, tmp_path):
    upload(local_s3, {"other-model/config.json": b"{}"}, prefix="")

    result = sync(run_module, local_s3, tmp_path / "dest")

    assert result.get("failed") is True
    assert "holds no objects" in result["msg"] and "s3:ListBucket" in result["msg"]
    assert not (tmp_path / "dest" / "current").exists()


def test_missing_bucket_is_refused(run_module, local_s3, tmp_path):
    args = local_s3.module_args(source="s3://no-such-bucket/x/", dest=str(tmp_path / "d"))

    result = run_module("s3_model_sync", args)

    assert result.get("failed") is True
    assert "bucket 'no-such-bucket' does not exist" in result["msg"]


@pytest.mark.parametrize(
    ("override", "code"),
    [({"access_key": "AKIAWRONGWRONGWRONG"}, "InvalidAccessKeyId"), ({"secret_key": "wrong"}, "SignatureDoesNotMatch")],
)
def test_wrong_credentials_are_refused(run_module, local_s3, tmp_path, override, code):
    upload(local_s3, model_files())
    args = local_s3.module_args(source=f"s3://{BUCKET}/{PREFIX}", dest=str(tmp_path / "dest"))
    args.update(override)

    result = run_module("s3_model_sync", args)

    assert result.get("failed") is True
    assert f"S3 refused the credentials ({code})" in result["msg"]
    assert local_s3.secret_key not in json.dumps(result)


def test_disk_too_small_is_refused_before_downloading(run_module, local_s3, tmp_path):
    upload(local_s3, model_files())
    dest = tmp_path / "dest"
    free_mib = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize // MIB

    result = sync(run_module, local_s3, dest, min_free_mib=free_mib)

    assert result.get("failed") is True
    assert "not enough disk space" in result["msg"] and "reserve" in result["msg"]
    staging = dest / ".model-sync" / "staging"
    assert not staging.exists() or not any(p.stat().st_nlink == 1 for p in staging.rglob("*") if p.is_file())


def test_boto3_engine_gives_the_same_model(run_module, local_s3, tmp_path):
    files = model_files()
    upload(local_s3, files)

    result = sync(run_module, local_s3, tmp_path / "dest", engine="boto3")

    assert result.get("failed") is not True, result
    assert result["engine"] == "boto3"
    assert tree(tmp_path / "dest" / "current") == files
    assert set(result["verification"]) == {"CRC32"}


def test_unsafe_keys_are_refused(run_module, local_s3, tmp_path):
    upload(local_s3, {"config.json": b"{}", ".llmserve-manifest.json": b"{}"})

    result = sync(run_module, local_s3, tmp_path / "dest")

    assert result.get("failed") is True and "clashes with the manifest" in result["msg"]


@pytest.mark.parametrize(
    ("user", "action", "resource"),
    [
        ("nobody", "s3:ListBucket", "arn:aws:s3:::models"),
        ("lister", "s3:GetObject", "arn:aws:s3:::models/tiny/config.json"),
    ],
)
def test_access_denied_names_the_iam_action(run_module, moto_with_iam, tmp_path, user, action, resource):
    endpoint, users = moto_with_iam
    access_key, secret_key = users[user]
    args = dict(source="s3://models/tiny/", dest=str(tmp_path / "dest"), endpoint_url=endpoint, region="us-east-1",
                access_key=access_key, secret_key=secret_key, progress_interval=0, min_free_mib=0)

    result = run_module("s3_model_sync", args)

    assert result.get("failed") is True
    assert "access denied" in result["msg"] and f"the role needs {action} on {resource}" in result["msg"], result["msg"]
    assert not (tmp_path / "dest" / "current").exists()


def test_multipart_etag_is_verified(run_module, aws_clean, tmp_path):
    """moto gives multipart uploads S3's "<md5 of part md5s>-<parts>" ETag (rclone does not)."""
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    # No upload checksum, so the ETag is all there is to verify against (as for objects uploaded before 2025).
    client = aws_clean.client("s3", config=Config(request_checksum_calculation="when_required"))
    client.create_bucket(Bucket=BUCKET)
    data = os.urandom(12 * MIB + 3)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    client.upload_file(str(source), BUCKET, PREFIX + "weights.bin",
                       Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    client.put_object(Bucket=BUCKET, Key=PREFIX + "config.json", Body=b"{}")
    assert client.head_object(Bucket=BUCKET, Key=PREFIX + "weights.bin")["ETag"].endswith('-3"')

    result = run_module("s3_model_sync", dict(
        source=f"s3://{BUCKET}/{PREFIX}", dest=str(tmp_path / "dest"), endpoint_url=aws_clean.endpoint_url,
        region=aws_clean.region, access_key="testing", secret_key="testing", progress_interval=0, min_free_mib=0))

    assert result.get("failed") is not True, result
    assert result["verification"] == {"MD5_MULTIPART": 1, "MD5": 1}
    assert (tmp_path / "dest" / "current" / "weights.bin").read_bytes() == data


def test_play_output_shows_progress_while_downloading(s3_tools, rclone_factory, tmp_path):
    """Through ansible-playbook: the action plugin runs the module as an async job and prints progress lines."""
    s3 = rclone_factory("slow", "--bwlimit", "2M")  # 12 MiB take ~6 s: several progress lines even under load
    rng = __import__("random").Random(3)
    upload(s3, {f"shard-{i}.safetensors": rng.randbytes(4 * MIB) for i in range(3)})
    dest = tmp_path / "dest"
    playbook = tmp_path / "sync.yml"
    task = s3.module_args(source=f"s3://{BUCKET}/{PREFIX}", dest=str(dest), progress_interval=1)
    playbook.write_text(json.dumps([{
        "name": "Sync", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Sync the model", "llmserve.aws.s3_model_sync": task, "register": "synced"},
                  {"name": "Show", "ansible.builtin.debug": {"msg": "changed={{ synced.changed }}"}}],
    }]))
    env = ansible_env(drop_prefixes=("AWS_",))
    arguments = ("-e", f"ansible_python_interpreter={s3_tools / 'bin' / 'python'}", str(playbook))

    first = run_playbook(*arguments, env=env)
    again = run_playbook(*arguments, env=env)

    assert first.returncode == 0, first.stdout + first.stderr
    lines = [line for line in first.stdout.splitlines() if "s3_model_sync: download" in line]
    assert len(lines) >= 2, first.stdout
    percents = [float(line.split("download")[1].split("%")[0]) for line in lines]
    assert percents == sorted(percents) and percents[0] < 100.0, first.stdout
    assert "s3_model_sync: done, 3 file(s), 12.0 MiB at " in first.stdout, first.stdout
    assert "changed=True" in first.stdout and "changed=False" in again.stdout, first.stdout + again.stdout
    assert "s3_model_sync:" not in again.stdout, again.stdout
    # the async job's result file is cleaned up
    assert not [p for p in Path.home().glob(".ansible_async/*") if str(dest) in p.read_text(errors="ignore")]
