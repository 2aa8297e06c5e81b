"""_systemd.py: the parsers on outputs recorded from systemd 252 (the bench host), and the runner's commands."""

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _systemd as systemd

# `systemctl show -p LoadState,...` of the bench's vLLM unit in its states (systemd 252, Debian bookworm).
RUNNING = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
MainPID=429
NRestarts=0
ExecMainStatus=0
ExecMainCode=0
UnitFileState=enabled
InvocationID=5b2c51f2d2a04f0c9a9b0e6d6f1e6a11
FragmentPath=/etc/systemd/system/vllm-bench.service
"""
AUTO_RESTART = """LoadState=loaded
ActiveState=activating
SubState=auto-restart
Result=exit-code
MainPID=0
NRestarts=2
ExecMainStatus=2
ExecMainCode=1
UnitFileState=enabled
InvocationID=
FragmentPath=/etc/systemd/system/vllm-bench.service
"""
FAILED = """LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
MainPID=0
NRestarts=3
ExecMainStatus=2
ExecMainCode=1
UnitFileState=enabled
InvocationID=
FragmentPath=/etc/systemd/system/vllm-bench.service
"""
NOT_FOUND = """LoadState=not-found
ActiveState=inactive
SubState=dead
Result=success
MainPID=0
NRestarts=0
ExecMainStatus=0
ExecMainCode=0
UnitFileState=
InvocationID=
FragmentPath=
"""
JOURNAL = """2026-11-28T19:17:33+0000 host python[1842]: api_server.py: error: unrecognized arguments: --no-such-flag
2026-11-28T19:17:33+0000 host systemd[1]: vllm-bench.service: Main process exited, code=exited, status=2/INVALIDARGUMENT

