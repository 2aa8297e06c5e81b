"""Benchmark: cold start of a vLLM host, from host start to the first token, by three paths side by side.

For each model (SmolLM2-135M, 270 MB, and a generated Llama of about 1.9 GB), on the same bench host image, the
same vLLM and the same local S3 (`rclone serve s3` on 127.0.0.1, as benchmarks/model_sync):

- (a) manual, the seed's way: a fresh host; once it has booted, `aws s3 sync` the prefix to the instance store,
  then start vLLM by hand with the flags the role would give it.
- (b) boot path: a new host from the image of a converged host (the bench's AMI: `docker commit`, as
  playbooks/bake_image.yml + the fleet launcher make it), with an empty instance store: llmserve-model-sync.service
  syncs, then vllm.service starts, with no Ansible run.
- (c) baked with the weights: the same, from an image that has the weights on its disk (an EBS root, or
  bake_image_include_weights): the boot sync finds them verified and downloads nothing.
- (d) vLLM's runai_streamer load format, streaming the safetensors from the local S3 into vLLM (the runai wheels
  in a folder of their own on vLLM's path), when --runai; see the README for what it gives on CPU.

Each phase is timed from outside the host: t0 when `docker run` is called; "sync" when the weights are on disk
(a: `aws s3 sync` returned; b, c: the sync unit's exit, systemd's monotonic clock, the same clock as this
process); "load" when vLLM's /health answers; "first token" when a completion of max_tokens=1 returned. The
ratios are (b)/(a), (c)/(a) of the totals. Goals (issue 14): b <= 0.7 a, c <= 0.4 a.

Not part of `make test`. Run: make bench-cold-start (BENCH_ARGS="--models smollm2 --json out.json --runai").
It needs the bench (docker, the host image, the vLLM venv, the wheelhouse); it removes its containers and images.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.model_sync.benchmark import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, free_port, s3_tools  # noqa: E402
from benchmarks.model_sync.benchmark import awscli_venv, start_rclone, upload_crc64_copy  # noqa: E402
from tests.bench.fleet_launcher import INSTANCE_STORE_MOUNT, host_run_options  # noqa: E402

CACHE = Path(os.environ.get("LLMSERVE_CACHE", Path.home() / ".cache" / "llmserve-aws"))
NAME = "llmserve-coldstart"
BASE_PYTHON = "/usr/bin/python3.11"  # as tests/bench/cache.sh: venvs built with it also run inside the bench host
BIG_MODEL = ["--hidden-size", "2048", "--layers", "20", "--intermediate-size", "5632", "--no-smoke-test"]
START_TIMEOUT_S = 1200.0
POLL_S = 0.25


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(*command, check=True, timeout=1800, **kwargs):
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed ({completed.returncode}):\n"
                           f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return completed.stdout


def docker(*args, check=True, timeout=600):
    return run("docker", *args, check=check, timeout=timeout)


def runai_lib() -> Path:
    """The runai model streamer wheels (with S3) in a folder of their own in the bench cache, which the host sees at
    the same path, put on vLLM's PYTHONPATH for (d)."""
    target = CACHE / "runai-streamer-0.17.1-botocore-deps"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    # torch and numpy come from vLLM's venv; the rest (the S3 plugin pulls config files with boto3) goes here.
    run(str(Path(os.environ["LLMSERVE_VLLM_VENV"]) / "bin" / "pip"), "install", "-q", "--no-deps", "--target",
        str(target), "runai-model-streamer==0.17.1", "runai-model-streamer-s3==0.17.1", "humanize==4.12.3",
        "boto3==1.44.8", "botocore==1.44.8", "s3transfer==0.19.3",
        # botocore's own dependencies (with --no-deps nothing brings them; vLLM's venv has urllib3)
        "python-dateutil==2.9.0.post0", "six==1.17.0", "jmespath==1.1.0")
    (target / ".complete").touch()
    return target


def host_options(instance_store: bool) -> tuple[list[str], str, list[str]]:
    options, image, command = host_run_options()
    tmpfs = ["--tmpfs", f"{INSTANCE_STORE_MOUNT}:rw,mode=0755"] if instance_store else []
    return options + tmpfs, image, command


