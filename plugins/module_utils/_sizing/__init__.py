# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizing: the one EC2 GPU catalog and the arithmetic that places a model on it (private to this collection).

catalog (GPUs, instances, prices: data only), model_spec (the model's shape), precision (weight storage),
memory (per-GPU memory arithmetic), costs (throughput and cost), request (defaults and checks), candidates
(each instance against a request), planner (the placement), advice (what would fit when nothing does);
units and errors are shared by all. Import from the submodules; this file exports nothing.
"""
