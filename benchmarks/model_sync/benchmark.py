"""Benchmark: this collection's S3 model sync against s5cmd alone and `aws s3 sync`, on a local S3.

4 x 512 MiB random shards served by `rclone serve s3` on 127.0.0.1 (FIELD-NOTES: the fastest local S3 here).
Each round downloads the prefix into an empty folder with each tool, in turn (rounds interleave the tools, so
drift from other load hits them alike); the table shows medians of the rounds in MB/s (10^6 bytes/s), ratios, and
the CPU seconds each contender's processes used per GiB (user + system of the tool and every process it waited
for; the S3 server's own CPU is not counted).

Two rounds of that: CPU-bound (the server unthrottled, so the 2 cores shared by server and client set the pace)
and network-bound (a second rclone with --bwlimit at --link-rate-gbit, 2.5 Gbit/s by default: an instance's link
to S3, with cores to spare; the CRC64NVME set is uploaded through it too, so it serves that checksum as S3 does).

- "model_sync": the llmserve.aws.s3_model_sync module as the role runs it (its venv's Python, role defaults):
  list, HeadObject, s5cmd transfer, verification of every file, manifest, atomic switch. Two object sets:
  objects carrying S3's CRC64NVME checksum (what S3 stores for new objects since 2025) and objects with only an
  MD5 ETag (older uploads, or uploaders that send no checksum).
- "s5cmd": `s5cmd cp 's3://bench/model/*' DEST/` with s5cmd's defaults; no verification.
- "aws s3 sync": AWS CLI v1 defaults.
Then the unchanged re-sync: the module again on the synced folder (nothing to download).

Not part of `make test`. Run: python3 benchmarks/model_sync/benchmark.py [--rounds 3] [--workdir DIR] [--baseline REF]
It builds what it needs (tests/bench/s3_tools.sh, an awscli venv in the bench cache) and removes its shards (about
6 GiB on disk with the copies, 8 GiB at the peak with a download) when it ends.
"""

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LLMSERVE_CACHE", Path.home() / ".cache" / "llmserve-aws"))
SHARDS, SHARD_MIB = 4, 512
ACCESS_KEY, SECRET_KEY, REGION = "BENCHMODELSYNC", "benchmark-model-sync-secret", "us-east-1"
BUCKET = "bench"
MIB = 1024 * 1024
RUN_TIMEOUT_S = 600


def log(message):
    print(message, file=sys.stderr, flush=True)


