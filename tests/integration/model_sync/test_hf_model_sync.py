"""llmserve.aws.hf_model_sync against a local emulator of the Hub's HTTP API (hub_emulator.py)."""

import json
import os
import random
from pathlib import Path

import pytest
from hub_emulator import Hub, Repo

MIB = 1024 * 1024
TOKEN = "hf_test_token_not_real"


@pytest.fixture
def hub():
    rng = random.Random(11)
    hub = Hub(repos={
        "acme/tiny-llama": Repo(files={
            "config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode(),
            "model.safetensors": rng.randbytes(3 * MIB + 1),
            "tokenizer/tokenizer.json": rng.randbytes(200 * 1024),
            "original/consolidated.00.pth": rng.randbytes(64 * 1024),
        }, token=TOKEN),
    }).start()
    yield hub
    hub.stop()


def args(hub, dest: Path, **extra) -> dict:
    base = dict(repo="acme/tiny-llama", token=TOKEN, endpoint=hub.endpoint, dest=str(dest), progress_interval=0,
                min_free_mib=0, exclude=["original/*"])
    base.update(extra)
    return base


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".llmserve-manifest.json"}


def test_gated_model_syncs_with_token_and_the_cdn_never_sees_it(run_module, hub, tmp_path):
    repo = hub.repos["acme/tiny-llama"]

    result = run_module("hf_model_sync", args(hub, tmp_path / "dest"))

    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["engine"] == "https"
    assert result["source"] == f"hf://acme/tiny-llama@{repo.commit}"
    expected = {rel: data for rel, data in repo.files.items() if not rel.startswith("original/")}
    assert tree(tmp_path / "dest" / "current") == expected
    assert result["verification"] == {"SHA256": 2, "GIT_BLOB_SHA1": 1}
    cdn = [r for r in hub.requests if r["path"].startswith("/cdn/")]
    assert cdn and all(r["authorization"] is None for r in cdn)
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests if not r["path"].startswith("/cdn/"))
    assert "hf_test_token" not in json.dumps(result)


def test_rerun_with_same_commit_changes_nothing(run_module, hub, tmp_path):
    run_module("hf_model_sync", args(hub, tmp_path / "dest"))
    hub.requests.clear()

    again = run_module("hf_model_sync", args(hub, tmp_path / "dest"))

    assert again["changed"] is False and again["downloaded"] == []
    assert [r["path"].split("?")[0] for r in hub.requests] == ["/api/models/acme/tiny-llama/revision/main"]


def test_gated_model_without_token_is_refused(run_module, hub, tmp_path):
    result = run_module("hf_model_sync", args(hub, tmp_path / "dest", token=None))

    assert result.get("failed") is True
    assert "acme/tiny-llama is gated or private (HTTP 401, GatedRepo)" in result["msg"]
    assert "model_sync_hf_token" in result["msg"]


def test_partial_download_resumes_with_a_range_request(run_module, hub, tmp_path):
    data = hub.repos["acme/tiny-llama"].files["model.safetensors"]
    staging = tmp_path / "dest" / ".model-sync" / "staging"
    staging.mkdir(parents=True)
    (staging / "model.safetensors.part").write_bytes(data[: MIB + 7])

    result = run_module("hf_model_sync", args(hub, tmp_path / "dest"))

    assert result.get("failed") is not True, result
    assert (tmp_path / "dest" / "current" / "model.safetensors").read_bytes() == data
    assert {"range": f"bytes={MIB + 7}-"}.items() <= next(
        r for r in hub.requests if r["path"].startswith("/cdn/") and r["range"]).items()


def test_unknown_revision_is_refused(run_module, hub, tmp_path):
    result = run_module("hf_model_sync", args(hub, tmp_path / "dest", revision="v9"))

    assert result.get("failed") is True and "revision 'v9' was not found" in result["msg"]
    assert not os.path.exists(tmp_path / "dest" / "current")
