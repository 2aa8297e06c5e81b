# llmserve.aws: one entry point for set-up, tests and the demo.
# Everything heavy (venvs, the systemd host image, the vLLM venv, models) is cached under
# $(LLMSERVE_CACHE), keyed by a hash of its recipe, so a second run starts fast.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export LLMSERVE_CACHE ?= $(HOME)/.cache/llmserve-aws
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export PATH := $(BIN):$(PATH)
ROLE ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip==24.2'
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@

.PHONY: venv
venv: $(BIN)/.installed collections ## control venv (.venv) with ansible, molecule, moto, linters

.PHONY: collections
collections: ## make this checkout visible to Ansible as llmserve.aws
	mkdir -p .collections/ansible_collections/llmserve
	ln -sfn ../../.. .collections/ansible_collections/llmserve/aws
