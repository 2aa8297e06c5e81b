"""s3_model_sync's AWS errors that its own messages do not cover reach the user through fail_json_aws.

S3SyncError covers what S3 answers (it names the IAM action to grant); an SDK error before any request (a
profile that does not exist, an unreadable config) must fail the module with AWS's details, not a traceback.
"""

import botocore.exceptions
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.llmserve.aws.plugins.modules import s3_model_sync

from module_harness import capture_exit, run_main


def test_sdk_error_fails_through_fail_json_aws(monkeypatch, tmp_path):
    capture_exit(monkeypatch)

    def client(self, service, *args, **kwargs):
        raise botocore.exceptions.ProfileNotFound(profile="models-reader")

    monkeypatch.setattr(AnsibleAWSModule, "client", client)
    exited = run_main(
        s3_model_sync.main,
        {"source": "s3://models/llama", "dest": str(tmp_path / "llama"), "engine": "boto3"},
    )
    assert exited.failed
    message = exited.result["msg"]
    assert message.startswith("model sync from s3://models/llama/ failed: ")
    assert "models-reader" in message
    # fail_json_aws adds the SDK versions, which a plain fail_json or a traceback would not.
    assert exited.result["boto3_version"] and exited.result["botocore_version"]
    assert not (tmp_path / "llama").exists()
