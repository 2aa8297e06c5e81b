#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vllm_launch
short_description: Run vLLM's OpenAI-compatible server as a hardened, health-gated, drain-safe systemd service
version_added: 0.1.0
description:
  - Renders a systemd unit that runs C(python -m vllm.entrypoints.openai.api_server) from a venv, and a
    mode 0600 EnvironmentFile that holds the secrets (O(api_key) as C(VLLM_API_KEY), O(hf_token) as C(HF_TOKEN)),
    so that no secret is ever on the command line, in the unit file or in what the module returns.
  - Validates before writing anything. A GGUF model fails with C(vLLM does not serve GGUF; use llama.cpp's server or
    a safetensors model). For a local model folder it reads C(config.json) and fails when O(quantization)
    contradicts the checkpoint, when O(tensor_parallel_size) does not divide the attention heads, or when
    O(max_model_len) is above the model's maximum. It also fails on O(gpu_memory_utilization) outside (0, 1].
  - Reloads systemd and starts or restarts the service only when the unit, the environment file or the flags
    changed. Otherwise it reports C(changed=false) and the main process keeps its PID.
  - Then waits for C(/health) to answer 200 and for C(/v1/models) to list the served model. It can also run one
    tiny completion (O(smoke_test)). If the service crashes during the wait, the module fails at once and
    returns the last 50 journal lines. It does not wait out the restarts.
  - The unit uses C(KillMode=mixed), so SIGTERM reaches only vLLM's main process, which then drains in-flight
    requests for O(shutdown_timeout) seconds. C(TimeoutStopSec) is that plus 15 s. C(Restart=on-failure) with
    a start limit ends a crash loop in the C(failed) state. The hardening scores an exposure of at most 2.0 in
    C(systemd-analyze security) and keeps GPUs and PyTorch working.
author:
  - llmserve.aws maintainers (@llmserve)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmserve.aws.wait
attributes:
  check_mode:
    support: full
    details: Validates, renders and reports what would change (with a diff); writes, starts and waits for nothing.
  diff_mode:
    support: full
    details: Shows the unit, the environment file (values masked, changed ones marked) and the restart timer.
  platform:
    platforms: posix
