# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet_instance_types filter: a thin wrapper over module_utils/_fleet_types.py (documented in
fleet_instance_types.yml next to this file)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.aws.plugins.module_utils import _fleet_types
from ansible_collections.llmserve.aws.plugins.module_utils import _sizing as sizing


def fleet_instance_types(parameters_b, reference_type, **options):
    """Every type with the reference type's GPUs that holds the profile, weighted, cheapest per 1M tokens first."""
    if isinstance(parameters_b, bool) or not isinstance(parameters_b, (int, float)):
        raise AnsibleFilterError("fleet_instance_types: expected a parameter count in billions, got %r"
                                 % (parameters_b,))
    try:
        return _fleet_types.fleet_instance_types(sizing.model_from_parameters(float(parameters_b)), options,
                                                 reference_type)
    except sizing.SizingError as error:
        raise AnsibleFilterError("fleet_instance_types: %s" % error.message) from error


class FilterModule(object):
    def filters(self):
        return {"fleet_instance_types": fleet_instance_types}
