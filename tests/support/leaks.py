"""The leak check: where given secret values appear in given texts (0 places expected).

    leaks = find_leaks({"api key": key, "hf token": token}, {"play output": output, **host_sources(run)})
    assert not leaks, describe(leaks)

Secrets are named by a label and never echoed: a report says which secret, in which source, on which line and in
which form, not the value. Each secret is searched in the forms a log may carry it: as it is, JSON- and
Python-escaped, shell-quoted, base64, URL-encoded, and its longest plain run of letters and digits (8 or more), which
no escaping changes; so a key full of `$ % " ' \\` still shows when a tool re-quoted it.

Sources are plain texts by name. host_sources() gathers a systemd host's in one command (journal, unit files and
drop-ins, `systemctl show`, every process's command line, Ansible's async job results) through any runner of shell
commands: testinfra's host.check_output, `docker exec`, or subprocess; a load balancer's logs are files to read.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Mapping

# The longest run of letters and digits that identifies a secret on its own (shorter runs occur by chance).
MIN_FRAGMENT = 8
SECTION = "=== llmserve-leak-source: "


@dataclass(frozen=True)
class Leak:
    secret: str
    source: str
    line: int
    form: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.form}) in {self.source}, line {self.line}"


def forms(value: str) -> dict[str, str]:
    """The spellings of one secret to look for, by name of the form."""
    found = {
        "as is": value,
        "JSON-escaped": json.dumps(value)[1:-1],
        "Python repr": repr(value)[1:-1],
        "shell-quoted": shlex.quote(value),
        "base64 (of the value alone)": base64.b64encode(value.encode()).decode().rstrip("="),
        "URL-encoded": urllib.parse.quote(value, safe=""),
    }
    runs = re.findall(r"[A-Za-z0-9]+", value)
    longest = max(runs, key=len) if runs else ""
    if len(longest) >= MIN_FRAGMENT:
        found["its longest run of %d letters and digits" % len(longest)] = longest
    # Forms equal to another (a plain key is its own JSON form) are searched once, under the first name.
    unique: dict[str, str] = {}
    for name, text in found.items():
        if text and text not in unique.values():
            unique[name] = text
    return unique


def find_leaks(secrets: Mapping[str, str], sources: Mapping[str, str | bytes]) -> list[Leak]:
    """Every (secret, source, line, form) where a secret appears; secrets that are empty or None are skipped."""
    leaks = []
    for source, text in sources.items():
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        lines = text.splitlines()
        for label, value in secrets.items():
            if not value:
                continue
            for form, spelling in forms(str(value)).items():
                for number, line in enumerate(lines, start=1):
                    if spelling in line:
                        leaks.append(Leak(label, source, number, form))
    return leaks


def describe(leaks: list[Leak]) -> str:
    """A report for an assertion message: one line per leak, no secret values."""
    if not leaks:
        return "no leaks"
    return "%d leak(s):\n" % len(leaks) + "\n".join("  " + str(leak) for leak in leaks)


def host_sources_script(units: list[str]) -> str:
    """One shell command that prints a systemd host's texts where secrets must not be, each after a SECTION line.

    Not the 0600 environment files, which are where the secrets belong (and the running service's environment).
    """
    quoted = " ".join(shlex.quote(unit) for unit in units)
    return "\n".join([
        f"echo '{SECTION}journal'; journalctl --no-pager -o verbose 2>&1",
        f"for unit in {quoted}; do echo \"{SECTION}systemctl cat $unit\"; systemctl cat --no-pager -- \"$unit\" 2>&1;"
        f" echo \"{SECTION}systemctl show $unit\"; systemctl show --no-pager -- \"$unit\" 2>&1; done",
        f"echo '{SECTION}unit files and drop-ins'; grep -rIs '' /etc/systemd /run/systemd/system /run/systemd/transient"
        " /lib/systemd/system /usr/lib/systemd/system 2>/dev/null",
        f"echo '{SECTION}command lines'; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done",
        f"echo '{SECTION}ansible async results'; grep -rIs '' /root/.ansible_async /home/*/.ansible_async 2>/dev/null",
        "true",
    ])


def split_sections(output: str) -> dict[str, str]:
    """The texts host_sources_script printed, by source name."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION):]
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def host_sources(run: Callable[[str], str], units: list[str], name: str = "") -> dict[str, str]:
    """A host's texts by source (prefixed with name, for several hosts), through run(shell command) -> stdout."""
    prefix = f"{name}: " if name else ""
    return {prefix + source: text for source, text in split_sections(run(host_sources_script(units))).items()}
