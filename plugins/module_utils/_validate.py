# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared grammar checks for values that reach a unit file, a path, an environment file or a command line.

Private to this collection and pure. Each check takes the option's name and its value and returns an error
message naming the option and the fix, or None when the value is valid. Every grammar matches the whole
value (re.fullmatch): `$` would accept a trailing newline, which in a unit file starts a new directive.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import math
import re

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# useradd's default NAME_REGEX (shadow-utils), 32 characters at most; a trailing '$' marks Samba machine accounts.
_POSIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")
# Hugging Face's rules for repository ids: org/name, letters, digits, '-', '_', '.', at most 96 characters each.
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(r"%s/%s" % (_HUB_PART, _HUB_PART))
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}")
# Folder or file names that sync into a model folder: one path component, no separators, no dot names.
_PATH_COMPONENT_MAX = 255

# Environment variable names that hold secrets by convention. Whole words (split on '_') for the short ones, so
# TOKENIZERS_PARALLELISM or KEYBOARD are not secrets; anywhere for the unambiguous ones.
_SECRET_WORDS = ("TOKEN", "TOKENS", "KEY", "KEYS", "APIKEY", "AUTH", "CREDENTIALS", "CREDENTIAL")
_SECRET_SUBSTRINGS = ("SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "PRIVATE", "ACCESS_KEY", "API_KEY")


def control_character(option, value, secret=False):
    """An error when the text holds a control character (newline, tab, NUL, escape...); a secret is not echoed."""
    if value is not None and _CONTROL_CHARACTERS.search(str(value)):
        shown = "" if secret else ", got %r" % (value,)
        return "%s must not contain control characters (newline, tab, NUL...)%s" % (option, shown)
    return None


def _grammar(option, value, pattern, what):
    error = control_character(option, value)
    if error:
        return error
    if value is None or not pattern.fullmatch(str(value)):
        return "%s %r is not %s" % (option, value, what)
    return None


def posix_name(option, value):
    """A user or group name as useradd/groupadd accept it by default."""
    return _grammar(option, value, _POSIX_NAME,
                    "a POSIX user/group name (lower-case letters, digits, '_' and '-', starting with a letter or "
                    "'_', at most 32 characters)")


def hub_id(option, value):
    """A Hugging Face repository id, org/name."""
    error = _grammar(option, value, _HUB_ID,
                     "a Hugging Face repository id org/name (letters, digits, '-', '_', '.'; at most 96 "
                     "characters each side)")
    if error:
        return error
    if ".." in value or "--" in value or value.endswith(".git"):
        return "%s %r is not a Hugging Face repository id: '..', '--' and a '.git' ending are not allowed" % (
            option, value)
    return None


def unit_name(option, value):
    """A systemd unit name without its suffix (the suffix is added by the module)."""
    error = _grammar(option, value, _UNIT_NAME,
                     "a plain unit name (letters, digits, '_', '.', '-', '@'; at most 200 characters)")
    if error:
        return error
    if ".." in value or value.endswith((".service", ".timer", ".mount", ".socket")):
        return "%s %r must be a plain unit name without '..' or a unit suffix" % (option, value)
    return None


def host(option, value):
    """A listen address: an IPv4 or IPv6 address, or a DNS host name."""
    error = control_character(option, value)
    if error:
        return error
    text = str(value)
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if len(text) <= 253 and labels and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return "%s %r is not an IP address or a host name (letters, digits, '-' in dot-separated labels)" % (option, value)


def is_loopback_host(value):
    """Whether a listen address is reachable from this machine only: 127.0.0.0/8, ::1 (also IPv4-mapped) or
    localhost. Any other name may resolve to any address, so it counts as beyond loopback."""
    text = str(value or "").lower()
    if text in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def absolute_path(option, value, allow_root=True):
    """An absolute, normalized path: no '..' or '.' component, no '//' , no whitespace or control characters."""
    error = control_character(option, value)
    if error:
        return error
    text = "" if value is None else str(value)
    if not text.startswith("/"):
        return "%s must be an absolute path (starting with '/'), got %r" % (option, value)
    if re.search(r"\s", text):
        return "%s must not contain whitespace, got %r" % (option, value)
    components = text.rstrip("/").split("/")[1:]
    if any(component in ("..", ".") for component in components):
        return "%s must not contain '.' or '..' components, got %r: write the path it means" % (option, value)
    if any(component == "" for component in components):
        return "%s must not contain '//', got %r" % (option, value)
    if not allow_root and not components:
        return "%s must not be '/'" % option
    return None


def path_component(option, value):
    """One file or folder name: not empty, not '.' or '..', no '/', no control characters, at most 255 bytes."""
    error = control_character(option, value)
    if error:
        return error
    text = "" if value is None else str(value)
    if text in ("", ".", "..") or "/" in text:
        return "%s %r is not a file or folder name (empty, '.', '..' or with a '/')" % (option, value)
    if len(text.encode("utf-8")) > _PATH_COMPONENT_MAX:
        return "%s %r... is %d bytes long; file systems allow at most %d per name" % (
            option, text[:40], len(text.encode("utf-8")), _PATH_COMPONENT_MAX)
    return None


def relative_path(option, value):
    """A path inside a folder: components that are each a path_component (so it cannot climb out)."""
    error = control_character(option, value)
    if error:
        return error
    text = "" if value is None else str(value)
    if text.startswith("/"):
        return "%s %r must be relative to the model folder" % (option, value)
    for component in text.split("/"):
        error = path_component(option, component)
        if error:
            return "%s (in %r)" % (error, value)
    return None


def environment_name(option, value):
    return _grammar(option, value, _ENVIRONMENT_NAME,
                    "an environment variable name (letters, digits and '_', not starting with a digit)")


def looks_secret(name):
    """Whether an environment variable's name says it holds a secret (AWS_SECRET_ACCESS_KEY, *_TOKEN, ...)."""
    upper = str(name).upper()
    if any(part in upper for part in _SECRET_SUBSTRINGS):
        return True
    return any(word in _SECRET_WORDS for word in upper.split("_"))


def finite_number(option, value, minimum=None):
    """A real number (not NaN or infinite, not text), at least minimum when given."""
    if isinstance(value, bool):
        return "%s must be a number, got %r" % (option, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "%s must be a number, got %r" % (option, value)
    if math.isnan(number) or math.isinf(number):
        return "%s must be a finite number, got %r" % (option, value)
    if minimum is not None and number < minimum:
        return "%s must be at least %s, got %r" % (option, minimum, value)
    return None


def first_error(*errors):
    for error in errors:
        if error:
            return error
    return None