"""


def test_parse_show_keeps_values_with_equals_signs_and_empty_values():
    parsed = systemd.parse_show("Environment=A=1 B=2\nInvocationID=\nnot a property\n")
    assert parsed == {"Environment": "A=1 B=2", "InvocationID": ""}


def test_running_service():
    status = systemd.ServiceStatus(systemd.parse_show(RUNNING))
    assert status.exists and status.running and status.enabled
    assert not status.failed and not status.waiting_to_restart
    assert status.main_pid == 429
    assert status.summary() == "active/running pid 429"
    assert status.as_dict()["unit_file_state"] == "enabled"


def test_crash_loop_states():
    restarting = systemd.ServiceStatus(systemd.parse_show(AUTO_RESTART))
    assert restarting.waiting_to_restart and not restarting.running
    assert restarting.summary() == "activating/auto-restart result=exit-code restarts=2"
    failed = systemd.ServiceStatus(systemd.parse_show(FAILED))
    assert failed.failed and failed.exec_main_status == 2 and failed.n_restarts == 3


def test_unknown_unit():
    status = systemd.ServiceStatus(systemd.parse_show(NOT_FOUND))
    assert not status.exists and not status.enabled and not status.running


@pytest.mark.parametrize("later, crashed", [
    (RUNNING, False),
    (AUTO_RESTART, True),
    (FAILED, True),
    (RUNNING.replace("NRestarts=0", "NRestarts=1"), True),
    (RUNNING.replace("InvocationID=5b2c", "InvocationID=ffff"), True),
    (NOT_FOUND.replace("LoadState=not-found", "LoadState=loaded"), True),
])
def test_crashed_since_the_start(later, crashed):
    baseline = systemd.ServiceStatus(systemd.parse_show(RUNNING))
    assert systemd.crashed_since(baseline, systemd.ServiceStatus(systemd.parse_show(later))) is crashed


@pytest.mark.parametrize("text, kind", [
    ("System has not been booted with systemd as init system (PID 1). Can't operate.\n"
     "Failed to connect to bus: Host is down", systemd.ERROR_NO_SYSTEMD),
    ("Failed to start nope.service: Unit nope.service not found.", systemd.ERROR_UNIT_NOT_FOUND),
    ("Failed to start vllm.service: Access denied", systemd.ERROR_ACCESS_DENIED),
    ("Job for vllm.service failed.\nSee \"systemctl status vllm.service\" and \"journalctl -xeu vllm.service\" for "
     "details.\nvllm.service: Start request repeated too quickly.", systemd.ERROR_START_LIMIT),
    ("Job for vllm.service failed because the control process exited with error code.", systemd.ERROR_JOB_FAILED),
    ("something else", systemd.ERROR_UNKNOWN),
])
def test_classify_error(text, kind):
    assert systemd.classify_error(text) == kind


def test_parse_journal_drops_blank_lines_and_the_no_entries_marker():
    assert systemd.parse_journal(JOURNAL) == JOURNAL.strip().splitlines()
    assert systemd.parse_journal("-- No entries --\n") == []


class RecordingRunCommand:
    """Stands in for AnsibleModule.run_command: records argv, answers from a table of (rc, out, err)."""

    def __init__(self, answers=None):
        self.commands = []
        self.answers = answers or {}

    def __call__(self, command):
        self.commands.append(command)
        return self.answers.get(command[1], (0, RUNNING, ""))


def test_runner_commands():
    run = RecordingRunCommand()
    runner = systemd.SystemdRunner(run, "/usr/bin/systemctl", "/usr/bin/journalctl")
    runner.daemon_reload()
    assert runner.status("vllm.service").main_pid == 429
    runner.restart("vllm.service")
    runner.reset_failed("vllm.service")
    assert run.commands == [
        ["/usr/bin/systemctl", "daemon-reload"],
        ["/usr/bin/systemctl", "show", "-p", ",".join(systemd.STATUS_PROPERTIES), "--", "vllm.service"],
        ["/usr/bin/systemctl", "restart", "--", "vllm.service"],
        ["/usr/bin/systemctl", "reset-failed", "--", "vllm.service"],
    ]


def test_runner_raises_a_classified_error():
    run = RecordingRunCommand({"start": (1, "", "Failed to start nope.service: Unit nope.service not found.")})
    runner = systemd.SystemdRunner(run, "systemctl", "journalctl")
    with pytest.raises(systemd.SystemdError) as raised:
        runner.start("nope.service")
    assert raised.value.kind == systemd.ERROR_UNIT_NOT_FOUND
    assert raised.value.rc == 1
    assert raised.value.command == ["systemctl", "start", "--", "nope.service"]


def test_journal_tail_asks_for_the_unit_and_never_fails():
    run = RecordingRunCommand({"--no-pager": (0, JOURNAL, "")})
    runner = systemd.SystemdRunner(run, "systemctl", "journalctl")
    assert runner.journal_tail("vllm.service", 50) == JOURNAL.strip().splitlines()
    assert run.commands[-1] == ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "-n", "50", "-u",
                                "vllm.service"]
    broken = systemd.SystemdRunner(RecordingRunCommand({"--no-pager": (1, "", "No journal files were found.")}),
                                   "systemctl", "journalctl")
    assert broken.journal_tail("vllm.service") == ["(journalctl failed with exit code 1: No journal files were found.)"]


def test_failed_requirements_lists_the_required_services_that_failed():
    calls = []

    def answer(command):
        calls.append(command)
        if "--value" in command:
            return 0, "sysinit.target system.slice llmserve-model-sync.service other.service\n", ""
        return 0, ("Id=llmserve-model-sync.service\nActiveState=failed\n\nId=other.service\nActiveState=active\n"), ""

    runner = systemd.SystemdRunner(answer, "systemctl", "journalctl")
    assert runner.failed_requirements("vllm.service") == ["llmserve-model-sync.service"]
    assert calls[0] == ["systemctl", "show", "-p", "Requires", "--value", "--", "vllm.service"]
    assert calls[1] == ["systemctl", "show", "-p", "Id,ActiveState", "--", "llmserve-model-sync.service",
                        "other.service"]
    none = systemd.SystemdRunner(lambda command: (0, "sysinit.target\n", ""), "systemctl", "journalctl")
    assert none.failed_requirements("vllm.service") == []
