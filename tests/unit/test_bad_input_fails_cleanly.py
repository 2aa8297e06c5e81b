"""Bad input to the planner, the instance store and the model sync modules: a clean failure naming the parameter,
never a traceback, and before anything is written (no command runs, no folder appears)."""

import os

import pytest
from ansible.module_utils import basic

from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import source_hf as hf
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm
from ansible_collections.llmserve.aws.plugins.modules import hf_model_sync
from ansible_collections.llmserve.aws.plugins.modules import instance_store
from ansible_collections.llmserve.aws.plugins.modules import model_plan
from ansible_collections.llmserve.aws.plugins.modules import s3_model_sync

from module_harness import capture_exit
from module_harness import run_main

NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    def run_command(self, args, **kwargs):
        raise AssertionError("validation should fail before running %s" % (args,))

    capture_exit(monkeypatch)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)


@pytest.mark.parametrize("args, parameter", [
    ({"price_overrides": {"g6e.xlarge": NAN}}, "price_overrides[g6e.xlarge]"),
    ({"price_overrides": {"g6e.xlarge": INF}}, "price_overrides[g6e.xlarge]"),
    ({"price_overrides": {"g6e.xlarge": "cheap"}}, "price_overrides[g6e.xlarge]"),
    ({"price_overrides": {"g6e.xlarge": -1}}, "price_overrides[g6e.xlarge]"),
    ({"api_price_per_mtok": NAN}, "api_price_per_mtok"), ({"api_price_per_mtok": INF}, "api_price_per_mtok"),
    ({"tokens_per_second": NAN}, "tokens_per_second"), ({"gpu_memory_utilization": NAN}, "gpu_memory_utilization"),
    ({"parameters_b": NAN}, "parameters_b"), ({"parameters_b": INF}, "parameters_b"),
])
def test_model_plan_refuses_non_finite_numbers(args, parameter):
    exited = run_main(model_plan.main, dict({"parameters_b": 8}, **args))
    assert exited.failed and parameter in exited.result["msg"], exited.result


@pytest.mark.parametrize("mount_point", [
    "/", "//", "/etc", "/usr", "/var", "/opt", "/home", "/boot/models", "/usr/local/models", "/proc/x",
    "relative/models", "/mnt/../etc", "/mnt/nvme\nWhat=/dev/sda", "/mnt/my models",
])
def test_instance_store_refuses_system_or_malformed_mount_points(mount_point):
    exited = run_main(instance_store.main, {"mount_point": mount_point})
    assert exited.failed and "mount_point" in exited.result["msg"], exited.result


@pytest.mark.parametrize("args, parameter", [
    ({"label": "models\nx"}, "label"), ({"label": "a b"}, "label"), ({"raid_name": "../sda"}, "raid_name"),
    ({"devices": ["/etc/passwd"]}, "devices"), ({"devices": ["nvme1n1"]}, "devices"),
])
def test_instance_store_refuses_malformed_names(args, parameter):
    exited = run_main(instance_store.main, dict({"mount_point": "/mnt/nvme"}, **args))
    assert exited.failed and parameter in exited.result["msg"], exited.result


@pytest.mark.parametrize("module, source", [
    (s3_model_sync, {"source": "s3://models/tiny/", "engine": "boto3", "region": "us-east-1"}),
    (hf_model_sync, {"repo": "org/tiny", "endpoint": "http://127.0.0.1:9"}),
])
@pytest.mark.parametrize("args, parameter", [
    ({"dest": "models/tiny"}, "dest"), ({"dest": "/"}, "dest"), ({"dest": "/opt/models/.."}, "dest"),
    ({"dest": "/opt/models/x\n"}, "dest"), ({"min_free_mib": -1}, "min_free_mib"),
    ({"exclude": ["*.bin\n"]}, "exclude"),
])
def test_sync_modules_refuse_bad_common_options(tmp_path, module, source, args, parameter):
    arguments = dict(source, dest=str(tmp_path / "models" / "tiny"))
    arguments.update(args)
    exited = run_main(module.main, arguments)
    assert exited.failed and parameter in exited.result["msg"], exited.result
    assert not os.path.exists(str(tmp_path / "models"))


@pytest.mark.parametrize("args, parameter", [
    ({"repo": "org/.."}, "repo"), ({"repo": "org/tiny\n"}, "repo"), ({"repo": "../etc"}, "repo"),
    ({"repo": "org/tiny", "revision": "main\nx"}, "revision"), ({"repo": "org/tiny", "revision": "a/../b"}, "revision"),
])
def test_hf_model_sync_refuses_bad_repo_and_revision(tmp_path, args, parameter):
    exited = run_main(hf_model_sync.main, dict(args, dest=str(tmp_path / "tiny"), endpoint="http://127.0.0.1:9"))
    assert exited.failed and parameter in exited.result["msg"], exited.result
    assert not os.path.exists(str(tmp_path / "tiny"))


@pytest.mark.parametrize("key", [
    "models/tiny/" + "w" * 300 + ".safetensors", "models/tiny/../x", "models/tiny/a\tb", "models/tiny/a\x1bb",
])
def test_s3_keys_that_cannot_be_a_local_file_are_refused(key):
    with pytest.raises(mm.ManifestError, match="key"):
        mm.build_remote_manifest([{"Key": key, "Size": 1}], "models/tiny/")


@pytest.mark.parametrize("uri", ["s3://models/tiny\n", "s3://models\n/tiny", "s3://Models/tiny"])
def test_s3_sources_are_matched_whole(uri):
    with pytest.raises(mm.ManifestError, match="source"):
        mm.parse_s3_uri(uri)


def sibling(name):
    return {"rfilename": name, "size": 1, "blobId": "ab" * 20}


@pytest.mark.parametrize("names", [["config.json", "config.json/x"], ["a/b", "a/b/c.json"], ["w" * 300]])
def test_hub_listings_that_cannot_be_a_local_folder_are_refused(names):
    with pytest.raises(mm.ManifestError):
        hf.manifest_from_model_info({"sha": "c" * 40, "siblings": [sibling(name) for name in names]})
