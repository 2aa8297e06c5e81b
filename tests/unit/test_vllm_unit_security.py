"""The rendered vLLM unit scores an exposure of at most 2.0 in `systemd-analyze security --offline=true`.

systemd-analyze scores a unit file without a running systemd (systemd 252 on the bench machine). Each variant
the module can render is scored: GPU (DeviceAllow for the NVIDIA devices), CPU, and a venv under /root (the
bench's layout, bound read-only into a ProtectHome=tmpfs).
"""

import re
import shutil
import subprocess

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm

from test_vllm_validation import params

SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)")


def exposure(unit_text, directory):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (Debian) to score the unit"
    unit_file = directory / "vllm.service"
    unit_file.write_text(unit_text)
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit_file)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = SCORE.search(result.stdout)
    assert match, "no exposure score in systemd-analyze's output:\n%s\n%s" % (result.stdout, result.stderr)
    return float(match.group(1)), result.stdout


@pytest.mark.parametrize("variant", [
    dict(device="gpu"),
    dict(device="cpu", memory_max="20G"),
    dict(device="cpu", venv="/root/.cache/llmserve-aws/vllm-venv-1", model="/root/.cache/llmserve-aws/models/tiny"),
    dict(device="gpu", api_key="sk-1", hf_token="hf_1", environment={"CUDA_VISIBLE_DEVICES": "0,1"}),
])
def test_exposure_is_at_most_two(variant, tmp_path):
    unit_params = params(**variant)
    score, report = exposure(vllm.render_unit(unit_params, vllm.render_argv(unit_params)), tmp_path)
    assert score <= vllm.MAX_EXPOSURE, report


def test_the_check_can_fail_a_bare_unit(tmp_path):
    """The same scoring on vLLM's unit without the hardening gives the 9.6 UNSAFE of FIELD-NOTES."""
    bare = "[Service]\nExecStart=/opt/vllm/venv/bin/python -m vllm.entrypoints.openai.api_server\n"
    score, _report = exposure(bare, tmp_path)
    assert score > 9
