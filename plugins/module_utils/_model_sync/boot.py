# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot-time model sync: what llmserve-model-sync.service runs before vLLM on every boot, with no Ansible.

Private to this collection. The model_sync role copies this package (and what it imports) to the host and runs

    python -m ansible_collections.llmserve.aws.plugins.module_utils._model_sync.boot --config FILE

with the role's venv. It syncs exactly as the s3_model_sync module does (same ModelSync, manifest, engines and
verification): a model already present and verified is not downloaded again. Credentials come from boto3's chain,
on EC2 the instance profile, unless the role was given keys: then they are read from ``credentials_file`` (root
only), never through the unit, the environment or a command line. Failures
that can pass (S3 or IMDS not reachable yet, throttling, a broken transfer) are retried for ``retry_for_s``; the
whole run is bounded by ``timeout_s``. The exit status is 0 only when the model is in place, so the units that
require this one (vLLM) do not start on a failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from ansible_collections.llmserve.aws.plugins.module_utils import _nvme
from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._instance_store import InstanceStoreHost
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import ManifestError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.module import common_option_errors
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.s3_engine import choose_s3_engine
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import CREDENTIAL_CODES
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import DENIED_CODES
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3Source
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.source_s3 import S3SyncError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import ModelStore
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import StoreError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.sync import ModelSync
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import MIB

