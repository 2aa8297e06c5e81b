# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 calls a model sync makes (list a prefix, head objects), with retries and errors that name the fix.

Private to this collection. boto3 clients come from AnsibleAWSModule.client(); this module only shapes calls and
turns botocore errors into S3SyncError messages that name the IAM action an operator has to grant.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
from concurrent.futures import ThreadPoolExecutor

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.llmserve.aws.plugins.module_utils._model_sync import manifest as mm

# S3's own "slow down" and transient server codes, on top of the throttling codes AWSRetry already knows.
_TRANSIENT_CODES = ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500"]
_retry = AWSRetry.jittered_backoff(retries=6, delay=1, max_delay=15, catch_extra_error_codes=_TRANSIENT_CODES)

CREDENTIAL_CODES = (
    "InvalidAccessKeyId", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired",
)
DENIED_CODES = ("AccessDenied", "403", "AllAccessDisabled", "AccountProblem")


class S3SyncError(Exception):
    """A failure with a message an operator can act on; ``code`` is the S3 error code when there is one."""

    def __init__(self, message, code=None):
        super(S3SyncError, self).__init__(message)
        self.code = code


def describe_error(code, action, bucket, key=None, prefix=None):
    """The message for an S3 error ``code`` on IAM ``action`` (s3:ListBucket or s3:GetObject)."""
    where = "s3://%s/%s" % (bucket, key if key is not None else (prefix or ""))
    if code in CREDENTIAL_CODES:
        return (
            "S3 refused the credentials (%s) on %s: check the instance profile or the access key, secret key and "
            "session token given to the module" % (code, where)
        )
    if code in DENIED_CODES:
        resource = "arn:aws:s3:::%s/%s" % (bucket, key) if key is not None else "arn:aws:s3:::%s" % bucket
        scope = "" if key is not None else " (with the prefix %r allowed by any s3:prefix condition)" % (prefix or "")
        return "access denied (%s): the role needs %s on %s%s" % (code, action, resource, scope)
    if code == "NoSuchBucket":
        return "bucket %r does not exist (or is not in this region/endpoint)" % bucket
    if code in ("NoSuchKey", "404"):
        return "%s disappeared while syncing; run again to sync the prefix as it is now" % where
    return "S3 %s failed on %s: %s" % (action, where, code)


def _code(exc):
    return exc.response.get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


@_retry
def _list_page(client, **kwargs):
    return client.list_objects_v2(**kwargs)


def list_prefix(client, bucket, prefix):
    """Every object under ``prefix`` as ListObjectsV2 ``Contents`` items (all pages)."""
    items, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        try:
            page = _list_page(client, **kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise S3SyncError(
                "no AWS credentials found: attach an instance profile that allows s3:ListBucket and s3:GetObject, "
                "or give the module access_key/secret_key"
            )
        except botocore.exceptions.EndpointConnectionError as exc:
            raise S3SyncError("cannot reach S3: %s" % exc)
        except botocore.exceptions.ClientError as exc:
            raise S3SyncError(describe_error(_code(exc), "s3:ListBucket", bucket, prefix=prefix), _code(exc))
        items.extend(page.get("Contents") or [])
        if not page.get("IsTruncated"):
            return items
        token = page.get("NextContinuationToken")


@_retry
def _head(client, bucket, key):
    return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")


def head_object(client, bucket, key):
    """HeadObject with checksums; None when the object is gone (a 404 after listing)."""
    try:
        return _head(client, bucket, key)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise S3SyncError(describe_error(_code(exc), "s3:GetObject", bucket, key=key), _code(exc))


@_retry
def _head_part(client, bucket, key):
    return client.head_object(Bucket=bucket, Key=key, PartNumber=1)


def first_part_size(client, bucket, key):
    """Size of part 1 of a multipart object (every part but the last has it), or None when S3 will not say."""
    try:
        return int(_head_part(client, bucket, key)["ContentLength"])
    except botocore.exceptions.ClientError:
        return None


def head_many(client, bucket, keys, workers=16):
    """``{key: head or None}``; HEADs run in parallel since a model can hold hundreds of small files."""
    keys = list(keys)
    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        return dict(zip(keys, pool.map(lambda key: head_object(client, bucket, key), keys)))


class Job(object):
    """One object to fetch into ``path`` (a staging path); what the transfer engines consume."""

    __slots__ = ("rel", "bucket", "key", "size", "path")

    def __init__(self, rel, bucket, key, size, path):
        self.rel, self.bucket, self.key, self.size, self.path = rel, bucket, key, size, path


class S3Source(object):
    """An S3 prefix as a model sync source.

    ``client``: a boto3 S3 client, or a callable that makes one when it is first needed. Building a client costs
    about 0.3 s of CPU (botocore parses its service model), so the module hands a callable: a re-sync listed by
    ``lister`` never builds one, and a download builds it while the transfer already runs (see ModelSync).
    ``lister(bucket, prefix)``: a faster listing (s5cmd's) returning ListObjectsV2-like items, or None when it
    could not list; boto3 then lists, and its errors are the ones reported.
    """

    def __init__(self, client, bucket, prefix, exclude=(), lister=None):
        self._client, self.bucket, self.prefix, self.exclude = client, bucket, prefix, list(exclude or ())
        self.lister = lister
        self.uri = "s3://%s/%s" % (bucket, prefix)
        self._client_lock = threading.Lock()

    @property
    def client(self):
        with self._client_lock:
            if callable(self._client) and not hasattr(self._client, "list_objects_v2"):
                self._client = self._client()
            return self._client

    def list(self):
        items = self.lister(self.bucket, self.prefix) if self.lister else None
        if items is None:
            items = list_prefix(self.client, self.bucket, self.prefix)
        if not items:
            raise S3SyncError(
                "%s holds no objects: check the source (S3 has no real folders, so a missing prefix and an empty one "
                "look the same; the role needs s3:ListBucket on arn:aws:s3:::%s)" % (self.uri, self.bucket),
                "Empty",
            )
        try:
            manifest = mm.build_remote_manifest(items, self.prefix, self.exclude)
        except mm.ManifestError as exc:
            raise S3SyncError("%s: %s" % (self.uri, exc))
        return manifest

    def describe(self, remote, rels):
        """Add checksum values (HeadObject) to the entries about to be fetched; this also proves s3:GetObject."""
        heads = head_many(self.client, self.bucket, [remote[rel]["key"] for rel in rels])
        for rel in rels:
            entry = remote[rel]
            head = heads[entry["key"]]
            if head is None or int(head.get("ContentLength", -1)) != entry["size"] or (
                mm.normalize_etag(head.get("ETag")) != entry["etag"]
            ):
                raise S3SyncError(
                    "s3://%s/%s changed or disappeared while syncing; run again to sync the prefix as it is now"
                    % (self.bucket, entry["key"]),
                    "Changed",
                )
            entry["checksums"], entry["checksum_type"] = mm.checksums_from_head(head)
        # A multipart ETag is checked part by part, so it needs the part size uploaders chose.
        multipart = [rel for rel in rels if (mm.multipart_parts(remote[rel]["etag"]) or 0) > 1]
        if multipart:
            with ThreadPoolExecutor(max_workers=min(16, len(multipart))) as pool:
                sizes = pool.map(lambda rel: first_part_size(self.client, self.bucket, remote[rel]["key"]), multipart)
                for rel, size in zip(multipart, sizes):
                    if size:
                        remote[rel]["part_size"] = size

    def jobs(self, remote, rels, staging):
        return [
            Job(rel, self.bucket, remote[rel]["key"], remote[rel]["size"], os.path.join(staging, rel)) for rel in rels
        ]
