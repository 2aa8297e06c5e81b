# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection runs a host command (nvidia-smi, systemctl, journalctl) and names its failure.

Private to this collection. Callers hand in an AnsibleModule-style run_command(args) -> (rc, stdout, stderr)
and their own table of (kind, compiled pattern) for what the tool prints when it fails.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ERROR_UNKNOWN = "unknown"


class CommandError(Exception):
    """A command could not answer: kind names the failure, detail is what it printed."""

    def __init__(self, kind, detail, rc=None, command=None):
        super(CommandError, self).__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail
        self.rc = rc
        self.command = command


def classify(text, patterns):
    """The kind of the first (kind, pattern) whose pattern matches text, else ERROR_UNKNOWN."""
    for kind, pattern in patterns:
        if pattern.search(text or ""):
            return kind
    return ERROR_UNKNOWN


def run_checked(run_command, command, patterns, error_class=CommandError):
    """Run command; return its stdout, or raise error_class with the failure classified by patterns."""
    rc, stdout, stderr = run_command(command)
    if rc != 0:
        detail = "\n".join(part.strip() for part in (stdout, stderr) if part and part.strip())
        raise error_class(classify(detail, patterns), detail or "exit code %d and no output" % rc, rc, command)
    return stdout