def start_host(image: str | None, instance_store: bool) -> float:
    """docker run of the bench host from IMAGE (default: the bench image); returns t0 (monotonic)."""
    options, bench_image, command = host_options(instance_store)
    docker("rm", "--force", NAME, check=False)
    t0 = time.monotonic()
    docker("run", "--detach", "--name", NAME, "--label", "llmserve.bench.coldstart=1", *options, image or bench_image,
           *command)
    return t0


def wait(what, check, timeout=START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL_S)
    journal = docker("exec", NAME, "journalctl", "--no-pager", "-n", "60", check=False)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s; the host's journal:\n{journal}")


def booted() -> bool:
    state = docker("exec", NAME, "systemctl", "is-system-running", check=False).strip()
    return state in ("running", "degraded", "starting") and state != ""


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def first_token(port: int, model: str) -> float:
    body = json.dumps({"model": model, "prompt": "The capital of France is", "max_tokens": 1}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        json.load(answer)["choices"][0]["text"]
    return time.monotonic()


def unit_exit(unit: str) -> float | None:
    """The unit's main process exit on CLOCK_MONOTONIC (systemd's and this process's clock), None until then."""
    value = docker("exec", NAME, "systemctl", "show", unit, "-p", "ExecMainExitTimestampMonotonic", "--value",
                   check=False).strip()
    return int(value) / 1e6 if value.isdigit() and int(value) > 0 else None


def converge(model_dir: Path, endpoint: str, port: int, served: str) -> tuple[str, list[str], dict[str, str]]:
    """A converged host (weights on its root disk), committed as an image; vLLM's argv and environment."""
    start_host(None, instance_store=False)
    wait("the host to boot", booted, 120)
    extra = {"model_sync_source": f"s3://{BUCKET}/{model_dir.name}", "model_sync_endpoint_url": endpoint,
             "model_sync_region": REGION, "model_sync_aws_access_key": ACCESS_KEY,
             "model_sync_aws_secret_key": SECRET_KEY, "model_sync_dest": f"{INSTANCE_STORE_MOUNT}/models/{model_dir.name}",
             "vllm_service_port": port, "vllm_service_served_model_name": served}
    # The interpreter as configuration, not an extra var: the roles' tasks that run in their venvs set their own.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PIPELINING="1", ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")
    log(f"converging a host for {model_dir.name} (model_sync + vllm_service)")
    run(str(Path(sys.executable).parent / "ansible-playbook"), "-i", f"{NAME},", "-c", "community.docker.docker",
        "-e", json.dumps(extra),
        str(Path(__file__).parent / "converge.yml"), env=env, timeout=1800)
    argv = docker("exec", NAME, "systemctl", "show", "vllm", "-p", "ExecStart", "--value")
    argv = argv.split("argv[]=", 1)[1].split(" ; ", 1)[0].split()
    environment = dict(item.split("=", 1) for item in
                       docker("exec", NAME, "systemctl", "show", "vllm", "-p", "Environment", "--value").split())
    image = f"{NAME}:{model_dir.name.lower()}"
    docker("commit", "--change", "LABEL llmserve.bench.coldstart=1", NAME, image)
    docker("rm", "--force", NAME)
    return image, argv, environment


def path_manual(model_dir, endpoint, port, argv, environment, awscli) -> dict:
    """The plain bench host, nothing of this collection on it: the seed's starting point. The AWS CLI and vLLM come
    from the bench cache, mounted at the same path (a Deep Learning AMI has both)."""
    t0 = start_host(None, instance_store=True)
    t_boot = wait("the host to boot", booted, 120)
    dest = f"{INSTANCE_STORE_MOUNT}/models/{model_dir.name}"
    docker("exec", "-e", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}", "-e", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
           "-e", f"AWS_DEFAULT_REGION={REGION}", NAME, str(awscli / "bin" / "aws"), "--endpoint-url", endpoint,
           "s3", "sync", f"s3://{BUCKET}/{model_dir.name}/", dest + "/", "--only-show-errors", timeout=1800)
    t_sync = time.monotonic()
    model_index = argv.index("--model") + 1
    command = argv[:model_index] + [dest] + argv[model_index + 1:]
    env_flags = [flag for key, value in environment.items() for flag in ("-e", f"{key}={value}")]
    docker("exec", "--detach", *env_flags, NAME, *command)
    return phases(t0, t_boot, t_sync, port, argv)


