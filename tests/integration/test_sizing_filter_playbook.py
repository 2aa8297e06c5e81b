"""The sizing filters through a real ansible-playbook run (tests/unit/test_sizing_filter.py calls them directly)."""

import json
import sys

from tests.support.playbook import run_playbook
from tests.unit.test_sizing_filter import QWEN25_7B, sizing_filters

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Plan in a template
      ansible.builtin.set_fact:
        plan: "{{ 70 | llmserve.aws.plan_instance(dtype='float16', max_model_len=8192, concurrency=16) }}"
        per_gpu: "{{ 70 | llmserve.aws.model_memory_gib(dtype='float16', max_model_len=8192, concurrency=16,
                                                        tensor_parallel_size=8) }}"
        from_config: "{{ lookup('ansible.builtin.file', config_path) | from_json
                         | llmserve.aws.model_memory_gib(max_model_len=8192) }}"
    - name: Write them out
      ansible.builtin.copy:
        content: "{{ {'instance': plan.instance_type, 'tp': plan.tensor_parallel_size, 'per_gpu': per_gpu,
                      'from_config': from_config} | to_json }}"
        dest: "{{ result_path }}"
        mode: "0644"
    - name: A profile that does not fit fails the task
      ansible.builtin.debug:
        msg: "{{ 405 | llmserve.aws.plan_instance(dtype='bfloat16', instance_type='p5.48xlarge') }}"
"""


def test_filters_in_a_real_playbook(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_7B))
    completed = run_playbook(
        "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
        "-e", "config_path=%s result_path=%s" % (tmp_path / "config.json", tmp_path / "result.json"),
        "-e", "ansible_python_interpreter=%s" % sys.executable, timeout_s=120)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output  # the last task fails, as it should
    shown = json.loads((tmp_path / "result.json").read_text())
    assert shown == {"instance": "p4d.24xlarge", "tp": 8, "per_gpu": 24.34,
                     "from_config": sizing_filters.model_memory_gib(QWEN25_7B, max_model_len=8192)}
    assert "dtype=fp8 quantization=fp8 fits p5.48xlarge" in output