def s3_tools() -> Path:
    out = subprocess.run([str(REPO / "tests" / "bench" / "s3_tools.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def awscli_venv(python: str = sys.executable, name: str = "awscli") -> Path:
    """AWS CLI v1 (requirements/awscli-bench.txt) in a cached venv built with ``python``."""
    requirements = REPO / "requirements" / "awscli-bench.txt"
    import hashlib

    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = CACHE / f"{name}-{digest}"
    if not (venv / ".complete").exists():
        log(f"building {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)], check=True)
        (venv / ".complete").touch()
    return venv


def module_path(root: Path, git_ref: str | None = None) -> Path:
    """PYTHONPATH with ansible-core and the collections only (as in the integration tests). With ``git_ref``, this
    collection's plugins as they were at that commit (to compare a change with its base in the same run)."""
    import ansible
    import ansible_collections.amazon.aws

    (root / "ansible_collections" / "llmserve").mkdir(parents=True)
    (root / "ansible").symlink_to(Path(ansible.__file__).parent)
    (root / "ansible_collections" / "amazon").symlink_to(Path(list(ansible_collections.amazon.aws.__path__)[0]).parent)
    collection = root / "ansible_collections" / "llmserve" / "aws"
    if git_ref is None:
        collection.symlink_to(REPO)
        return root
    collection.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", git_ref, "plugins"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(collection)], input=archive, check=True)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_rclone(tools: Path, data: Path, log_file: Path, link_rate_gbit: float | None = None):
    """rclone serve s3 on DATA; with link_rate_gbit, capped at that rate (--bwlimit, in MiB/s), the stand-in for
    an instance's network link to S3."""
    port = free_port()
    limit = ["--bwlimit", f"{link_rate_gbit * 1e9 / 8 / MIB:.0f}M"] if link_rate_gbit else []
    proc = subprocess.Popen(
        [str(tools / "bin" / "rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
         f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null",
         # rclone computes each file's MD5 (its ETag) on first LIST/HEAD and keeps it with the directory cache
         # (5 min by default): keep it for the whole run, so no contender pays for hashing on the server side.
         "--dir-cache-time", "2h", *limit, str(data)],
        stdout=open(log_file, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("rclone serve s3 did not start: " + log_file.read_text()[-2000:])


def write_shards(data: Path) -> Path:
    """model-md5/: shards written straight into the served folder (only an MD5 ETag); returns that folder."""
    folder = data / BUCKET / "model-md5"
    folder.mkdir(parents=True)
    for index in range(1, SHARDS + 1):
        with open(folder / f"shard-{index}.safetensors", "wb") as handle:
            for _chunk in range(SHARD_MIB // 64):
                handle.write(os.urandom(64 * MIB))
    return folder


def upload_crc64_copy(tools: Path, endpoint: str, folder: Path, workdir: Path, prefix: str = "model-crc64/") -> None:
    """PREFIX: the files of FOLDER (by their paths under it) uploaded through ENDPOINT's S3 API with a CRC64NVME
    checksum, as S3 stores every new upload since 2025 and as that rclone keeps it (in its memory)."""
    script = workdir / "upload.py"
    script.write_text(
        "import sys, boto3\n"
        "from boto3.s3.transfer import TransferConfig\n"
        f"c = boto3.client('s3', endpoint_url={endpoint!r}, region_name={REGION!r}, aws_access_key_id={ACCESS_KEY!r},"
        f" aws_secret_access_key={SECRET_KEY!r})\n"
        # one PUT per shard: rclone keeps the full-object checksum of a PUT, not of a multipart upload
        "cfg = TransferConfig(multipart_threshold=4 * 1024 ** 3)\n"
        "root, prefix = sys.argv[1], sys.argv[2]\n"
        "for name in sys.argv[3:]:\n"
        f"    c.upload_file(root + '/' + name, {BUCKET!r}, prefix + name,"
        " ExtraArgs={'ChecksumAlgorithm': 'CRC64NVME'}, Config=cfg)\n"
        f"    h = c.head_object(Bucket={BUCKET!r}, Key=prefix + name, ChecksumMode='ENABLED')\n"
        "    assert h.get('ChecksumCRC64NVME') and h.get('ChecksumType') in (None, 'FULL_OBJECT'), h\n"
    )
    names = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    subprocess.run([str(tools / "bin" / "python"), str(script), str(folder), prefix, *names], check=True)


def linked_copy(folder: Path, data: Path) -> None:
    """FOLDER's files hard-linked under another served folder DATA (same bucket and prefix), no bytes copied."""
    target = data / folder.relative_to(folder.parents[1])
    target.mkdir(parents=True)
    for path in folder.iterdir():
        os.link(path, target / path.name)


def warm_etags(tools: Path, endpoint: str, workdir: Path) -> None:
    """LIST and HEAD every object once, so rclone has computed and cached every MD5 ETag before timing."""
    script = workdir / "warm.py"
    script.write_text(
        "import boto3\n"
        f"c = boto3.client('s3', endpoint_url={endpoint!r}, region_name={REGION!r}, aws_access_key_id={ACCESS_KEY!r},"
        f" aws_secret_access_key={SECRET_KEY!r})\n"
        f"for o in c.list_objects_v2(Bucket={BUCKET!r})['Contents']:\n"
        f"    c.head_object(Bucket={BUCKET!r}, Key=o['Key'])\n"
    )
    subprocess.run([str(tools / "bin" / "python"), str(script)], check=True)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command, env, expect_files=None, dest=None):
    """(wall seconds, stdout, CPU seconds of the command and every process it waited for)."""
    subprocess.run(["sync"], check=True)
    cpu_before = children_cpu_s()
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    elapsed = time.monotonic() - started
    cpu = children_cpu_s() - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    if dest is not None and expect_files is not None:
        got = sorted(p.name for p in Path(dest).rglob("*.safetensors"))
        if len(got) != expect_files:
            raise RuntimeError(f"{command[0]} delivered {got}")
    return elapsed, proc.stdout, cpu


def print_table(title, total_bytes, times, cpus, rounds):
    """Median MB/s, ratios to s5cmd and aws, CPU-s per GiB; returns {name: (MB/s, CPU-s per GiB)}."""
    gib = total_bytes / (1024 ** 3)
    figures = {name: (total_bytes / 1e6 / statistics.median(t), statistics.median(cpus[name]) / gib)
               for name, t in times.items()}
    s5, awsv = figures["s5cmd defaults"][0], figures["aws s3 sync defaults"][0]
    print(f"\n{title}, median of {rounds}")
    print(f"{'contender':34} {'MB/s':>7} {'vs s5cmd':>9} {'vs aws':>7} {'CPU-s/GiB':>10}   runs (s)")
    for name, (speed, cpu_per_gib) in figures.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:34} {speed:7.0f} {speed / s5:8.2f}x {speed / awsv:6.2f}x {cpu_per_gib:10.2f}   {runs}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--baseline", metavar="GIT_REF", default=None,
                        help="also run the module as of this commit (e.g. HEAD), interleaved with the others")
    parser.add_argument("--link-rate-gbit", type=float, default=2.5,
                        help="the network-bound round's link rate (rclone --bwlimit); 0 skips that round")
    args = parser.parse_args()

    tools, aws = s3_tools(), awscli_venv()
    workdir = Path(tempfile.mkdtemp(prefix="benchmark-model-sync-", dir=args.workdir))
    data, downloads = workdir / "s3", workdir / "dest"
    data.mkdir()
    servers = []
    rclone, endpoint = start_rclone(tools, data, workdir / "rclone.log")
    servers.append(rclone)
    total_bytes = SHARDS * SHARD_MIB * MIB
    results = {}
    load_at_start = os.getloadavg()
    try:
        log(f"writing {SHARDS} x {SHARD_MIB} MiB shards and uploading a CRC64NVME copy")
        shards = write_shards(data)
        upload_crc64_copy(tools, endpoint, shards, workdir)
        conditions = {f"CPU-bound: {SHARDS} x {SHARD_MIB} MiB on rclone serve s3 (127.0.0.1), "
                      f"{os.cpu_count()} CPU cores shared by server and client": endpoint}
        if args.link_rate_gbit:
            # A server of its own, on its own folder: the MD5 shards linked in, the CRC64NVME copy uploaded through
            # it (rclone keeps a PUT's checksum in the memory of the process that took the PUT).
            limited_data = workdir / "s3-limited"
            linked_copy(shards, limited_data)
            limited, limited_endpoint = start_rclone(tools, limited_data, workdir / "rclone-limited.log",
                                                     args.link_rate_gbit)
            servers.append(limited)
            log("uploading the CRC64NVME copy through the capped server too")
            upload_crc64_copy(tools, limited_endpoint, shards, workdir)
            warm_etags(tools, limited_endpoint, workdir)
            conditions[f"network-bound: the same, the server capped at {args.link_rate_gbit:g} Gbit/s "
                       f"(rclone --bwlimit)"] = limited_endpoint
        pythonpath = module_path(workdir / "pythonpath")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        cli_env = dict(base_env, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION,
                       AWS_DEFAULT_REGION=REGION)
        module_env = dict(base_env, PYTHONPATH=str(pythonpath))
        baseline_env = None
        if args.baseline:
            baseline_env = dict(base_env, PYTHONPATH=str(module_path(workdir / "baseline-path", args.baseline)))

        def module_command(prefix, dest, endpoint):
            module_args = {"source": f"s3://{BUCKET}/{prefix}/", "dest": str(dest), "endpoint_url": endpoint,
                           "region": REGION, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                           "progress_interval": 0, "min_free_mib": 0}
            module = "ansible_collections.llmserve.aws.plugins.modules.s3_model_sync"
            return [str(tools / "bin" / "python"), "-m", module, json.dumps({"ANSIBLE_MODULE_ARGS": module_args})]

        contenders = {
            "model_sync (CRC64NVME objects)": lambda dest, url: module_command("model-crc64", dest, url),
            "model_sync (MD5-ETag objects)": lambda dest, url: module_command("model-md5", dest, url),
        }
        envs = dict.fromkeys(contenders, module_env)
        if baseline_env:
            for name, prefix in (("CRC64NVME", "model-crc64"), ("MD5-ETag", "model-md5")):
                label = f"{args.baseline[:12]} ({name} objects)"
                contenders[label] = lambda dest, url, prefix=prefix: module_command(prefix, dest, url)
                envs[label] = baseline_env
        contenders.update({
            "s5cmd defaults": lambda dest, url: [str(tools / "bin" / "s5cmd"), "--endpoint-url", url, "cp",
                                                 f"s3://{BUCKET}/model-md5/*", f"{dest}/"],
            "aws s3 sync defaults": lambda dest, url: [str(aws / "bin" / "aws"), "--endpoint-url", url, "s3", "sync",
                                                       f"s3://{BUCKET}/model-md5/", f"{dest}/", "--only-show-errors"],
        })
        warm_etags(tools, endpoint, workdir)
        measured = {}
        for condition, url in conditions.items():
            times = {name: [] for name in contenders}
            cpus = {name: [] for name in contenders}
            for round_index in range(1, args.rounds + 1):
                for name, command in contenders.items():
                    dest = downloads / name.split()[0]
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir(parents=True)
                    env = envs.get(name, cli_env)
                    elapsed, out, cpu = timed(command(dest, url), env, SHARDS, dest)
                    if name in envs:
                        result = json.loads(out)
                        assert result["changed"] and len(result["downloaded"]) == SHARDS, result
                        log(f"{condition.split(':')[0]} round {round_index} {name}: {elapsed:.2f} s, {cpu:.2f} CPU-s "
                            f"(verified by {result['verification']}, module {result['elapsed_s']:.2f} s)")
                    else:
                        log(f"{condition.split(':')[0]} round {round_index} {name}: {elapsed:.2f} s, {cpu:.2f} CPU-s")
                    times[name].append(elapsed)
                    cpus[name].append(cpu)
                    shutil.rmtree(dest, ignore_errors=True)
            measured[condition] = (times, cpus)

        # Unchanged re-sync: sync once, then again with nothing to do.
        crc = contenders["model_sync (CRC64NVME objects)"]
        dest = downloads / "resync"
        timed(crc(dest, endpoint), module_env)
        resync = []
        for _round in range(args.rounds):
            elapsed, out, _cpu = timed(crc(dest, endpoint), module_env)
            result = json.loads(out)
            assert result["changed"] is False and result["downloaded"] == [], result
            resync.append((elapsed, result["elapsed_s"]))
        aws_resync = []
        timed(contenders["aws s3 sync defaults"](downloads / "aws-resync", endpoint), cli_env)
        for _round in range(args.rounds):
            aws_resync.append(timed(contenders["aws s3 sync defaults"](downloads / "aws-resync", endpoint), cli_env)[0])

        for condition, (times, cpus) in measured.items():
            figures = print_table(condition, total_bytes, times, cpus, args.rounds)
            results[condition] = {"mb_s": {n: f[0] for n, f in figures.items()},
                                  "cpu_s_per_gib": {n: f[1] for n, f in figures.items()}, "times_s": times,
                                  "cpu_s": cpus}
        wall = statistics.median(r[0] for r in resync)
        inner = statistics.median(r[1] for r in resync)
        print(f"\nunchanged re-sync, model_sync: {wall:.2f} s wall (Python start included), module {inner:.3f} s; "
              f"aws s3 sync: {statistics.median(aws_resync):.2f} s")
        print("load average (1, 5, 15 min): %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end"
              % (load_at_start + os.getloadavg()))
        results.update({"resync_wall_s": wall, "resync_module_s": inner, "aws_resync_s": statistics.median(aws_resync),
                        "rounds": args.rounds, "cpus": os.cpu_count(),
                        "load_average": {"start": load_at_start, "end": os.getloadavg()}})
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
