# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the model sync modules share: their common options (doc fragment llmserve.aws.model_sync) and the run.

Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmserve.aws.plugins.module_utils import _validate as grammar
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.manifest import ManifestError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import ModelStore
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.store import StoreError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.sync import ModelSync
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.sync import SyncError
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import MIB
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync.transfer import TransferError

# Failures whose message says what is wrong and what to do; the module fails with it.
SYNC_ERRORS = (SyncError, StoreError, ManifestError, TransferError)


def sync_argument_spec(**own_options):
    """The options of the doc fragment plus exclude and verify (each module documents those in its own words)."""
    spec = dict(
        dest=dict(type="path", required=True),
        exclude=dict(type="list", elements="str", default=[]),
        workers=dict(type="int", default=8),
        verify=dict(type="str", choices=["checksum", "size"], default="checksum"),
        keep_versions=dict(type="int", default=1),
        min_free_mib=dict(type="int", default=1024, aliases=["min_free_mb"]),
        progress_interval=dict(type="int", default=10),
        progress_id=dict(type="str"),
    )
    spec.update(own_options)
    return spec


def require_at_least_one(module, options):
    """Fail, naming the option, when one of the integer options is below 1 or a shared option is invalid
    (common_option_errors). Both modules call it first, before any client, engine or folder is made."""
    errors = common_option_errors(module.params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    for option in options:
        if module.params[option] < 1:
            module.fail_json(msg="%s must be at least 1, got %d" % (option, module.params[option]))


def common_option_errors(params):
    """Errors in the options both sync modules share (each names the option), before anything is written."""
    errors = [grammar.absolute_path("dest", params["dest"], allow_root=False),
              grammar.control_character("progress_id", params.get("progress_id"))]
    if params["min_free_mib"] < 0:
        errors.append("min_free_mib must not be negative, got %d: it is the space left free after the download"
                      % params["min_free_mib"])
    for pattern in params.get("exclude") or []:
        errors.append(grammar.control_character("exclude item", pattern))
    return [error for error in errors if error]


def run_sync_module(module, model_source, engine, source_errors, **failure_facts):
    """Sync model_source into the module's dest with engine, then exit the module with the result.

    In check mode nothing is downloaded or changed; the diff is returned in diff mode when the model changed.
    A failure of the sync (SYNC_ERRORS) or of the source (source_errors) fails the module with its message and
    failure_facts.
    """
    params = module.params
    store = ModelStore(params["dest"])
    sync = ModelSync(
        store,
        model_source,
        engine,
        verify=params["verify"],
        keep_versions=params["keep_versions"],
        reserve_bytes=params["min_free_mib"] * MIB,
        warn=module.warn,
        progress_id=params["progress_id"],
    )
    try:
        result = sync.run(check_mode=module.check_mode)
    except SYNC_ERRORS + source_errors as exc:
        module.fail_json(msg=str(exc), model_path=store.current, **failure_facts)
    diff = result.pop("diff")
    if module._diff and result["changed"]:
        result["diff"] = diff
    module.exit_json(**result)
