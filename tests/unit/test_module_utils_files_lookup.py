"""plugins/lookup/module_utils_files.py: a term names one collection's module_utils strictly, and a package expands
to its .py files under the path Python imports them from (what the model_sync role copies for its boot path)."""

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.llmserve.aws.plugins.lookup.module_utils_files import LookupModule, module_name


@pytest.mark.parametrize("bad", ["retries", "amazon.aws", "amazon.aws.", "amazon.aws.../x", "amazon.aws.a b",
                                 "amazon.aws.retries\n", "Amazon.aws.retries", None])
def test_a_term_that_is_not_namespace_collection_name_is_refused(bad):
    with pytest.raises(AnsibleLookupError, match="is not NAMESPACE.COLLECTION.NAME"):
        module_name(bad)


def test_a_package_expands_to_its_files_under_their_import_path():
    entries = LookupModule().run(["llmserve.aws._model_sync", "llmserve.aws._validate"])
    dests = [entry["dest"] for entry in entries]
    base = "ansible_collections/llmserve/aws/plugins/module_utils/"
    assert base + "_model_sync/__init__.py" in dests and base + "_model_sync/boot.py" in dests
    assert dests[-1] == base + "_validate.py"
    assert all(entry["src"].endswith(entry["dest"].rsplit("/", 1)[-1]) for entry in entries)
    assert not any("__pycache__" in dest for dest in dests)


def test_a_missing_module_names_the_term():
    with pytest.raises(AnsibleLookupError, match="cannot find llmserve.aws._no_such_topic"):
        LookupModule().run(["llmserve.aws._no_such_topic"])


def test_the_archive_holds_every_file_with_fixed_metadata_and_is_made_once(tmp_path):
    import tarfile

    from ansible_collections.llmserve.aws.plugins.lookup.module_utils_files import ARCHIVE_MTIME, write_archive

    entries = LookupModule().run(["llmserve.aws._model_sync", "amazon.aws.retries"])
    path = write_archive(entries, str(tmp_path))
    assert write_archive(entries, str(tmp_path)) == path and len(list(tmp_path.iterdir())) == 1
    with tarfile.open(path) as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert {entry["dest"] for entry in entries} <= set(members)
    assert "ansible_collections/amazon/aws/plugins/module_utils" in members  # its folders, for unarchive
    assert {m.mtime for m in members.values()} == {ARCHIVE_MTIME}
    assert {(m.uid, m.mode) for m in members.values() if m.isfile()} == {(0, 0o644)}
    changed = [dict(entries[0], src=str(tmp_path / "other.py"))] + entries[1:]
    (tmp_path / "other.py").write_text("# another version\n")
    assert write_archive(changed, str(tmp_path)) != path  # new content, new archive