options:
  name:
    description:
      - Service name. The unit is C(/etc/systemd/system/<name>.service), the environment file
        C(/etc/<name>/<name>.env), the state and cache folders C(/var/lib/<name>) and C(/var/cache/<name>).
    type: str
    default: vllm
  state:
    description:
      - V(started) makes sure the service runs with this configuration. It restarts the service only when
        something changed.
      - V(restarted) always restarts it. V(stopped) writes the configuration and stops the service, draining
        in-flight requests.
      - V(absent) stops and disables the service and removes its unit, environment file and timer.
      - The module overwrites or removes only files it wrote (their first line says so). It fails on a unit or
        environment file of the same name that someone else wrote, or on a unit systemd loads from elsewhere
        (a vendor unit such as C(sshd)), unless O(force=true).
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  force:
    description:
      - Overwrite or remove a unit, environment file or timer of this O(name) that this module did not write, and
        stop and disable a service of this name that systemd loads from another unit file.
      - Without it the module fails naming those files, and changes nothing.
    type: bool
    default: false
  enabled:
    description:
      - Whether the service starts at boot.
    type: bool
    default: true
  model:
    description:
      - The model, as vLLM's C(--model) takes it. This is a local folder (an absolute path) or a Hugging Face
        hub id.
      - For a local folder, C(config.json) is read to check the options against the model.
      - Required unless O(state=absent).
    type: str
  served_model_name:
    description:
      - The name clients use in requests and that C(/v1/models) lists. Defaults to O(model).
    type: str
  host:
    description:
      - Address to listen on. The default V(0.0.0.0) serves a load balancer. Use V(127.0.0.1) behind a
        local proxy.
      - The module itself connects through loopback when the address is a wildcard.
      - Any address other than 127.0.0.0/8, V(::1) or V(localhost) needs O(api_key) (or, on a test bench only,
        O(allow_no_api_key=true)).
    type: str
    default: 0.0.0.0
  port:
    description:
      - TCP port to listen on.
    type: int
    default: 8000
  tensor_parallel_size:
    description:
      - vLLM's C(--tensor-parallel-size). It must divide the model's attention heads. Not rendered when omitted
        (vLLM uses 1).
    type: int
  pipeline_parallel_size:
    description:
      - vLLM's C(--pipeline-parallel-size). Not rendered when omitted.
    type: int
  max_model_len:
    description:
      - vLLM's C(--max-model-len). It must not exceed the model's maximum from C(config.json), unless
        O(environment) sets C(VLLM_ALLOW_LONG_MAX_MODEL_LEN=1).
    type: int
  gpu_memory_utilization:
    description:
      - vLLM's C(--gpu-memory-utilization), a fraction in (0, 1].
    type: float
  quantization:
    description:
      - vLLM's C(--quantization), for example V(awq), V(gptq), V(fp8), V(awq_marlin). V(none) or omitting it
        renders no flag, so vLLM reads the method from the checkpoint.
      - Any method other than V(fp8), V(bitsandbytes) and V(experts_int8) needs a checkpoint made with it.
      - It must be one of vLLM's own method names. V(fp8) with a local FP8 checkpoint of another format (Meta's
        V(fbgemm_fp8), llm-compressor's V(compressed-tensors), NVIDIA's V(modelopt)) renders that format's name,
        which is the flag vLLM accepts for it.
    type: str
  dtype:
    description:
      - vLLM's C(--dtype).
    type: str
    choices: [auto, half, float16, bfloat16, float, float32]
  max_num_batched_tokens:
    description:
      - vLLM's C(--max-num-batched-tokens).
    type: int
  max_num_seqs:
    description:
      - vLLM's C(--max-num-seqs).
    type: int
  enforce_eager:
    description:
      - vLLM's C(--enforce-eager). It skips CUDA graph capture, which makes a cold start shorter and uses less
        memory. On CPU it starts in about half the time.
    type: bool
    default: false
  api_key:
    description:
      - "API key that clients of C(/v1) must send as C(Authorization: Bearer <key>). It is stored as
        C(VLLM_API_KEY) in the 0600 environment file."
      - vLLM guards only C(/v1). C(/health), C(/metrics), C(/version) and C(/tokenize) stay open, so a load
        balancer that forwards only C(/v1/*) is the real boundary.
      - Required when O(host) is beyond loopback, unless O(allow_no_api_key=true). The module fails before
        writing anything, naming this option.
    type: str
  allow_no_api_key:
    description:
      - Run vLLM beyond loopback without an API key. For a test bench only, where nothing but the tests can reach
        the port; never on a host a network can reach.
    type: bool
    default: false
  hf_token:
    description:
      - Hugging Face token for gated hub models. It is stored as C(HF_TOKEN) in the 0600 environment file.
    type: str
  secret_environment:
    description:
      - More environment variables that hold secrets. They go into the 0600 environment file and their values
        are masked in the diff.
    type: dict
  environment:
    description:
      - Environment variables that are not secret, written into the unit as C(Environment=) so that the diff
        shows them. Examples are C(VLLM_CPU_KVCACHE_SPACE) on CPU hosts and C(CUDA_VISIBLE_DEVICES).
      - The module already points C(HOME), C(HF_HOME), C(VLLM_CACHE_ROOT) and C(XDG_CACHE_HOME) at the
        service's state and cache folders, and turns off vLLM's usage statistics. Entries here override those.
      - C(VLLM_API_KEY) and C(HF_TOKEN) are refused here. Use O(api_key) and O(hf_token).
    type: dict
  shutdown_timeout:
    description:
      - vLLM's C(--shutdown-timeout). On stop, vLLM lets in-flight requests finish for up to this many seconds.
        Requests that arrive during the drain get an error.
      - The default, 90, fits with the 15 s margin of C(TimeoutStopSec) inside the 2-minute notice that EC2
        gives before it reclaims a spot instance. V(0) aborts in-flight requests at once.
    type: int
    default: 90
  extra_args:
    description:
      - More vLLM flags, one list item per word, appended to the command line.
      - Flags the module manages (C(--model), C(--port), C(--api-key) and the others this module has options for)
        are refused. Use the options instead.
    type: list
    elements: str
    default: []
  venv:
    description:
      - The virtual environment that vLLM is installed in. The service runs C(<venv>/bin/python).
    type: path
    default: /opt/vllm/venv
  user:
    description:
      - System user the service runs as. It must exist.
    type: str
    default: vllm
  group:
    description:
      - Group of the service. Defaults to O(user).
    type: str
  device:
    description:
      - V(gpu) lets the service open the NVIDIA device nodes (C(DeviceAllow=char-nvidia*)).
      - V(cpu) allows no device nodes (C(DevicePolicy=closed)). Use it with the C(vllm-cpu) package and
        C(VLLM_CPU_KVCACHE_SPACE) in O(environment).
    type: str
    choices: [gpu, cpu]
    default: gpu
  limit_nofile:
    description:
      - C(LimitNOFILE) of the service. vLLM warns below 65536.
    type: int
    default: 65536
  memory_max:
    description:
      - C(MemoryMax) of the service, like V(100G) or V(90%). Not set when omitted.
    type: str
  restart_sec:
    description:
      - C(RestartSec). This is how long systemd waits before it starts the service again after a crash.
    type: int
    default: 10
  start_limit_burst:
    description:
      - C(StartLimitBurst). After this many starts within O(start_limit_interval_sec), systemd leaves the
        service C(failed) instead of restarting it again.
    type: int
    default: 3
  start_limit_interval_sec:
    description:
      - C(StartLimitIntervalSec). See O(start_limit_burst).
    type: int
    default: 600
  restart_schedule:
    description:
      - A systemd calendar expression, for example V(Sun 04:00). When set, a timer restarts the service at those
        times, draining in-flight requests like any stop. vLLM's memory use grows over long uptimes
        (fragmentation, caches), and a planned restart at a quiet hour avoids that.
      - Off by default. When the option is removed, the timer is removed too.
    type: str
  restart_randomized_delay_sec:
    description:
      - C(RandomizedDelaySec) of the planned-restart timer, so that a fleet does not restart all at once.
    type: int
    default: 900
  smoke_test:
    description:
      - After the service is healthy, send one completion of a few tokens to the served model and return it.
    type: bool
    default: false
notes:
  - O(wait_timeout) bounds the wait for C(/health) and C(/v1/models) together. A cold start of a big model
    (download, load, CUDA graph capture) takes 10 minutes or more, so size it for the model.
  - A module cannot print while it runs. To see progress during a long cold start, run it with C(async) and
    C(poll=0), then loop on M(ansible.builtin.async_status). The role C(llmserve.aws.vllm_service) does this.
  - The environment file is read by systemd as root before it drops privileges. The service user cannot read it,
    but the running vLLM process holds the key in its environment. That environment is readable only by the
    service user and root.
  - The unit denies the instance metadata service (C(IPAddressDeny=169.254.169.254/32 fd00:ec2::254/128)), so a
    compromised model server cannot take the instance role's credentials. systemd enforces it with a cgroup BPF
    filter, which needs the unified cgroup hierarchy (the default on Ubuntu 22.04 and 24.04, Debian 12 and Amazon
    Linux 2023). vLLM therefore cannot load weights from S3 with the instance role itself, so sync them first (the
    role C(llmserve.aws.model_sync) does).
  - If the venv or a local model lives under C(/home), C(/root) or C(/run/user), the unit uses C(ProtectHome=tmpfs)
    and bind-mounts only those paths read-only. Otherwise it uses C(ProtectHome=yes).
seealso:
  - name: vLLM OpenAI-compatible server
    description: The server this module runs, and its flags.
    link: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html
  - name: systemd.exec
    description: The sandboxing options used in the unit.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html
"""

EXAMPLES = r"""
- name: Serve a local AWQ model on one GPU behind the load balancer
  llmserve.aws.vllm_launch:
    model: /srv/models/llama-3-8b-instruct-awq
    served_model_name: llama-3-8b
    quantization: awq
    max_model_len: 8192
    gpu_memory_utilization: 0.9
    api_key: "{{ vllm_api_key }}"
    venv: /opt/vllm/venv
    wait_timeout: 1200
    smoke_test: true
  register: vllm

- name: Serve on CPU (the test bench); progress shown by polling the async job
  llmserve.aws.vllm_launch:
    model: /srv/models/tiny
    served_model_name: tiny
    device: cpu
    dtype: float32
    enforce_eager: true
    environment:
      VLLM_CPU_KVCACHE_SPACE: "1"
      HF_HUB_OFFLINE: "1"
  async: 1000
  poll: 0
  register: vllm_job

- name: Wait for vLLM to become healthy
  ansible.builtin.async_status:
    jid: "{{ vllm_job.ansible_job_id }}"
  register: vllm
  until: vllm.finished
  retries: 200
  delay: 5

- name: Restart weekly at a quiet hour against memory growth
  llmserve.aws.vllm_launch:
    model: /srv/models/llama-3-8b-instruct-awq
    restart_schedule: Sun 04:00

- name: Remove the service
  llmserve.aws.vllm_launch:
    name: vllm
    state: absent
"""

RETURN = r"""
url:
  description: Base URL of the server as reached from the host itself.
  returned: unless O(state=absent)
  type: str
  sample: http://127.0.0.1:8000
pid:
  description: Main PID of the service after the run. V(0) when it is not running.
  returned: unless O(state=absent)
  type: int
  sample: 4242
restarted:
  description: Whether this run started or restarted the service.
  returned: unless O(state=absent)
  type: bool
time_to_healthy_s:
  description:
    - Seconds from the start or restart this run made until C(/health) answered. When the service was already
      running, this is the time the check took.
    - Null when nothing was awaited (O(wait=false), O(state=stopped), check mode).
  returned: unless O(state=absent)
  type: float
  sample: 27.4
vllm_version:
  description: The vLLM version that is serving (C(/version)), or the one installed in the venv when not serving.
  returned: unless O(state=absent)
  type: str
  sample: 0.32.0
command:
  description: The service's command line as a shell would read it, with every secret value masked.
  returned: unless O(state=absent)
  type: str
  sample: /opt/vllm/venv/bin/python -m vllm.entrypoints.openai.api_server --model /srv/models/m --port 8000
served_model_name:
  description: The name that C(/v1/models) lists and that requests use.
  returned: unless O(state=absent)
  type: str
unit_path:
  description: Path of the unit file.
  returned: always
  type: str
  sample: /etc/systemd/system/vllm.service
environment_file:
  description: Path of the 0600 environment file.
  returned: always
  type: str
  sample: /etc/vllm/vllm.env
status:
  description: The service's state as C(systemctl show) reports it after the run.
  returned: always
  type: dict
  sample: {active_state: active, sub_state: running, main_pid: 4242, n_restarts: 0, result: success}
waits:
  description: Each wait this run made, with what it waited for, how long and how many checks it took.
  returned: when the module waited
  type: list
  elements: dict
  sample: [{waited_for: "vLLM /health at http://127.0.0.1:8000", elapsed_s: 26.1, attempts: 6}]
smoke_test:
  description: The smoke completion, with its text, token count and latency.
  returned: when O(smoke_test=true) and the service is healthy
  type: dict
  sample: {text: " the", completion_tokens: 4, latency_s: 0.05}
journal:
  description: The service's last 50 journal lines.
  returned: on failure after the service was started
  type: list
  elements: str
"""

import json
import os
import pwd
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.aws.plugins.module_utils import _systemd as systemd
from ansible_collections.llmserve.aws.plugins.module_utils import _vllm as vllm
from ansible_collections.llmserve.aws.plugins.module_utils import _waiter as waiter
from ansible_collections.llmserve.aws.plugins.module_utils._atomic_file import write_atomically
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import ServiceCrashed
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import ServingCheckFailed
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import health_check
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import models_check
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import serving_version
from ansible_collections.llmserve.aws.plugins.module_utils._vllm_http import smoke_completion

JOURNAL_LINES = 50
# The unit and environment files belong to root: systemd reads them, the service user must not change them.
FILE_OWNER = "root"


class VllmLaunchError(Exception):
    """The one failure converge() raises: the message, and the result so far (status, journal) to return with it."""

    def __init__(self, message, result=None):
        super(VllmLaunchError, self).__init__(message)
        self.message = message
        self.result = result or {}


# ---------------------------------------------------------------------------------------------------------
# Reading


def read_text(path):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def read_model(model):
    """(config dict or None, file names or None, error or None) for the model argument."""
    if not vllm.is_local_model(model):
        return None, None, None
    if os.path.isfile(model):
        return None, [os.path.basename(model)], None
    if not os.path.isdir(model):
        return None, None, "model %s does not exist on the host (a local model must be a folder)" % model
    files = os.listdir(model)
    config_path = os.path.join(model, "config.json")
    if not os.path.isfile(config_path):
        return None, files, None
    try:
        with open(config_path, "r") as handle:
            config = json.load(handle)
    except (IOError, OSError, ValueError) as error:
        return None, files, "cannot read %s: %s" % (config_path, error)
    return config, files, None


def installed_vllm_version(venv):
    site_packages = []
    lib = os.path.join(venv, "lib")
    if os.path.isdir(lib):
        for entry in os.listdir(lib):
            candidate = os.path.join(lib, entry, "site-packages")
            if entry.startswith("python") and os.path.isdir(candidate):
                site_packages.extend(os.listdir(candidate))
    return vllm.version_from_dist_info(site_packages)


def describe_service(runner, paths, unit):
    """What is on the host now: file contents, their modes, and systemd's view of the service."""
    return {
        "unit_text": read_text(paths["unit"]),
        "environment_text": read_text(paths["environment_file"]),
        "restart_timer_text": read_text(paths["restart_timer"]),
        "restart_service_text": read_text(paths["restart_service"]),
        "status": runner.status(unit),
        "timer_status": runner.status(os.path.basename(paths["restart_timer"])),
    }


def desired_service(params, systemctl_path):
    argv = vllm.render_argv(params)
    desired = {
        "argv": argv,
        "unit_text": vllm.render_unit(params, argv),
        "environment_text": vllm.render_environment_file(vllm.secret_environment(params)),
        "restart_timer_text": None,
        "restart_service_text": None,
    }
    if params.get("restart_schedule"):
        desired["restart_timer_text"] = vllm.render_restart_timer(
            params["name"], params["restart_schedule"], params["restart_randomized_delay_sec"])
        desired["restart_service_text"] = vllm.render_restart_service(params["name"], systemctl_path)
    return desired


# ---------------------------------------------------------------------------------------------------------
# Writing


def write_file(module, path, content, mode):
    """Atomically replace path with content, owned by root with the given mode (never briefly wider)."""
    def own(temporary):
        module.set_owner_if_different(temporary, FILE_OWNER, False)
        module.set_group_if_different(temporary, FILE_OWNER, False)
    try:
        write_atomically(path, content, mode=mode, prepare=own)
    except (IOError, OSError) as error:
        raise VllmLaunchError("cannot write %s: %s" % (path, error)) from None


def remove_file(path):
    try:
        os.unlink(path)
    except OSError as error:
        if os.path.exists(path):
            raise VllmLaunchError("cannot remove %s: %s" % (path, error)) from None


def fix_metadata(module, path, mode):
    """Mode and root ownership of a file whose content is right; True when they were (or would be) changed."""
    changed = module.set_mode_if_different(path, mode, False)
    changed = module.set_owner_if_different(path, FILE_OWNER, changed)
    return module.set_group_if_different(path, FILE_OWNER, changed)


def ensure_files(module, paths, current, desired, check_mode):
    """Write what differs. Returns the names of the files that changed ('unit', 'environment', 'timer')."""
    changed = set()
    if current["unit_text"] != desired["unit_text"]:
        changed.add("unit")
    elif fix_metadata(module, paths["unit"], 0o644):
        changed.add("unit")
    if current["environment_text"] != desired["environment_text"]:
        changed.add("environment")
    elif fix_metadata(module, paths["environment_file"], 0o600):
        changed.add("environment")
    timer_files = ("restart_timer_text", "restart_service_text")
    if any(current[key] != desired[key] for key in timer_files):
        changed.add("timer")
    if check_mode:
        return changed
    if "environment" in changed:
        if not os.path.isdir(paths["environment_dir"]):
            os.makedirs(paths["environment_dir"], 0o700)
        write_file(module, paths["environment_file"], desired["environment_text"], 0o600)
    if "unit" in changed:
        write_file(module, paths["unit"], desired["unit_text"], 0o644)
    if "timer" in changed:
        for key, text_key in (("restart_timer", "restart_timer_text"), ("restart_service", "restart_service_text")):
            if desired[text_key] is None:
                remove_file(paths[key])
            else:
                write_file(module, paths[key], desired[text_key], 0o644)
    return changed


def build_diff(paths, current, desired):
    before_environment = vllm.masked_environment_file(current["environment_text"])
    after_environment = vllm.masked_environment_file(desired["environment_text"], current["environment_text"])
    return [
        {"before_header": paths["unit"], "after_header": paths["unit"],
         "before": current["unit_text"] or "", "after": desired["unit_text"] or ""},
        {"before_header": paths["environment_file"] + " (values masked)",
         "after_header": paths["environment_file"] + " (values masked)",
         "before": before_environment or "", "after": after_environment or ""},
        {"before_header": paths["restart_timer"], "after_header": paths["restart_timer"],
         "before": current["restart_timer_text"] or "", "after": desired["restart_timer_text"] or ""},
    ]


# ---------------------------------------------------------------------------------------------------------
# States


def ensure_running(runner, unit, status, restart):
    """Start or restart the service; returns the status to measure crashes against."""
    if status.exists:
        # Clears a failed state and the start rate counter: a deliberate start must not be refused because of
        # earlier starts, and the start limit should count only the crashes that follow it.
        runner.reset_failed(unit)
    if restart:
        runner.restart(unit)
    else:
        runner.start(unit)
    return runner.status(unit)


def refuse_foreign(module, paths, current):
    """Fail, before any change, when this name belongs to files or a unit this module did not write."""
    if module.params.get("force"):
        return
    texts = {paths["unit"]: current["unit_text"], paths["environment_file"]: current["environment_text"],
             paths["restart_timer"]: current["restart_timer_text"],
             paths["restart_service"]: current["restart_service_text"]}
    fragment = current["status"].properties.get("FragmentPath") if current["status"].exists else None
    foreign = vllm.foreign_files(paths, texts, fragment)
    if foreign:
        raise VllmLaunchError("name=%s belongs to files this module did not write (%s): choose another name, or set "
                              "force=true to take them over" % (module.params["name"], ", ".join(foreign)))


def ensure_present(module, runner, paths, unit, current, desired, check_mode):
    """Files, daemon-reload, enablement, and start/stop per state. Returns (changed, restarted, baseline)."""
    params = module.params
    refuse_foreign(module, paths, current)
    state = params["state"]
    changed_files = ensure_files(module, paths, current, desired, check_mode)
    changed = bool(changed_files)
    status = current["status"]
    if changed_files and not check_mode:
        runner.daemon_reload()
        status = runner.status(unit)

    if params["enabled"] != status.enabled:
        changed = True
        if not check_mode:
            (runner.enable if params["enabled"] else runner.disable)(unit)

    timer = os.path.basename(paths["restart_timer"])
    timer_status = current["timer_status"]
    timer_stale = any((timer_status.active_state != systemd.ACTIVE, not timer_status.enabled, "timer" in changed_files))
    if desired["restart_timer_text"] and timer_stale:
        changed = True
        if not check_mode:
            runner.enable(timer)
            runner.restart(timer)
    if not desired["restart_timer_text"] and current["timer_status"].exists and current["restart_timer_text"]:
        changed = True
        if not check_mode:
            runner.stop(timer)

    restarted = False
    baseline = status
    if state == "stopped":
        if status.active_state in (systemd.ACTIVE, systemd.ACTIVATING, "reloading"):
            changed = True
            if not check_mode:
                runner.stop(unit)
        return changed, restarted, baseline

    config_changed = bool({"unit", "environment"} & changed_files)
    must_restart = state == "restarted" or (config_changed and status.active_state != systemd.INACTIVE)
    if must_restart or not status.running:
        changed = True
        restarted = True
        if not check_mode:
            baseline = ensure_running(runner, unit, status, restart=must_restart)
    return changed, restarted, baseline


def ensure_absent(module, runner, paths, unit, current, check_mode):
    present = [path for key, path in sorted(paths.items())
               if key in ("unit", "environment_file", "restart_timer", "restart_service") and os.path.exists(path)]
    status = current["status"]
    if not present and not status.exists:
        return False
    refuse_foreign(module, paths, current)
    if check_mode:
        return True
    timer = os.path.basename(paths["restart_timer"])
    if current["timer_status"].exists:
        runner.systemctl_run("disable", "--now", "--", timer)
    if status.exists:
        runner.systemctl_run("disable", "--now", "--", unit)
    for path in present:
        remove_file(path)
    if os.path.isdir(paths["environment_dir"]) and not os.listdir(paths["environment_dir"]):
        os.rmdir(paths["environment_dir"])
    runner.daemon_reload()
    if runner.status(unit).failed:
        runner.reset_failed(unit)
    return True


def wait_until_serving(module, runner, unit, baseline, url, started_at):
    """Wait for /health, then /v1/models listing the served name. Returns (time_to_healthy_s, waits)."""
    params = module.params
    health = waiter.wait_for(health_check(runner, unit, baseline, url), "vLLM /health at %s" % url,
                             params["wait_timeout"], params["wait_sleep"])
    time_to_healthy = time.monotonic() - started_at
    remaining = max(1, params["wait_timeout"] - int(health.elapsed))
    models = waiter.wait_for(models_check(params, url), "%s listed by %s/v1/models" % (vllm.served_name(params), url),
                             remaining, params["wait_sleep"])
    return round(time_to_healthy, 3), [health.as_dict(), models.as_dict()]


def validate(module):
    """Fail before anything is written. Prerequisites that an earlier task of the same play creates (venv, user,
    synced model) are only warnings in check mode, where that task did not really run."""
    params = module.params
    if params["state"] == "absent":
        # The name alone picks the files that are removed: it must not climb out of /etc/systemd/system.
        error = vllm.grammar.unit_name("name", params["name"])
        if error:
            module.fail_json(msg=error)
        return
    errors = vllm.validate_params(params)
    if errors:
        module.fail_json(msg="; ".join(errors))

    def missing(message):
        if module.check_mode:
            module.warn(message + " (check mode: assuming an earlier task creates it)")
        else:
            module.fail_json(msg=message)

    config, files, problem = read_model(params["model"])
    if problem:
        missing(problem)
    refusal = vllm.gguf_refusal(params["model"], files)
    if refusal:
        module.fail_json(msg=refusal)
    if config is not None:
        errors = vllm.validate_model_config(config, params)
        if errors:
            module.fail_json(msg="; ".join(errors))
        # An FP8 checkpoint of another format (fbgemm_fp8, compressed-tensors, modelopt) is served with its own flag.
        params["quantization"] = vllm.effective_quantization(config, params.get("quantization"))
    if not os.access(os.path.join(params["venv"], "bin", "python"), os.X_OK):
        missing("venv %s has no bin/python: install vLLM into it first (the role llmserve.aws.vllm_service does)"
                % params["venv"])
    try:
        pwd.getpwnam(params["user"])
    except KeyError:
        missing("user %s does not exist: create the service user first" % params["user"])
    if params.get("restart_schedule"):
        analyze = module.get_bin_path("systemd-analyze")
        if analyze:
            rc, _out, err = module.run_command([analyze, "calendar", params["restart_schedule"]])
            if rc != 0:
                module.fail_json(msg="restart_schedule %r is not a systemd calendar expression: %s"
                                     % (params["restart_schedule"], err.strip()))


ARGUMENT_SPEC = dict(
    name=dict(type="str", default="vllm"),
    state=dict(type="str", default="started", choices=["started", "stopped", "restarted", "absent"]),
    force=dict(type="bool", default=False),
    enabled=dict(type="bool", default=True),
    model=dict(type="str"),
    served_model_name=dict(type="str"),
    host=dict(type="str", default="0.0.0.0"),
    port=dict(type="int", default=8000),
    tensor_parallel_size=dict(type="int"),
    pipeline_parallel_size=dict(type="int"),
    max_model_len=dict(type="int"),
    gpu_memory_utilization=dict(type="float"),
    quantization=dict(type="str"),
    dtype=dict(type="str", choices=list(vllm.DTYPES)),
    max_num_batched_tokens=dict(type="int", no_log=False),
    max_num_seqs=dict(type="int"),
    enforce_eager=dict(type="bool", default=False),
    api_key=dict(type="str", no_log=True),
    allow_no_api_key=dict(type="bool", default=False),
    hf_token=dict(type="str", no_log=True),
    secret_environment=dict(type="dict", no_log=True),
    environment=dict(type="dict"),
    shutdown_timeout=dict(type="int", default=90),
    extra_args=dict(type="list", elements="str", default=[]),
    venv=dict(type="path", default="/opt/vllm/venv"),
    user=dict(type="str", default="vllm"),
    group=dict(type="str"),
    device=dict(type="str", default="gpu", choices=list(vllm.DEVICES)),
    limit_nofile=dict(type="int", default=65536),
    memory_max=dict(type="str"),
    restart_sec=dict(type="int", default=10),
    start_limit_burst=dict(type="int", default=3),
    start_limit_interval_sec=dict(type="int", default=600),
    restart_schedule=dict(type="str"),
    restart_randomized_delay_sec=dict(type="int", default=900),
    smoke_test=dict(type="bool", default=False),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=900),
    wait_sleep=dict(type="int", default=5),
)


def converge(module, runner, paths, systemctl_path):
    """Bring the service to module.params' state; returns the result, or raises VllmLaunchError.

    Read what is there, compute and apply the change (nothing in check mode), wait until vLLM serves, read again.
    """
    params = module.params
    check_mode = module.check_mode
    unit = params["name"] + ".service"
    result = dict(changed=False, unit_path=paths["unit"], environment_file=paths["environment_file"])
    try:
        current = describe_service(runner, paths, unit)
        if params["state"] == "absent":
            result["changed"] = ensure_absent(module, runner, paths, unit, current, check_mode)
            result["status"] = (current["status"] if check_mode else runner.status(unit)).as_dict()
            if module._diff:
                empty = {"unit_text": None, "environment_text": None, "restart_timer_text": None}
                result["diff"] = build_diff(paths, current, empty)
            return result

        desired = desired_service(params, systemctl_path)
        url = vllm.base_url(params["host"], params["port"])
        result.update(url=url, command=vllm.masked_command(desired["argv"], vllm.secret_values(params)),
                      served_model_name=vllm.served_name(params), time_to_healthy_s=None,
                      vllm_version=installed_vllm_version(params["venv"]))
        if module._diff:
            result["diff"] = build_diff(paths, current, desired)

        started_at = time.monotonic()
        changed, restarted, baseline = ensure_present(module, runner, paths, unit, current, desired, check_mode)
        result.update(changed=changed, restarted=restarted)
        if check_mode or params["state"] == "stopped" or not params["wait"]:
            final = current["status"] if check_mode else runner.status(unit)
            result.update(status=final.as_dict(), pid=final.main_pid)
            return result

        if not restarted:
            started_at = time.monotonic()
        time_to_healthy, waits = wait_until_serving(module, runner, unit, baseline, url, started_at)
        result.update(time_to_healthy_s=time_to_healthy, waits=waits)
        result["vllm_version"] = serving_version(url) or result["vllm_version"]
        if params["smoke_test"]:
            result["smoke_test"] = smoke_completion(params, url)
        final = runner.status(unit)
        result.update(status=final.as_dict(), pid=final.main_pid)
        return result
    except systemd.SystemdError as error:
        raise failure_with_journal(runner, unit, result, "systemd refused: %s (command: %s)"
                                   % (error.detail, " ".join(error.command or []))) from None
    except ServiceCrashed as error:
        message = "%s; systemd restarts it up to %d times within %d s, then leaves it failed; see journal" % (
            error, params["start_limit_burst"], params["start_limit_interval_sec"])
        raise failure_with_journal(runner, unit, result, message) from None
    except (waiter.WaitTimeout, ServingCheckFailed) as error:
        raise failure_with_journal(runner, unit, result, str(error)) from None


def failure_with_journal(runner, unit, result, message):
    """The error to raise, carrying the result so far, the journal's tail and systemd's last word. When a unit it
    requires failed (the boot path's model sync), that unit's journal comes first: it says why vLLM did not start."""
    journal = runner.journal_tail(unit, JOURNAL_LINES)
    try:
        for required in runner.failed_requirements(unit):
            journal = ["-- %s (required by %s) failed:" % (required, unit)] + runner.journal_tail(required, 20) + [
                "-- %s:" % unit] + journal
    except systemd.SystemdError:
        pass  # the journal of the unit itself is still worth returning
    result = dict(result, journal=journal)
    try:
        status = runner.status(unit)
        result.update(status=status.as_dict(), pid=status.main_pid)
    except systemd.SystemdError as error:
        result["status_error"] = error.detail
    return VllmLaunchError(message, result)


def build_module():
    return AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "started", ("model",)), ("state", "restarted", ("model",)),
                     ("state", "stopped", ("model",))],
        supports_check_mode=True,
    )


def main():
    module = build_module()
    systemctl_path = module.get_bin_path("systemctl", required=True)
    journalctl_path = module.get_bin_path("journalctl") or "journalctl"
    runner = systemd.SystemdRunner(module.run_command, systemctl_path, journalctl_path)
    validate(module)
    try:
        result = converge(module, runner, vllm.service_paths(module.params["name"]), systemctl_path)
    except VllmLaunchError as error:
        module.fail_json(msg=error.message, **error.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