def vllm_alive() -> bool:
    return docker("exec", NAME, "pgrep", "-f", "vllm.entrypoints", check=False).strip() != ""


def phases(t0, t_boot, t_sync, port, argv) -> dict:
    seen = []  # vLLM's process was seen: its absence after that is an exit, not a start still to come

    def up():
        if healthy(port):
            return True
        if vllm_alive():
            seen.append(True)
        elif seen:
            raise RuntimeError("vLLM exited before /health answered")
        return False

    t_load = wait("vLLM's /health", up)
    t_first = first_token(port, argv[argv.index("--served-model-name") + 1])
    return {"boot_s": t_boot - t0, "sync_s": t_sync - t0, "load_s": t_load - t_sync, "first_token_s": t_first - t_load,
            "total_s": t_first - t0}


def path_boot(image, port, argv, instance_store) -> dict:
    t0 = start_host(image, instance_store=instance_store)
    t_boot = wait("the host to boot", booted, 120)
    t_sync = wait("the boot sync", lambda: unit_exit("llmserve-model-sync.service") is not None)
    t_sync = unit_exit("llmserve-model-sync.service")
    result = docker("exec", NAME, "systemctl", "show", "llmserve-model-sync", "-p", "Result", "--value").strip()
    if result != "success":
        raise RuntimeError("the boot sync failed: " + docker("exec", NAME, "journalctl", "-u", "llmserve-model-sync",
                                                             "--no-pager", check=False))
    # What the sync did ("up to date", "synced ... downloaded n of m ... re-verified k in place"), for the log.
    said = docker("exec", NAME, "journalctl", "-u", "llmserve-model-sync", "-o", "cat", "--no-pager", check=False)
    said = [line for line in said.splitlines() if line.startswith(("up to date:", "synced:", "warning:"))]
    return dict(phases(t0, t_boot, t_sync, port, argv), sync_said=" | ".join(said))


