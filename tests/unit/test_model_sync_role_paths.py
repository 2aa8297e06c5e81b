"""roles/model_sync: the folder a model goes to, rendered from the role's own vars and assert with Ansible's templar.

Check mode must plan the folder the real run uses (the instance store's when the host has one), and a source whose
last component is '..' or '.' must fail the role's check before anything is written.
"""

from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.template import trust_as_template

ROLE = Path(__file__).resolve().parents[2] / "roles" / "model_sync"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
# Role files are trusted templates to Ansible; text read here must be marked so (ansible-core 2.19 data tagging).
DERIVED = {name: trust_as_template(value) if isinstance(value, str) else value
           for name, value in yaml.safe_load((ROLE / "vars" / "main.yml").read_text()).items()}
NAME_CHECK = next(task for task in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
                  if "folder name" in task["name"])["ansible.builtin.assert"]["that"]


def render(expression, check_mode, **overrides):
    variables = dict(DEFAULTS, **DERIVED)
    variables.update(ansible_check_mode=check_mode, **overrides)
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


@pytest.mark.parametrize("devices, root", [(["/dev/nvme1n1"], "/mnt/nvme/models"), ([], "/opt/models"), (None, "/opt/models")])
def test_check_mode_plans_the_folder_the_real_run_uses(devices, root):
    facts = {"model_sync_source": "s3://models/tiny"}
    if devices is not None:
        facts["_model_sync_store_plan"] = {"devices": devices}
        # In check mode the preparing task did not format anything, so it reports no device.
    planned = render("{{ _model_sync_dest }}", True, **facts)
    real = render("{{ _model_sync_dest }}", False, _model_sync_store={"device": "/dev/nvme1n1"}, **facts)
    assert planned == real == root + "/tiny"


@pytest.mark.parametrize("source, dest, valid", [
    ("s3://models/tiny", "", True), ("hf://org/Llama-3.1-8B@main", "", True), ("s3://models/x/..", "", False),
    ("s3://models/x/.", "", False), ("s3://models/x/../", "", False), ("s3://models/a b", "", False),
    ("s3://models/tiny", "/srv/models/../etc", False), ("s3://models/tiny", "srv/models", False),
    ("s3://models/tiny", "/srv/models/tiny\n", False), ("s3://models/tiny", "/srv/models/tiny", True),
])
def test_model_folder_name_and_dest_are_checked(source, dest, valid):
    results = [render("{{ %s }}" % condition, False, model_sync_source=source, model_sync_dest=dest)
               for condition in NAME_CHECK]
    assert all(result in (True, "True") for result in results) == valid, results
