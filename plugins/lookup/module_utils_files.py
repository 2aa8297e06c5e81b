# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: module_utils_files
author:
  - llmserve.aws maintainers (@llmserve)
version_added: "0.1.0"
short_description: The source files of collections' module_utils, to run that code on a host without Ansible
description:
  - Finds the files of module_utils (a file or a whole package) of any installed collection, through the same
    collection loader that runs the modules, and says where each goes under a folder put on C(PYTHONPATH).
  - The model_sync role copies what its boot-time sync needs (C(llmserve.aws._model_sync) and what it imports) with
    it, so the boot path runs the very code the C(llmserve.aws.s3_model_sync) module runs.
options:
  _terms:
    description:
      - module_utils as C(NAMESPACE.COLLECTION.NAME), for example C(amazon.aws.retries) or
        C(llmserve.aws._model_sync); a package expands to every C(.py) file in it.
    required: true
    type: list
    elements: str
  archive:
    description:
      - Instead of the list, the path of one tar archive on the control node that holds every file under its
        C(dest), for C(ansible.builtin.unarchive) (one transfer instead of one per file). The archive is made again
        only when a file changed; its entries carry a fixed time, owner and mode, so a re-run changes nothing.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The same code as one archive, unpacked on the host
  ansible.builtin.unarchive:
    src: "{{ lookup('llmserve.aws.module_utils_files', 'llmserve.aws._model_sync', archive=true) }}"
    dest: /opt/llmserve/lib

- name: Copy the boot-time sync's code to the host
  ansible.builtin.copy:
    src: "{{ item.src }}"
    dest: "/opt/llmserve/lib/{{ item.dest }}"
    mode: "0644"
  loop: "{{ lookup('llmserve.aws.module_utils_files', 'llmserve.aws._model_sync', 'amazon.aws.retries',
            wantlist=True) }}"
"""

RETURN = r"""
_raw:
  description: One entry per file (with O(archive), the archive's path instead).
  type: list
  elements: dict
  contains:
    src:
      description: The file on the control node.
      type: str
    dest:
      description: >-
        Its path relative to a folder on C(PYTHONPATH), for example
        C(ansible_collections/amazon/aws/plugins/module_utils/retries.py).
      type: str
"""

import hashlib
import importlib
import io
import os
import re
import tarfile
import tempfile

from ansible.errors import AnsibleLookupError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.lookup import LookupBase

_TERM = re.compile(r"\A([a-z0-9_]+)\.([a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\Z")


def module_name(term):
    """The Python module of a NAMESPACE.COLLECTION.NAME term; AnsibleLookupError naming the term when malformed."""
    match = _TERM.match(term) if isinstance(term, str) else None
    if not match:
        raise AnsibleLookupError(
            "module_utils_files: %r is not NAMESPACE.COLLECTION.NAME (e.g. amazon.aws.retries)" % (term,))
    namespace, collection, name = match.groups()
    return "ansible_collections.%s.%s.plugins.module_utils.%s" % (namespace, collection, name)


def files_of(module):
    """[(src, dest)] of an imported module or package (its .py files, sorted)."""
    dest = module.__name__.replace(".", "/")
    if not hasattr(module, "__path__"):
        return [(module.__file__, dest + ".py")]
    found = []
    for folder in module.__path__:
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(name for name in dirs if name != "__pycache__")
            relative = os.path.relpath(root, folder)
            for name in sorted(names):
                if name.endswith(".py"):
                    rel = name if relative == "." else os.path.join(relative, name)
                    found.append((os.path.join(root, name), dest + "/" + rel))
    return found


ARCHIVE_MTIME = 1577836800  # 2020-01-01: fixed, so the same files make the same archive and unarchive sees no change


def write_archive(entries, folder=None):
    """A tar of the entries (sorted, fixed time, root-owned, 0644 files and 0755 folders) named after a digest of
    their paths and contents, in FOLDER (default: the temp folder); made only when missing."""
    contents = [(entry["dest"], _read(entry["src"])) for entry in sorted(entries, key=lambda e: e["dest"])]
    digest = hashlib.sha256()
    for dest, data in contents:
        digest.update(dest.encode() + b"\0" + hashlib.sha256(data).digest())
    path = os.path.join(folder or tempfile.gettempdir(), "llmserve-module-utils-%s.tar" % digest.hexdigest()[:16])
    if os.path.exists(path):
        return path
    folders = sorted({prefix for dest, _data in contents for prefix in _prefixes(os.path.dirname(dest))})
    partial = path + ".%d.partial" % os.getpid()
    with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as archive:
        for folder_name in folders:
            info = tarfile.TarInfo(folder_name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, ARCHIVE_MTIME
            archive.addfile(info)
        for dest, data in contents:
            info = tarfile.TarInfo(dest)
            info.size, info.mode, info.mtime = len(data), 0o644, ARCHIVE_MTIME
            archive.addfile(info, io.BytesIO(data))
    os.rename(partial, path)
    return path


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _prefixes(folder):
    """a, a/b, a/b/c for a/b/c."""
    parts = folder.split("/")
    return ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        unknown = sorted(set(kwargs) - {"archive"})
        if unknown:
            raise AnsibleLookupError("module_utils_files: unknown option(s) %s; the one option is archive" % unknown)
        try:
            archive = boolean(kwargs.get("archive", False), strict=True)
        except TypeError:
            raise AnsibleLookupError("module_utils_files: archive must be a boolean, got %r" % (kwargs["archive"],))
        entries = []
        for term in terms:
            name = module_name(term)
            try:
                module = importlib.import_module(name)
            except ImportError as error:
                raise AnsibleLookupError("module_utils_files: cannot find %s (%s): is the collection installed?"
                                         % (term, error))
            entries += [{"src": src, "dest": dest} for src, dest in files_of(module)]
        if archive:
            return [write_archive(entries)]
        return entries
