"""Runs a module's main() in this process for unit tests of its arguments, results and failures.

exit_json and fail_json raise Exited with the result as Ansible would receive it (round-tripped through JSON).
"""

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class Exited(Exception):
    def __init__(self, result, failed):
        super().__init__(result.get("msg", ""))
        self.result = result
        self.failed = failed


def capture_exit(monkeypatch):
    def exit_json(self, **result):
        raise Exited(json.loads(json.dumps(result)), failed=False)

    def fail_json(self, msg, **result):
        raise Exited(json.loads(json.dumps(dict(result, msg=msg))), failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


def run_main(main, args):
    """main() with args as the module's arguments; returns the Exited it ended with (capture_exit first)."""
    with patch_module_args(args):
        with pytest.raises(Exited) as exited:
            main()
    return exited.value
