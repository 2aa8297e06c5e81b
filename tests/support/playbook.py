"""The tests' one runner for the Ansible command-line tools (ansible-playbook, ansible-inventory, ansible-doc):
the control venv's own executables, this checkout as llmserve.aws, no colours, no stdin, a bounded run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# This checkout as llmserve.aws (`make collections`), and quiet about what a test's inline inventory looks like.
ANSIBLE_ENV = {
    "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / ".collections"),
    "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_LOCALHOST_WARNING": "false",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
}


def ansible_env(drop_prefixes: tuple[str, ...] = (), **overrides: str) -> dict[str, str]:
    """os.environ without the variables starting with drop_prefixes (e.g. a caller's AWS_ or ANSIBLE_ settings),
    with ANSIBLE_ENV where the environment does not set them (molecule's own settings win), then overrides."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(drop_prefixes)}
    for name, value in ANSIBLE_ENV.items():
        env.setdefault(name, value)
    env.update(overrides)
    return env


def run_ansible(tool: str, *args: str, env: dict[str, str] | None = None, timeout_s: float = 300,
                cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run an Ansible tool of the control venv; the completed process, output captured as text (never raises on
    a failed run: tests assert on returncode and show stdout)."""
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=ansible_env() if env is None else env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False)


def run_playbook(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300,
                 cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """ansible-playbook ARGS (see run_ansible)."""
    return run_ansible("ansible-playbook", *args, env=env, timeout_s=timeout_s, cwd=cwd)
