"""The one atomic file write (plugins/module_utils/_atomic_file.py) that vllm_launch and the model store share."""

import os
import stat

import pytest

from ansible_collections.llmserve.aws.plugins.module_utils._atomic_file import write_atomically


def test_replaces_with_the_mode_set_before_the_rename(tmp_path):
    target = tmp_path / "vllm.env"
    target.write_text("old")
    os.chmod(target, 0o644)
    seen = []

    def prepare(temporary):
        seen.append((os.path.dirname(temporary), stat.S_IMODE(os.stat(temporary).st_mode), target.read_text()))

    write_atomically(str(target), "VLLM_API_KEY=x\n", mode=0o600, prepare=prepare)
    assert target.read_text() == "VLLM_API_KEY=x\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert seen == [(str(tmp_path), 0o600, "old")]  # prepared beside it, never wider, the old file still whole
    assert os.listdir(tmp_path) == ["vllm.env"]


def test_without_mode_the_umask_decides_like_open(tmp_path):
    umask = os.umask(0o027)
    try:
        write_atomically(str(tmp_path / "manifest.json"), "{}", durable=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "manifest.json").st_mode) == 0o640


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "vllm.service"
    target.write_text("old")

    def refuse(temporary):
        raise OSError("chown refused")

    with pytest.raises(OSError, match="chown refused"):
        write_atomically(str(target), "new", mode=0o644, prepare=refuse)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["vllm.service"]
