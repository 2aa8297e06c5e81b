# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for llmserve.aws.s3_model_sync: progress lines in the play output while the module runs.

A module cannot stream output; a 70B model takes many minutes to download. This plugin starts the module as an
async job (Ansible's own async_wrapper), then reads the job's result file and the module's progress file
(``<dest>/.model-sync/progress.json``) with one shell ``cat`` per poll, printing a line when progress moved, and
finally collects the result with async_status. The first polls come quickly (0.2 s doubling up to
``progress_interval``) so that a sync with nothing to do still returns in about a second.

When the task sets ``async`` itself, runs in check mode, or sets ``progress_interval: 0``, the module runs as a
plain task.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shlex
import time
import uuid

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import human_bytes
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import progress_line

display = Display()

# Async job time limit when the task does not set one: a day covers a multi-hundred-GB model on a slow link.
DEFAULT_JOB_LIMIT_S = 86400
FIRST_POLL_S = 0.2


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        interval = int(args.get("progress_interval", 10) or 0)
        if self._task.async_val or self._task.check_mode or interval <= 0 or self._connection.has_native_async:
            wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
            result.update(self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result

        args["progress_id"] = uuid.uuid4().hex
        self._task.async_val = DEFAULT_JOB_LIMIT_S
        try:
            started = self._execute_module(module_args=args, task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = 0
        if started.get("failed") or "ansible_job_id" not in started:
            result.update(started)
            return result
        result.update(self._wait(started, args, interval, task_vars))
        return result

    def _poll(self, results_file, progress_file):
        """The async job's state and the module's progress record, in one remote command."""
        command = "cat %s; echo; echo '--llmserve-progress--'; cat %s 2>/dev/null" % (
            shlex.quote(results_file), shlex.quote(progress_file))
        out = self._low_level_execute_command(command, sudoable=True).get("stdout", "")
        job_text, _sep, progress_text = out.partition("--llmserve-progress--")
        try:
            job = json.loads(job_text.strip() or "{}")
        except ValueError:
            job = {}  # the file is being renamed into place; read it next time
        try:
            progress = json.loads(progress_text.strip() or "{}")
        except ValueError:
            progress = {}
        return job, progress

    def _wait(self, started, args, interval, task_vars):
        jid = started["ansible_job_id"]
        results_file = started["results_file"]
        progress_file = "%s/.model-sync/progress.json" % args["dest"].rstrip("/")
        host = task_vars.get("inventory_hostname", "?")
        delay, last_line, last_print = FIRST_POLL_S, None, time.monotonic()
        while True:
            time.sleep(delay)
            delay = min(delay * 2, float(interval))
            job, progress = self._poll(results_file, progress_file)
            if job and job.get("finished") is not False:
                break
            if progress.get("id") == args["progress_id"] and time.monotonic() - last_print >= interval - 0.05:
                line = progress_line(progress)
                if line != last_line:
                    display.display("[%s] %s: %s" % (host, self._label(), line))
                    last_line, last_print = line, time.monotonic()
        final = self._execute_module(
            module_name="ansible.legacy.async_status", module_args={"jid": jid, "_async_dir": self._async_dir()},
            task_vars=task_vars,
        )
        self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "mode": "cleanup", "_async_dir": self._async_dir()}, task_vars=task_vars,
        )
        self._remove_tmp_path(self._connection._shell.tmpdir)
        for key in ("ansible_job_id", "finished", "started", "results_file"):
            final.pop(key, None)
        if "changed" not in final and not final.get("failed"):
            raise AnsibleActionFail("%s job %s ended without a result: %s" % (self._label(), jid, final))
        if final.get("downloaded_bytes"):
            line = "done, %d file(s), %s" % (len(final.get("downloaded") or []), human_bytes(final["downloaded_bytes"]))
            if final["downloaded_bytes"] >= 10 ** 7 and final.get("throughput_mb_s"):
                line += " at %s MB/s" % final["throughput_mb_s"]
            display.display("[%s] %s: %s" % (host, self._label(), line))
        return final

    def _label(self):
        return self._task.action.rsplit(".", 1)[-1]

    def _async_dir(self):
        return self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