# The configuration file's keys (the role's templates/model-sync.json.j2) and their types.
CONFIG_TYPES = {
    "source": str, "dest": str, "exclude": list, "engine": str, "workers": int, "concurrency": int,
    "part_size_mib": int, "verify": str, "keep_versions": int, "min_free_mib": int, "region": str,
    "endpoint_url": str, "timeout_s": int, "retry_for_s": int, "retry_interval_s": int, "progress_interval_s": int,
    "required_by": list, "credentials_file": str, "imds_endpoint": str, "instance_store": dict,
}
# The instance_store object when the role manages one ({} otherwise): the instance_store module's options.
STORE_TYPES = {"devices": list, "fstype": str, "label": str, "raid_name": str, "force": bool, "mount_point": str}
ENGINES = ("auto", "s5cmd", "boto3")
VERIFY_METHODS = ("checksum", "size")
# S3 answers that another try cannot change: the operator has to act (grant, fix the name, fix the keys).
FINAL_S3_CODES = frozenset(DENIED_CODES + CREDENTIAL_CODES + ("NoSuchBucket",))
COMMAND_TIMEOUT_S = 600  # one lsblk, blkid, mdadm, mkfs or mount (mkfs of a multi-TB array without discard)
SERVICE_UNIT = re.compile(r"\A[A-Za-z0-9_.@-]{1,200}\.service\Z")
IMDS_ENDPOINT = re.compile(r"\Ahttps?://[A-Za-z0-9.:\[\]-]+\Z")


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the key and the fix."""


def config_errors(config):
    """Every error in a parsed configuration (a dict), each naming its key; [] when it is usable."""
    if not isinstance(config, dict):
        return ["the configuration must be a JSON object"]
    errors = ["unknown key %r (known: %s)" % (key, ", ".join(sorted(CONFIG_TYPES)))
              for key in sorted(set(config) - set(CONFIG_TYPES))]
    errors += ["missing key %r" % key for key in sorted(set(CONFIG_TYPES) - set(config))]
    for key, kind in CONFIG_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, kind) or isinstance(value, bool)):
            errors.append("%s must be a %s, got %r" % (key, kind.__name__, value))
    if errors:
        return errors
    try:
        mm.parse_s3_uri(config["source"])
    except ManifestError as error:
        errors.append("source: %s" % error)
    errors += common_option_errors(dict(config, progress_id=None))
    for key in ("workers", "concurrency", "part_size_mib", "keep_versions", "timeout_s", "retry_for_s",
                "retry_interval_s", "progress_interval_s"):
        if config[key] < 1:
            errors.append("%s must be at least 1, got %d" % (key, config[key]))
    if config["engine"] not in ENGINES:
        errors.append("engine must be one of %s, got %r" % (", ".join(ENGINES), config["engine"]))
    if config["verify"] not in VERIFY_METHODS:
        errors.append("verify must be one of %s, got %r" % (", ".join(VERIFY_METHODS), config["verify"]))
    for key in ("region", "endpoint_url"):
        errors.append(grammar.control_character(key, config[key]))
    if config["credentials_file"]:
        errors.append(grammar.absolute_path("credentials_file", config["credentials_file"], allow_root=False))
    if not IMDS_ENDPOINT.match(config["imds_endpoint"]):
        errors.append("imds_endpoint must be http(s)://host[:port], got %r" % (config["imds_endpoint"],))
    errors += store_errors(config["instance_store"])
    for unit in config["required_by"]:
        if not isinstance(unit, str) or not SERVICE_UNIT.match(unit):
            errors.append("required_by item %r must be a service unit name such as vllm.service" % (unit,))
    return [error for error in errors if error]


def store_errors(store):
    """Errors in the instance_store object (empty: none managed), each naming its key."""
    if not store:
        return []
    errors = ["instance_store: unknown key %r" % key for key in sorted(set(store) - set(STORE_TYPES))]
    errors += ["instance_store: missing key %r" % key for key in sorted(set(STORE_TYPES) - set(store))]
    if errors:
        return errors
    for key, kind in STORE_TYPES.items():
        if not isinstance(store[key], kind) or (kind is not bool and isinstance(store[key], bool)):
            errors.append("instance_store.%s must be a %s, got %r" % (key, kind.__name__, store[key]))
    if errors:
        return errors
    options = {"devices": store["devices"], "fstype": store["fstype"], "label": store["label"],
               "raid_name": store["raid_name"], "mount_point": store["mount_point"]}
    errors = _nvme.validate_options(options)
    if store["fstype"] not in _nvme.FSTYPES:
        errors.append("fstype must be one of %s, got %r" % (", ".join(_nvme.FSTYPES), store["fstype"]))
    return ["instance_store: %s" % error for error in errors]


def load_config(path):
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (IOError, OSError, ValueError) as error:
        raise ConfigError("cannot read the configuration %s: %s" % (path, error))
    errors = config_errors(config)
    if errors:
        raise ConfigError("configuration %s: %s; the model_sync role writes this file, run it again"
                          % (path, "; ".join(errors)))
    return config


def is_final(error):
    """True for a failure another try cannot fix: a bad manifest or store, or S3 refusing on principle."""
    if isinstance(error, (ConfigError, ManifestError, StoreError, _nvme.InstanceStoreError)):
        return True
    return isinstance(error, S3SyncError) and error.code in FINAL_S3_CODES


def log(message):
    """One line to stdout, which systemd sends to the journal."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class _ProgressLogger(object):
    """Logs the store's progress record (ProgressMonitor writes it) every interval while a sync runs."""

    def __init__(self, store, interval_s):
        self.store, self.interval_s = store, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self._thread.daemon = True
        self._last = None

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            try:
                with open(self.store.progress_path) as handle:
                    record = json.load(handle)
            except (IOError, OSError, ValueError):
                continue  # no transfer yet, or a record being replaced
            line = mm.progress_line(record)
            if line != self._last:
                log("progress: " + line)
                self._last = line

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def given_credentials(path):
    """The keys in the root-only file the role wrote (JSON: access_key, secret_key, session_token), or None when
    there is none (the instance profile then). Its content never reaches a message."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            keys = json.load(handle)
    except (IOError, OSError, ValueError) as error:
        raise ConfigError("the credentials file %s is unreadable (%s); run the model_sync role again" % (
            path, type(error).__name__))
    if not isinstance(keys, dict) or not keys.get("access_key") or not keys.get("secret_key"):
        raise ConfigError("the credentials file %s lacks access_key or secret_key; run the model_sync role again"
                          % path)
    return keys


def _s3_client(config, botocore_config):
    import boto3  # in the role's venv; imported here so that checking the configuration needs no SDK

    keys = given_credentials(config["credentials_file"]) or {}
    # Without keys, botocore's chain asks IMDS for the instance profile's credentials, here.
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = config["imds_endpoint"]
    session = boto3.session.Session(region_name=config["region"] or None, aws_access_key_id=keys.get("access_key"),
                                    aws_secret_access_key=keys.get("secret_key"),
                                    aws_session_token=keys.get("session_token") or None)
    credentials = session.get_credentials()
    if credentials is None:
        raise S3SyncError("no AWS credentials: the boot path uses the instance profile (attach one whose role has "
                          "s3:ListBucket and s3:GetObject on the model), and IMDS did not give any")
    frozen = credentials.get_frozen_credentials()
    client = session.client("s3", endpoint_url=config["endpoint_url"] or None, config=botocore_config)
    return client, frozen


def sync_once(config):
    """One sync of the configured model; its result dict (ModelSync.run)."""
    import botocore.config

    bucket, prefix = mm.parse_s3_uri(config["source"])
    botocore_config = botocore.config.Config(connect_timeout=10, read_timeout=60,
                                             retries={"mode": "standard", "max_attempts": 3})
    client, credentials = _s3_client(config, botocore_config)
    # s5cmd gets the same (instance profile) credentials through its environment, never its command line.
    params = dict(config, access_key=credentials.access_key, secret_key=credentials.secret_key,
                  session_token=credentials.token, validate_certs=True, s5cmd_path=None)
    engine = choose_s3_engine(params, lambda: client, lambda message: log("warning: " + message))
    source = S3Source(lambda: client, bucket, prefix, config["exclude"], lister=getattr(engine, "list_objects", None))
    store = ModelStore(config["dest"])
    sync = ModelSync(store, source, engine, verify=config["verify"], keep_versions=config["keep_versions"],
                     reserve_bytes=config["min_free_mib"] * MIB, warn=lambda message: log("warning: " + message))
    with _ProgressLogger(store, config["progress_interval_s"]):
        return sync.run()


def _summary(result):
    if not result["changed"]:
        return "up to date: version=%s at %s, whole against its manifest, nothing downloaded (%d files, %s)" % (
            result["version"], result["model_path"], result["files"], mm.human_bytes(result["total_bytes"]))
    return "synced: version=%s at %s (was %s), downloaded %d of %d files (%s) with %s, re-verified %d in place, " \
        "in %.1f s" % (
            result["version"], result["model_path"], result["previous_version"] or "none", len(result["downloaded"]),
            result["files"], mm.human_bytes(result["downloaded_bytes"]), result["engine"], result["rechecked"],
            result["elapsed_s"])


def _stop_what(config):
    units = config["required_by"]
    if not units:
        return "fix the cause and start this unit again"
    return "%s %s not start and this host stays out of its target groups; fix the cause, then `systemctl start %s`" % (
        ", ".join(units), "does" if len(units) == 1 else "do", " ".join(units))


def run(config, sync=sync_once, clock=time.monotonic, sleep=time.sleep):
    """Sync until it succeeds, a final error, or retry_for_s; 0 on success, 1 on failure (logged either way)."""
    retry_until = clock() + config["retry_for_s"]
    started, attempt = clock(), 0
    log("sync %s -> %s (engine %s, verify %s); retrying failures for %d s, all within %d s" % (
        config["source"], config["dest"], config["engine"], config["verify"], config["retry_for_s"],
        config["timeout_s"]))
    while True:
        attempt += 1
        try:
            result = sync(config)
        except Exception as error:  # noqa: BLE001 - every failure is logged and decides retry or stop below
            reason = "%s: %s" % (type(error).__name__, error)
            left = retry_until - clock()
            if is_final(error) or left <= config["retry_interval_s"]:
                why = "it cannot pass by retrying" if is_final(error) else "retried for %d s" % config["retry_for_s"]
                log("FAILED: attempt %d after %.0f s (%s): %s. %s" % (
                    attempt, clock() - started, why, reason, _stop_what(config)))
                return 1
            log("attempt %d failed: %s; retrying in %d s (%.0f s left of %d s of retries)" % (
                attempt, reason, config["retry_interval_s"], left, config["retry_for_s"]))
            sleep(config["retry_interval_s"])
            continue
        log(_summary(result))
        return 0


def _run_command(argv):
    completed = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=COMMAND_TIMEOUT_S, check=False)
    return completed.returncode, completed.stdout, completed.stderr


def is_mounted(mount_point, mountinfo="/proc/self/mountinfo"):
    """Whether something is mounted at mount_point (mountinfo's fifth field, with its octal escapes)."""
    with open(mountinfo) as handle:
        for line in handle:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == mount_point:
                return True
    return False


def prepare_instance_store(config, host=None, mounted=is_mounted, mount=None):
    """Give a blank instance store (after a stop and start) its filesystem again and mount it; 0 when the store is
    ready (or none is managed), 1 with the reason logged.

    The role's mount unit mounts by label, so it waits for the filesystem made here and mounts it: ``mount``
    (default: ``systemctl start`` of that unit) joins that job instead of mounting a second time."""
    store = config["instance_store"]
    if not store:
        return 0
    host = host or InstanceStoreHost(_run_command, shutil.which)
    if mount is None:
        def mount(_device):
            host.run(["systemctl", "start", _nvme.mount_unit_name(store["mount_point"])])
    try:
        result = host.prepare(store["devices"], store["fstype"], store["label"], store["raid_name"], store["force"],
                              False)
        if result["device"] is None:
            log("instance store: none on this instance type; %s stays on the root volume" % store["mount_point"])
            return 0
        log("instance store: %s on %s (%s%s%s)" % (
            result["fstype"], result["device"], ", ".join(result["devices"]),
            ", RAID0 made" if result["created_raid"] else "", ", formatted: it was blank" if result["formatted"]
            else ", kept"))
        if not mounted(store["mount_point"]):
            mount(result["device"])
            if not mounted(store["mount_point"]):
                raise _nvme.InstanceStoreError("%s is not mounted at %s after mounting it" % (
                    result["device"], store["mount_point"]))
            log("instance store: mounted at %s" % store["mount_point"])
    except (_nvme.InstanceStoreError, IOError, OSError, subprocess.SubprocessError) as error:
        log("FAILED: instance store: %s. %s" % (error, _stop_what(config)))
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sync the model from S3 before vLLM starts (llmserve.aws boot path)")
    parser.add_argument("--config", required=True, help="the JSON file the model_sync role writes")
    parser.add_argument("--prepare-instance-store", action="store_true",
                        help="only prepare and mount the instance store (run as root, outside the sync's sandbox)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        log("FAILED: %s" % error)
        return 2
    if args.prepare_instance_store:
        return prepare_instance_store(config)
    # The hard bound: a transfer still running at timeout_s ends the run with a line that says so (systemd's own
    # TimeoutStartSec, a little later, is the backstop; it then stops what this process started).
    timer = threading.Timer(config["timeout_s"], _give_up, (config,))
    timer.daemon = True
    timer.start()
    try:
        return run(config)
    finally:
        timer.cancel()


def _give_up(config):
    log("FAILED: the sync did not finish within timeout_s=%d s. %s" % (config["timeout_s"], _stop_what(config)))
    os._exit(1)


if __name__ == "__main__":
    raise SystemExit(main())
