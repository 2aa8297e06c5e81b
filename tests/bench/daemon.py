"""The bench's daemon conventions, shared by its long-running parts (the local AWS, the ALB stand-in).

A server runs in the foreground and, once it serves, writes its pid file and then its port file (the port file's
presence means "serving"); it removes both on exit only while they still hold its own text. `--daemon` starts the
same script in a new session with its output in a log file and returns once the port file appears (a second start
with the same pid file finds it running and answers the same port file); `--stop` sends SIGTERM to the pid in the
pid file, but only when that process runs the same script.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser, what: str, start_timeout_s: float) -> None:
    """--pid-file, --daemon | --stop, --log-file and --start-timeout, as every bench daemon takes them."""
    parser.add_argument("--pid-file", type=Path, help=f"write the {what}'s pid here")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="start in the background, return once serving")
    mode.add_argument("--stop", action="store_true", help=f"stop the {what} named by --pid-file")
    parser.add_argument("--log-file", type=Path, help=f"with --daemon: where the {what}'s output goes")
    parser.add_argument("--start-timeout", type=float, default=start_timeout_s, help="with --daemon: seconds")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def remove_if_holds(path: Path | None, text: str) -> None:
    """Remove a pid/port file only while it is still ours (a newer server may have taken the name)."""
    if path is None:
        return
    try:
        if path.read_text() == text:
            path.unlink()
    except FileNotFoundError:
        pass


def running_pid(pid_file: Path | None, script: str) -> int | None:
    """The pid in pid_file when that process is alive and runs `script` (a file name), else None."""
    if pid_file is None:
        return None
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid if script.encode() in cmdline else None


def start(name: str, command: list[str], port_file: Path, log_path: Path, timeout_s: float) -> str | None:
    """Start `command` in its own session, output to log_path; the port file's text once it appears, else None
    (the reason printed) when the process exits first or timeout_s passes (then it is terminated)."""
    port_file.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_file.exists():
            return port_file.read_text().strip()
        if child.poll() is not None:
            print(f"{name}: exited with {child.returncode} before serving; log: {log_path}", file=sys.stderr)
            return None
        time.sleep(0.05)
    child.terminate()
    print(f"{name}: not serving after {timeout_s:.0f} s; log: {log_path}", file=sys.stderr)
    return None


def stop(name: str, pid_file: Path | None, script: str, timeout_s: float) -> int:
    """SIGTERM to the daemon named by pid_file and wait until it has exited; 0 when stopped or not running."""
    pid = running_pid(pid_file, script)
    if pid is None:
        print(f"{name}: not running", flush=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            print(f"{name}: stopped {pid}", flush=True)
            return 0
        time.sleep(0.05)
    print(f"{name}: {pid} still running {timeout_s:.0f} s after SIGTERM", file=sys.stderr)
    return 1


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
