# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one runner for systemctl and journalctl, and pure parsers for what they print.

Private to this collection. Everything here except SystemdRunner is a pure function of text, unit-tested on
recorded outputs. The runner runs its commands through _runner.run_checked, as _nvidia_smi.NvidiaSmiRunner does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.llmserve.aws.plugins.module_utils import _runner
from ansible_collections.llmserve.aws.plugins.module_utils._runner import CommandError, classify, run_checked

# The properties `systemctl show` is asked for; parse_show() reads any KEY=VALUE list.
STATUS_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "ExecMainStatus",
    "ExecMainCode",
    "UnitFileState",
    "InvocationID",
    "FragmentPath",
)

ERROR_NO_SYSTEMD = "systemd_not_running"
ERROR_UNIT_NOT_FOUND = "unit_not_found"
ERROR_ACCESS_DENIED = "access_denied"
ERROR_START_LIMIT = "start_limit_hit"
ERROR_JOB_FAILED = "job_failed"

# Order matters: a start-limit failure also says "Job for ... failed".
ERROR_UNKNOWN = _runner.ERROR_UNKNOWN

_ERROR_PATTERNS = (
    (ERROR_NO_SYSTEMD, re.compile(r"has not been booted with systemd|Failed to connect to bus|"
                                  r"System has not been booted", re.IGNORECASE)),
    (ERROR_UNIT_NOT_FOUND, re.compile(r"Unit \S+ not found|Unit \S+ could not be found|not loaded", re.IGNORECASE)),
    (ERROR_ACCESS_DENIED, re.compile(r"Access denied|Interactive authentication required|Permission denied",
                                     re.IGNORECASE)),
    (ERROR_START_LIMIT, re.compile(r"start-limit-hit|Start request repeated too quickly", re.IGNORECASE)),
    (ERROR_JOB_FAILED, re.compile(r"Job for \S+ failed", re.IGNORECASE)),
)

# ActiveState values (systemd.unit(5), `systemctl --state=help`).
ACTIVE = "active"
ACTIVATING = "activating"
FAILED = "failed"
INACTIVE = "inactive"


class SystemdError(CommandError):
    """systemctl or journalctl failed: kind is one of the ERROR_* names, detail is what it printed."""


def classify_error(text):
    """Name the failure behind a systemctl/journalctl error text."""
    return classify(text, _ERROR_PATTERNS)


def parse_show(text):
    """Parse `systemctl show -p A,B,...` (KEY=VALUE lines) into a dict of strings.

    Values may themselves contain '='; lines without '=' (never printed for plain properties) are skipped.
    """
    properties = {}
    for line in (text or "").splitlines():
        key, separator, value = line.partition("=")
        if separator and key:
            properties[key] = value
    return properties


def _int_property(properties, key):
    value = (properties.get(key) or "").strip()
    if re.match(r"^-?\d+$", value):
        return int(value)
    return None


class ServiceStatus:
    """A service's state from `systemctl show`, with the questions the modules ask of it."""

    def __init__(self, properties):
        self.properties = dict(properties)
        self.load_state = properties.get("LoadState", "")
        self.active_state = properties.get("ActiveState", "")
        self.sub_state = properties.get("SubState", "")
        self.result = properties.get("Result", "")
        self.main_pid = _int_property(properties, "MainPID") or 0
        self.n_restarts = _int_property(properties, "NRestarts") or 0
        self.exec_main_status = _int_property(properties, "ExecMainStatus")
        self.exec_main_code = properties.get("ExecMainCode", "")
        self.unit_file_state = properties.get("UnitFileState", "")
        self.invocation_id = properties.get("InvocationID", "")

    @property
    def exists(self):
        return self.load_state not in ("", "not-found")

    @property
    def running(self):
        """Active with a live main process (Type=exec/simple services)."""
        return self.active_state == ACTIVE and self.main_pid > 0

    @property
    def failed(self):
        return self.active_state == FAILED

    @property
    def enabled(self):
        return self.unit_file_state in ("enabled", "enabled-runtime")

    @property
    def waiting_to_restart(self):
        """Between a crash and systemd's next start attempt (Restart=on-failure, RestartSec)."""
        return self.active_state == ACTIVATING and self.sub_state == "auto-restart"

    def summary(self):
        text = "%s/%s" % (self.active_state or "?", self.sub_state or "?")
        if self.main_pid:
            text += " pid %d" % self.main_pid
        if self.result and self.result != "success":
            text += " result=%s" % self.result
        if self.n_restarts:
            text += " restarts=%d" % self.n_restarts
        return text

    def as_dict(self):
        return {
            "load_state": self.load_state,
            "active_state": self.active_state,
            "sub_state": self.sub_state,
            "result": self.result,
            "main_pid": self.main_pid,
            "n_restarts": self.n_restarts,
            "exec_main_status": self.exec_main_status,
            "unit_file_state": self.unit_file_state,
        }


