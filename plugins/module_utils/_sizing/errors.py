# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the sizing planner."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class SizingError(Exception):
    """A request the planner cannot satisfy; the message names the parameter or the shortfall, and the fix.

    details: data worth returning with the failure (candidates, what would fit).
    """

    def __init__(self, message, details=None):
        super(SizingError, self).__init__(message)
        self.message = message
        self.details = details or {}
