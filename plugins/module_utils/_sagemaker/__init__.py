# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SageMaker real-time endpoints for llmserve.aws.sagemaker_endpoint (private to this collection).

calls: boto3 wrappers (retries, NotFound -> None); naming: content-hash names of models and endpoint configs;
instances: the ml.* types and the serving plan from the sizing planner; validation: input checks; desired: the
wanted models, endpoint config and scaling as pure data; scaling: Application Auto Scaling per variant;
endpoint: the read / compare / change flow.
"""
