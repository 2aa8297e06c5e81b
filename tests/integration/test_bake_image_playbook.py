"""playbooks/bake_image.yml against the local AWS, at the API level: an AMI of a managed host, tagged with its
source and how its weights come (synced at boot, or included), a re-run that finds it by name and changes nothing,
the weights volume snapshotted on its own when asked, and bad inputs refused before any image is made. (A bench
host baked for real, and a new host booting from the image: the fleet scenario, tests/fleet.)

The local AWS records an AMI's SourceInstanceId as AWS does; it does not model which EBS volumes a CreateImage
block-device mapping leaves out, so that part is the play's request, not checked here."""

import json
import re

import pytest

from tests.support.playbook import ansible_env, run_playbook

AMI = "ami-12c6146b"
TIMEOUT_S = 180


@pytest.fixture
def host(aws_clean):
    """A running instance as fleet.yml tags them, with a second EBS volume on /dev/sdf for the weights."""
    ec2 = aws_clean.client("ec2")
    instance = ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 200}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "llmserve:role", "Value": "vllm"}, {"Key": "llmserve:model-size", "Value": "7b"}]}],
    )["Instances"][0]
    return aws_clean, instance["InstanceId"]


def _bake(aws, expect_rc=0, **extra_vars):
    completed = run_playbook(
        "playbooks/bake_image.yml", "-e", json.dumps(extra_vars),
        env=ansible_env(drop_prefixes=("AWS_", "ANSIBLE_"), ANSIBLE_DEPRECATION_WARNINGS="0", **aws.env),
        timeout_s=TIMEOUT_S,
    )
    out = completed.stdout + completed.stderr
    assert completed.returncode == expect_rc, out[-3000:]
    changed = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out)
    return (int(changed.group(1)) if changed else None), out


def _images(aws):
    return aws.client("ec2").describe_images(Owners=["self"])["Images"]


def test_an_ami_of_a_managed_host_tagged_with_its_source_and_a_rerun_changes_nothing(host):
    aws, instance_id = host
    inputs = {"bake_image_instance_id": instance_id, "bake_image_name": "llmserve-7b-2026-12-05",
              "bake_image_weights_device": "/dev/sdf", "bake_image_tags": {"team": "ml-platform"}}

    changed, out = _bake(aws, **inputs)

    (image,) = _images(aws)
    tags = {tag["Key"]: tag["Value"] for tag in image["Tags"]}
    assert changed == 1
    assert image["Name"] == "llmserve-7b-2026-12-05" and image["SourceInstanceId"] == instance_id
    assert tags == {"team": "ml-platform", "llmserve:source-instance": instance_id, "llmserve:model-size": "7b",
                    "llmserve:weights": "synced-at-boot"}
    assert f"llmserve_fleet_image_id={image['ImageId']}" in out
    again = _bake(aws, **inputs)
    assert again[0] == 0, again[1][-4000:]
    assert len(_images(aws)) == 1


def test_weights_included_and_snapshotted_on_their_own(host):
    aws, instance_id = host

    _bake(aws, bake_image_instance_id=instance_id, bake_image_name="llmserve-7b-with-weights",
          bake_image_weights_device="/dev/sdf", bake_image_include_weights=True, bake_image_weights_snapshot=True)

    (image,) = _images(aws)
    assert {tag["Key"]: tag["Value"] for tag in image["Tags"]}["llmserve:weights"] == "included"
    volume = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]},
                 {"Name": "attachment.device", "Values": ["/dev/sdf"]}])["Volumes"][0]
    snapshots = aws.client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": [volume["VolumeId"]]}])["Snapshots"]
    assert [{tag["Key"]: tag["Value"] for tag in s.get("Tags", [])}.get("llmserve:weights-of") for s in snapshots] == [
        image["ImageId"]]


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"bake_image_instance_id": "i-123; reboot"}, "bake_image_instance_id"),
        ({"bake_image_name": "x"}, "bake_image_name"),
        ({"bake_image_name": "llmserve\nimage"}, "bake_image_name"),
        ({"bake_image_description": "one\nline"}, "bake_image_description"),
        ({"bake_image_weights_device": "/dev/nvme1n1"}, "bake_image_weights_device"),
        ({"bake_image_weights_snapshot": True}, "required by"),
        ({"bake_image_tags": ["team"]}, "bake_image_tags"),
        ({"bake_image_weights_device": "/dev/sdg"}, "/dev/sdg is not an EBS volume"),
    ],
)
def test_bad_inputs_fail_before_any_image(host, inputs, named):
    aws, instance_id = host
    _changed, out = _bake(aws, expect_rc=2, **{"bake_image_instance_id": instance_id,
                                               "bake_image_name": "llmserve-7b", **inputs})
    assert named in out
    assert _images(aws) == []


def test_an_unmanaged_instance_is_refused(aws_clean):
    bastion = aws_clean.client("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    _changed, out = _bake(aws_clean, expect_rc=2, bake_image_instance_id=bastion, bake_image_name="llmserve-7b")
    assert "must be a running or stopped instance tagged llmserve:role" in out
    assert _images(aws_clean) == []
