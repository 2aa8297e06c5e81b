# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names of the immutable SageMaker resources an endpoint runs on, derived from their content.

SageMaker models and endpoint configs cannot be changed once created. Naming each one
`<endpoint>-<kind>-<hash of its content>` makes "is the wanted one already there?" a name lookup, makes a rerun
reuse what an interrupted run created, and tells this module's resources apart from anyone else's when it
deletes superseded ones.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

# SageMaker names: up to 63 characters, ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}.
MAX_NAME_LENGTH = 63
HASH_LENGTH = 12  # 48 bits: a collision among one endpoint's handful of models is not a practical concern
MODEL_KIND = "model"
CONFIG_KIND = "config"


def content_hash(document):
    """Hex digest of a JSON-able document, independent of key order."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _prefix(endpoint_name, kind):
    room = MAX_NAME_LENGTH - len(kind) - HASH_LENGTH - 2
    return endpoint_name[:room].rstrip("-")


def resource_name(endpoint_name, kind, document):
    return "%s-%s-%s" % (_prefix(endpoint_name, kind), kind, content_hash(document))


def is_managed_name(endpoint_name, kind, name):
    """Whether `name` is one this module would give a `kind` resource of this endpoint."""
    pattern = "%s-%s-[0-9a-f]{%d}" % (re.escape(_prefix(endpoint_name, kind)), kind, HASH_LENGTH)
    return bool(re.fullmatch(pattern, name or ""))
