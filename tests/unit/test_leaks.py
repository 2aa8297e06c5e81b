"""tests/support/leaks.py: the leak check finds a secret in every form a log carries it, and never echoes it."""

import json
import shlex

import pytest

from tests.support import leaks

KEY = "sk-bench7Qx2-$HOME %i\"q'\\z"
TOKEN = "hf_AbCdEf0123456789"


@pytest.mark.parametrize("text, form", [
    ("Invoked with api_key=" + KEY, "as is"),
    ('{"api_key": %s}' % json.dumps(KEY), "JSON-escaped"),
    ("args: %r" % {"api_key": KEY}, "Python repr"),
    ("curl -H %s" % shlex.quote(KEY), "shell-quoted"),
    ("key=sk-bench7Qx2-%24HOME", "its longest run of 9 letters and digits"),
])
def test_each_form_of_a_secret_is_found_and_named(text, form):
    found = leaks.find_leaks({"api key": KEY}, {"play output": "ok\n" + text + "\nok"})
    assert [(leak.secret, leak.source, leak.line) for leak in found] and found[0].line == 2
    assert form in [leak.form for leak in found]


def test_the_report_names_secret_source_and_line_but_not_the_value():
    found = leaks.find_leaks({"api key": KEY, "hf token": TOKEN}, {"journal": "a\nHF_TOKEN=" + TOKEN, "ps": "x"})
    report = leaks.describe(found)
    assert "hf token (as is) in journal, line 2" in report
    assert TOKEN not in report and "bench7Qx2" not in report and "AbCdEf" not in report


def test_clean_sources_and_unset_secrets_report_nothing():
    assert leaks.find_leaks({"api key": KEY, "hf token": None, "empty": ""}, {"out": "VLLM_API_KEY=********"}) == []
    assert leaks.describe([]) == "no leaks"


def test_short_runs_are_not_fragments():
    # "ab12" alone would match by chance anywhere: only runs of 8 or more stand for the secret.
    assert leaks.find_leaks({"pin": "ab12-$"}, {"out": "ab12 and more"}) == []


def test_host_sources_come_back_by_section():
    def run(command):
        assert "journalctl" in command and "/proc/[0-9]*/cmdline" in command and "for unit in vllm.service;" in command
        return "".join("%s%s\nline of %s\n" % (leaks.SECTION, name, name) for name in ("journal", "command lines"))

    assert leaks.host_sources(run, ["vllm.service"], name="host-a") == {
        "host-a: journal": "line of journal", "host-a: command lines": "line of command lines"}
