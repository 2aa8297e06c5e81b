# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Units shared by the sizing arithmetic: bytes per GiB/MiB and rounding for results."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

GIB = 1024 ** 3
MIB = 1024 ** 2


def gib(num_bytes):
    return num_bytes / GIB


def round_or_none(value, digits=2):
    return None if value is None else round(value, digits)