def crashed_since(baseline, current):
    """Whether the service's main process died after the baseline status was read.

    A new invocation, a higher restart count, a pending auto-restart or a failed state all mean the process
    that was started is gone; a different MainPID with the same invocation cannot happen for Type=exec.
    """
    if current.failed or current.waiting_to_restart:
        return True
    if current.n_restarts > baseline.n_restarts:
        return True
    if baseline.invocation_id and current.invocation_id and current.invocation_id != baseline.invocation_id:
        return True
    return current.active_state == INACTIVE


def parse_journal(text):
    """Journal output as a list of lines without trailing blanks; journalctl's '-- No entries --' is dropped."""
    lines = []
    for line in (text or "").splitlines():
        if line.strip() in ("-- No entries --", ""):
            continue
        lines.append(line.rstrip())
    return lines


class SystemdRunner:
    """Runs systemctl/journalctl through an AnsibleModule-style run_command(args) -> (rc, stdout, stderr)."""

    def __init__(self, run_command, systemctl="systemctl", journalctl="journalctl"):
        self._run_command = run_command
        self.systemctl = systemctl
        self.journalctl = journalctl

    def _run(self, command):
        return run_checked(self._run_command, command, _ERROR_PATTERNS, SystemdError)

    def systemctl_run(self, *args):
        return self._run([self.systemctl] + list(args))

    def daemon_reload(self):
        self.systemctl_run("daemon-reload")

    def status(self, unit):
        output = self.systemctl_run("show", "-p", ",".join(STATUS_PROPERTIES), "--", unit)
        return ServiceStatus(parse_show(output))

    def start(self, unit):
        self.systemctl_run("start", "--", unit)

    def stop(self, unit):
        self.systemctl_run("stop", "--", unit)

    def restart(self, unit):
        self.systemctl_run("restart", "--", unit)

    def reset_failed(self, unit):
        self.systemctl_run("reset-failed", "--", unit)

    def enable(self, unit):
        self.systemctl_run("enable", "--", unit)

    def disable(self, unit):
        self.systemctl_run("disable", "--", unit)

    def failed_requirements(self, unit):
        """The units this one requires (Requires=) that are in the failed state, e.g. a boot-time model sync."""
        output = self.systemctl_run("show", "-p", "Requires", "--value", "--", unit)
        required = [name for name in output.split() if name.endswith(".service")]
        if not required:
            return []
        states = self.systemctl_run("show", "-p", "Id,ActiveState", "--", *required)
        failed = []
        for block in states.strip().split("\n\n"):
            props = parse_show(block)
            if props.get("ActiveState") == "failed" and props.get("Id"):
                failed.append(props["Id"])
        return failed

    def journal_tail(self, unit, lines=50):
        """The unit's last journal lines; an unreadable journal gives its error text as the one line."""
        command = [self.journalctl, "--no-pager", "--quiet", "-o", "short-iso", "-n", str(lines), "-u", unit]
        rc, stdout, stderr = self._run_command(command)
        if rc != 0:
            return ["(journalctl failed with exit code %d: %s)" % (rc, (stderr or stdout or "").strip())]
        return parse_journal(stdout)
