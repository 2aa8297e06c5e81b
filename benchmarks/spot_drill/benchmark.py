"""Benchmark: the spot drill, repeated; p50/p95 of notice -> deregistered, and the drain's length.

On this host, with the real parts of tests/bench/spot_bench.py: the watcher process
(roles/spot_interruption/files/llmserve_spot_watcher.py, role defaults except the bench endpoints), the IMDSv2
emulator, moto with the project's extensions, and vLLM on CPU serving the tiny model. Each round starts from a
fresh local AWS (instance, role, target group with the instance registered), a fresh emulator and a fresh
watcher, opens N streaming requests, injects a spot termination notice once all are in flight, and measures:

The notice is injected once every stream has its first chunk and none has ended (all in flight).

- notice -> deregistered: from the injection to the first moment moto reports the target draining (polled
  every 50 ms by playbooks/files/spot_drill_monitor.py in its own process, from outside the watcher). With
  the default 1 s poll interval the watcher sees a notice 0-1 s after it appears: expect a spread of a second.
- notice -> read: from the injection to IMDS's first answer carrying the notice (the emulator's request log):
  the poll wait.
- notice -> seen: to the watcher's `notice` event (the poll wait plus reading and deciding).
- seen -> deregistered: from the watcher's `notice` event to its `deregistered` event (the AWS call).

What runs where, so that it measures the watcher and not the bench: IMDS and the ELB API answer from outside the
instance on EC2, so their stand-ins (the emulator in its own process, moto, the stopwatch) run at the watcher's
priority, nice -5 (the role's unit sets Nice=-5), and vLLM at nice 10 with its clients at 0. Needs root for the
negative niceness (else everything runs at 0 and the figures say so). vLLM's session also gets nice 10 as a
scheduling group (sched_autogroup ranks sessions against each other whatever their processes' nice; on a host,
the units' CPUWeight does): without it the watcher waited seconds for the CPU (p95 9.1 s against 0.6 s).
- drain: notice -> the watcher asked for vLLM to stop (every request done); with --restart-vllm, notice -> vLLM
  exited.

By default vLLM keeps running between rounds: the watcher's stop action only records that it ran, because
restarting vLLM takes 20-45 s per round on 2 cores. --restart-vllm stops it for real each round (SIGTERM to the
main process with --shutdown-timeout, what KillMode=mixed does) and starts it again. The systemd stop path is
proven by the role's molecule scenario, not here.

Not part of `make test`. Run: .venv/bin/python benchmarks/spot_drill/benchmark.py [--rounds 20] [--requests 16]
    [--max-tokens 1500] [--poll-interval 1.0] [--restart-vllm] [--json FILE] [--keep-workdir]
"""

import argparse
import json
import math
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

from tests.bench import spot_bench  # noqa: E402

MOTO_SERVER = REPO / "tests" / "bench" / "moto_server.py"


def log(message):
    print(message, file=sys.stderr, flush=True)


