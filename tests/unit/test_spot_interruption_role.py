"""roles/spot_interruption: defaults and argument_specs describe the same variables, the tasks use no undocumented
public variable, handlers are FQCN and capitalised, and the config the role renders is one the watcher accepts."""

import importlib.util
import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "spot_interruption"
# Facts the role sets itself (set_fact / register), so they have no default.
SET_BY_ROLE = {"spot_interruption_iam_policy"}

_spec = importlib.util.spec_from_file_location("llmserve_spot_watcher", ROLE / "files" / "llmserve_spot_watcher.py")
watcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(watcher)


def load(relative):
    return yaml.safe_load((ROLE / relative).read_text())


def test_iam_policy_entry_point_options_match_the_main_ones():
    specs = load("meta/argument_specs.yml")["argument_specs"]
    main, iam = specs["main"]["options"], specs["iam_policy"]["options"]
    for name, spec in iam.items():
        assert spec["type"] == main[name]["type"], name
        assert spec.get("default") == main[name].get("default"), name


def test_public_variables_are_prefixed_and_derived_ones_underscored():
    assert all(name.startswith("spot_interruption_") for name in load("defaults/main.yml"))
    assert all(name.startswith("_spot_interruption_") for name in load("vars/main.yml"))


def test_tasks_and_templates_use_only_documented_variables():
    defaults = set(load("defaults/main.yml"))
    derived = set(load("vars/main.yml"))
    used = set()
    for path in [*ROLE.glob("tasks/*.yml"), *ROLE.glob("templates/*.j2"), ROLE / "vars" / "main.yml",
                 ROLE / "handlers" / "main.yml"]:
        used |= set(re.findall(r"\b_?spot_interruption_[a-z0-9_]+\b", path.read_text()))
    tasks_text = "\n".join(path.read_text() for path in ROLE.glob("tasks/*.yml"))
    # The other underscored names are results the tasks register or facts they set.
    for name in {name for name in used if name.startswith("_")} - derived:
        assert re.search(rf"register: {name}$|^\s+{name}:", tasks_text, re.MULTILINE), name
    unknown = {name for name in used if not name.startswith("_")} - defaults - SET_BY_ROLE
    assert unknown == set()
    assert defaults - used == set(), "defaults no task reads"


def test_handlers_are_fqcn_and_capitalised():
    for handler in load("handlers/main.yml"):
        assert handler["name"][0].isupper()
        module = next(key for key in handler if key not in {"name", "listen", "when"})
        assert module.startswith("ansible.builtin.")


def test_rendered_config_keys_are_the_watchers():
    config_keys = set(load("vars/main.yml")["_spot_interruption_config"])
    known = {field.name for field in watcher.dataclasses.fields(watcher.Config)}
    assert config_keys <= known
    # Only stop_command and start_command (host tests without systemd) and the fallback/idle/backoff tunables stay
    # at the watcher's defaults.
    assert known - config_keys == {
        "stop_command",
        "start_command",
        "aws_backoff_base_s",
        "aws_backoff_cap_s",
        "fallback_notice_s",
        "idle_confirmations",
        "imds_timeout_s",
        "drain_check_interval_s",
        "vllm_timeout_s",
    }


def test_watcher_defaults_match_the_role_defaults():
    defaults = load("defaults/main.yml")
    config = watcher.Config()
    assert config.deregistration_delay_s == defaults["spot_interruption_deregistration_delay"]
    assert config.stop_margin_s == defaults["spot_interruption_stop_margin"]
    assert config.poll_interval_s == defaults["spot_interruption_poll_interval"]
    assert config.imds_endpoint == defaults["spot_interruption_imds_endpoint"]
    assert config.imds_token_ttl_s == defaults["spot_interruption_imds_token_ttl"]
    assert config.max_identical_failures == defaults["spot_interruption_max_identical_failures"]
    assert list(config.scheduled_event_codes) == defaults["spot_interruption_scheduled_event_codes"]
    assert config.act_on_rebalance == defaults["spot_interruption_act_on_rebalance"]
    assert config.state_dir == load("vars/main.yml")["_spot_interruption_state_dir"]
