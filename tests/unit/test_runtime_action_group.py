"""meta/runtime.yml's `aws` action group holds exactly the modules that call AWS, and extends amazon.aws's group.

`module_defaults: group/llmserve.aws.aws` (README) reaches only the modules listed there; a new AWS module left out
would silently ignore the play's region, profile and endpoint.
"""

import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())


def _aws_modules():
    modules = set()
    for path in (REPO_ROOT / "plugins" / "modules").glob("*.py"):
        if re.search(r"\bAnsibleAWSModule\(", path.read_text()):
            modules.add(path.stem)
    return modules


def test_aws_group_lists_every_module_that_calls_aws():
    group = RUNTIME["action_groups"]["aws"]
    listed = {entry for entry in group if isinstance(entry, str)}
    assert _aws_modules(), "no module builds an AnsibleAWSModule: the scan is broken"
    assert listed == _aws_modules()


def test_aws_group_extends_amazon_aws_group():
    [metadata] = [entry["metadata"] for entry in RUNTIME["action_groups"]["aws"] if isinstance(entry, dict)]
    assert metadata == {"extend_group": ["amazon.aws.aws"]}
