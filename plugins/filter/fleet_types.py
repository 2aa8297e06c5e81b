# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet_instance_types filter: a thin wrapper over module_utils/_sizing/fleet_types.py (documented in
fleet_instance_types.yml next to this file)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.aws.plugins.module_utils._sizing import fleet_types
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.errors import SizingError
from ansible_collections.llmserve.aws.plugins.module_utils._sizing.model_spec import model_from_parameters


def fleet_instance_types(parameters_b, reference_type, **options):
    """Every type with the reference type's GPUs that holds the profile, weighted, cheapest per 1M tokens first."""
    if isinstance(parameters_b, bool) or not isinstance(parameters_b, (int, float)):
        raise AnsibleFilterError("fleet_instance_types: expected a parameter count in billions, got %r"
                                 % (parameters_b,))
    try:
        return fleet_types.fleet_instance_types(model_from_parameters(float(parameters_b)), options, reference_type)
    except SizingError as error:
        raise AnsibleFilterError("fleet_instance_types: %s" % error.message) from error


class FilterModule(object):
    def filters(self):
        return {"fleet_instance_types": fleet_instance_types}