def path_runai(model_dir, endpoint, port, argv, environment, lib) -> dict:
    """(d): vLLM streams the safetensors from S3 (runai_streamer); nothing is synced first."""
    t0 = start_host(None, instance_store=True)
    t_boot = wait("the host to boot", booted, 120)
    model_index = argv.index("--model") + 1
    command = argv[:model_index] + [f"s3://{BUCKET}/{model_dir.name}"] + argv[model_index + 1:]
    command += ["--load-format", "runai_streamer"]
    env = dict(environment, PYTHONPATH=str(lib), AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, AWS_ENDPOINT_URL=endpoint,
               RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING="0", AWS_EC2_METADATA_DISABLED="true")
    env_flags = [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]
    docker("exec", "--detach", *env_flags, NAME, "sh", "-c",
           " ".join(f"'{part}'" for part in command) + " > /var/log/vllm-runai.log 2>&1")
    try:
        return phases(t0, t_boot, t_boot, port, argv)
    except RuntimeError as error:
        output = docker("exec", NAME, "tail", "-n", "40", "/var/log/vllm-runai.log", check=False)
        raise RuntimeError(f"{error}\nvLLM's output:\n{output}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,generated-2g", help="comma-separated: smollm2, generated-2g")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--paths", default="a,b,c,d", help="comma-separated letters of the paths to run (d needs --runai)")
    parser.add_argument("--runai", action="store_true", help="also (d): vLLM's runai_streamer from the local S3")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    for name in ("LLMSERVE_VLLM_VENV", "LLMSERVE_DEMO_MODEL", "LLMSERVE_DEMO_WHEELHOUSE"):
        if not os.environ.get(name):
            parser.error(f"{name} is not set: run through `make bench-cold-start`, which exports the bench's parts")

    # Built with Debian's Python, so the bench host runs it from the cache mount.
    tools, awscli = s3_tools(), awscli_venv(BASE_PYTHON, "awscli-host")
    workdir = Path(tempfile.mkdtemp(prefix="benchmark-cold-start-", dir=args.workdir))
    (workdir / "s3" / BUCKET).mkdir(parents=True)  # the bucket: a top folder of what rclone serves
    rclone, endpoint = start_rclone(tools, workdir / "s3", workdir / "rclone.log")
    lib = runai_lib() if args.runai else None
    port = free_port()
    results, images = {}, []
    try:
        # Each model is uploaded through the S3 API with a CRC64NVME checksum, as S3 stores every upload since 2025
        # (and through the server, so that its cached listing knows the new prefix).
        model_dirs = {}
        for model in args.models.split(","):
            if model == "smollm2":
                model_dirs[model] = workdir / "models" / "SmolLM2-135M-Instruct"
                shutil.copytree(os.environ["LLMSERVE_DEMO_MODEL"], model_dirs[model])
            elif model == "generated-2g":
                model_dirs[model] = workdir / "models" / "generated-2g"
                log("generating a ~1.9 GB random Llama")
                run(str(Path(os.environ["LLMSERVE_VLLM_VENV"]) / "bin" / "python"),
                    str(REPO / "tests" / "bench" / "make_tiny_model.py"), str(model_dirs[model]), *BIG_MODEL)
            else:
                parser.error(f"unknown model {model!r}")
            upload_crc64_copy(tools, endpoint, model_dirs[model], workdir, prefix=model_dirs[model].name + "/")
        for model, model_dir in model_dirs.items():
            size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
            image, argv, environment = converge(model_dir, endpoint, port, model.replace("_", "-"))
            images.append(image)
            paths = {
                "(a) manual: aws s3 sync, vLLM by hand": lambda: path_manual(model_dir, endpoint, port, argv,
                                                                             environment, awscli),
                "(b) boot path, empty instance store": lambda: path_boot(image, port, argv, instance_store=True),
                "(c) baked image, weights on disk": lambda: path_boot(image, port, argv, instance_store=False),
            }
            if lib:
                paths["(d) runai_streamer from S3"] = lambda: path_runai(model_dir, endpoint, port, argv, environment,
                                                                         lib)
            wanted = set(args.paths.split(","))
            paths = {name: measure for name, measure in paths.items() if name[1] in wanted}
            measured = {name: [] for name in paths}
            for round_index in range(1, args.rounds + 1):
                for name, measure in paths.items():
                    try:
                        figures = measure()
                    except RuntimeError as error:
                        log(f"{model} {name}: failed: {error}")
                        figures = {"error": str(error)[-4000:]}
                    finally:
                        docker("rm", "--force", NAME, check=False)
                    log(f"{model} round {round_index} {name}: {figures}")
                    measured[name].append(figures)
            print(f"\n{model}: {size / 1e9:.2f} GB, one bench host (2 CPU cores), median of {args.rounds}")
            print(f"{'path':40} {'boot':>6} {'sync':>6} {'load':>6} {'1st tok':>8} {'total':>7} {'vs (a)':>7}")
            manual = [r["total_s"] for name, runs in measured.items() if name.startswith("(a)") for r in runs
                      if "total_s" in r]
            for name, runs in measured.items():
                ok = [r for r in runs if "total_s" in r]
                if not ok:
                    print(f"{name:40} failed: {runs[0]['error'].splitlines()[0][:80]}")
                    continue
                med = {key: statistics.median(r[key] for r in ok) for key in ok[0] if key.endswith("_s")}
                ratio = f"{med['total_s'] / statistics.median(manual):6.2f}x" if manual else "     -"
                print(f"{name:40} {med['boot_s']:6.1f} {med['sync_s']:6.1f} {med['load_s']:6.1f} "
                      f"{med['first_token_s']:8.2f} {med['total_s']:7.1f} {ratio}")
            results[model] = {"bytes": size, "paths": measured}
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        docker("rm", "--force", NAME, check=False)
        for image in images:
            docker("rmi", "--force", image, check=False)
        rclone.terminate()
        rclone.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