def percentile(values, fraction):
    """Nearest-rank percentile (no interpolation): a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# The role's unit runs the watcher at Nice=-5; IMDS and the ELB API are off the instance on EC2.
PRIORITY_NICE = -5 if os.geteuid() == 0 else 0


def start_moto(workdir: Path) -> str:
    env = dict(os.environ, LLMSERVE_MOTO_ELB_DRAIN_CAP_S="1.0", LLMSERVE_MOTO_ELB_INITIAL_S="0")
    command = ["nice", "-n", str(PRIORITY_NICE), sys.executable, str(MOTO_SERVER), "--daemon", "--quiet", "--port", "0"]
    command += ["--port-file", str(workdir / "moto.url"), "--pid-file", str(workdir / "moto.pid")]
    command += ["--log-file", str(workdir / "moto.log")]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=120)
    return output.stdout.strip().splitlines()[-1]


def stop_moto(workdir: Path) -> None:
    subprocess.run(
        [sys.executable, str(MOTO_SERVER), "--stop", "--pid-file", str(workdir / "moto.pid")],
        check=False,
        capture_output=True,
        timeout=60,
    )


def reset_moto(url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.open(urllib.request.Request(url + "/moto-api/reset", method="POST"), timeout=30).read()


def one_round(index, args, aws_url, vllm, workdir):
    reset_moto(aws_url)
    instance = spot_bench.provision(aws_url, port=vllm.port, name=f"drill{index}")
    round_dir = workdir / f"round-{index:02d}"
    round_dir.mkdir()
    marker = round_dir / "stopped"
    stop_command = vllm.stop_command() if args.restart_vllm else ["/bin/sh", "-c", f"echo stop >> {marker}"]
    imds = spot_bench.ImdsEmulatorProcess(round_dir, instance.instance_id, aws_url, nice=PRIORITY_NICE)
    try:
        config = spot_bench.watcher_config(
            imds_url=imds.url,
            aws_url=aws_url,
            instance=instance,
            vllm_port=vllm.port,
            state_dir=round_dir / "state",
            stop_command=stop_command,
            poll_interval_s=args.poll_interval,
            drain_check_interval_s=0.5,
            imds_timeout_s=2.0,
        )
        watcher = spot_bench.WatcherProcess(round_dir, config, nice=PRIORITY_NICE)
        watcher.start()
        try:
            drill = spot_bench.run_drill(
                imds_url=imds.url,
                aws_url=aws_url,
                instance=instance,
                vllm=vllm,
                watcher=watcher,
                requests=args.requests,
                max_tokens=args.max_tokens,
                stopwatch_nice=PRIORITY_NICE,
            )
            (deregistered,) = watcher.named("deregistered")
            (noticed,) = watcher.named("notice")
            requests = imds.requests()
            v1 = imds.imdsv1_requests()
        finally:
            watcher.stop()
    finally:
        imds.stop()
    seen_at = spot_bench.event_epoch(noticed)
    read_at = spot_bench.first_notice_answer(requests, drill.notice_at)
    return {
        "round": index,
        "notice_to_deregistered_s": drill.notice_to_deregistered_s,
        "notice_to_read_s": None if read_at is None else read_at - drill.notice_at,
        "notice_to_seen_s": seen_at - drill.notice_at,
        "seen_to_deregistered_s": spot_bench.event_epoch(deregistered) - seen_at,
        "drain_s": drill.drain_s,
        "in_flight_at_notice": drill.in_flight_at_notice,
        "requests_completed": drill.completed,
        "requests_failed": drill.failed,
        "error_chunks": drill.error_chunks,
        "imdsv1_requests": len(v1),
    }


def summarize(rounds):
    def stats(key):
        values = [entry[key] for entry in rounds if entry[key] is not None]
        return {
            "n": len(values),
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "max": max(values),
            "mean": statistics.fmean(values),
        }

    return {
        "notice_to_deregistered_s": stats("notice_to_deregistered_s"),
        "notice_to_read_s": stats("notice_to_read_s"),
        "notice_to_seen_s": stats("notice_to_seen_s"),
        "seen_to_deregistered_s": stats("seen_to_deregistered_s"),
        "drain_s": stats("drain_s"),
        "rounds_with_all_in_flight": sum(entry["in_flight_at_notice"] == entry["requests_completed"] + entry[
            "requests_failed"] for entry in rounds),
        "requests_completed": sum(entry["requests_completed"] for entry in rounds),
        "requests_failed": sum(entry["requests_failed"] for entry in rounds),
        "error_chunks": sum(entry["error_chunks"] for entry in rounds),
        "imdsv1_requests": sum(entry["imdsv1_requests"] for entry in rounds),
        "missed_deregistrations": sum(entry["notice_to_deregistered_s"] is None for entry in rounds),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=1500)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the watcher's IMDS poll interval")
    parser.add_argument("--restart-vllm", action="store_true", help="stop vLLM for real each round, then restart")
    parser.add_argument("--json", type=Path, help="also write every round and the summary here")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the logs (watcher, vLLM, moto) it wrote")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="spot-drill-bench-"))
    aws_url = start_moto(workdir)
    vllm = spot_bench.VllmServer(workdir, spot_bench_free_port(), shutdown_timeout_s=60)
    rounds = []
    try:
        log(f"vLLM healthy after {vllm.start():.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for index in range(1, args.rounds + 1):
            if args.restart_vllm and not vllm.running:
                vllm.start()
            started = time.monotonic()
            result = one_round(index, args, aws_url, vllm, workdir)
            rounds.append(result)
            log(
                f"round {index:2d}: notice->deregistered {result['notice_to_deregistered_s']:.3f} s "
                f"(notice->seen {result['notice_to_seen_s']:.3f} s + seen->deregistered "
                f"{result['seen_to_deregistered_s']:.3f} s), drain {result['drain_s']:.2f} s, "
                f"load {os.getloadavg()[0]:.1f}, "
                f"{result['in_flight_at_notice']} in flight at the notice, "
                f"{result['requests_completed']}/{args.requests} completed ({time.monotonic() - started:.1f} s)"
            )
    finally:
        vllm.stop()
        stop_moto(workdir)
        if args.keep_workdir:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(rounds)
    print(f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work skews the timings); "
          f"watcher, IMDS emulator and moto at nice {PRIORITY_NICE}, vLLM at nice {spot_bench.VLLM_NICE} "
          f"(its session's scheduling group too)")
    print(f"spot drill x{len(rounds)}: {args.requests} streams x {args.max_tokens} tokens, "
          f"poll interval {args.poll_interval} s, vLLM {'restarted' if args.restart_vllm else 'kept'} per round")
    print(f"{'':26}{'p50':>8}{'p95':>8}{'max':>8}")
    for key in ("notice_to_deregistered_s", "notice_to_read_s", "notice_to_seen_s", "seen_to_deregistered_s", "drain_s"):
        row = summary[key]
        print(f"{key:26}{row['p50']:8.3f}{row['p95']:8.3f}{row['max']:8.3f}")
    total, read = summary["notice_to_deregistered_s"], summary["notice_to_read_s"]
    print(f"against the goal of 2 s: p95 x{total['p95'] / 2.0:.2f}; against the first IMDS answer carrying the notice "
          f"(the poll wait alone, same rounds): p50 x{total['p50'] / read['p50']:.2f}, p95 x{total['p95'] / read['p95']:.2f}")
    print(
        f"rounds with every request in flight at the notice {summary['rounds_with_all_in_flight']}/{len(rounds)}, "
        f"requests completed {summary['requests_completed']}, failed {summary['requests_failed']}, "
        f"error chunks {summary['error_chunks']}, IMDSv1 requests {summary['imdsv1_requests']}, "
        f"missed deregistrations {summary['missed_deregistrations']}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1))
    return 0 if summary["requests_failed"] == 0 and summary["missed_deregistrations"] == 0 else 1


def spot_bench_free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
