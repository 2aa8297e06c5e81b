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
