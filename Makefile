# llmserve.aws: one entry point for set-up, tests and the demo.
# Everything heavy (the systemd host image, the vLLM venv, models, ansible-test's venvs) is cached under
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
# Where molecule's verifier writes its junit reports (.config/molecule/config.yml); tests/gates.sh sets its own.
export LLMSERVE_VERIFY_REPORTS ?= $(CURDIR)/tests/output/verify
# Prefix of the molecule host containers' names: two checkouts on one Docker daemon each set their own.
MOLECULE_HOST_PREFIX ?= llmserve
# Roles with a molecule scenario and the playbooks on a fleet the local AWS launches (tests/fleet: fleet.yml,
# serve.yml through the dynamic inventory, resize, rolling update). The bench's own smoke scenario (tests/bench,
# `make molecule ROLE=bench`) is for when the bench itself is in doubt: every scenario here runs on the same parts.
MOLECULE_SCENARIOS := $(sort $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))) fleet
ROLE ?= $(MOLECULE_SCENARIOS)
# Where the bench's parts are, for tests and scenarios (each script builds on first use, then answers at once).
BENCH_ENV = LLMSERVE_BENCH_IMAGE="$$(tests/bench/host_image.sh | tail -n 1)"; \
	LLMSERVE_VLLM_VENV="$$(tests/bench/vllm_venv.sh | tail -n 1)"; \
	LLMSERVE_TINY_MODEL="$$(tests/bench/models.sh tiny | tail -n 1)"; \
	LLMSERVE_VLLM_WHEELHOUSE="$$(tests/bench/vllm_wheelhouse.sh | tail -n 1)"; \
	LLMSERVE_DEMO_MODEL="$$(tests/bench/models.sh smollm2 | tail -n 1)"; \
	LLMSERVE_DEMO_WHEELHOUSE="$$(tests/bench/demo/wheelhouse.sh | tail -n 1)"; \
	export LLMSERVE_BENCH_IMAGE LLMSERVE_VLLM_VENV LLMSERVE_TINY_MODEL LLMSERVE_VLLM_WHEELHOUSE \
	  LLMSERVE_DEMO_MODEL LLMSERVE_DEMO_WHEELHOUSE;

# --junitxml=DIR/NAME.xml when tests/gates.sh gave a report folder: a gate running pytest twice keeps both reports
# (a later --junitxml wins over the one in PYTEST_ADDOPTS).
junit_report = $(if $(LLMSERVE_JUNIT_DIR),--junitxml=$(LLMSERVE_JUNIT_DIR)/$(1).xml)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip==24.2'
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@

.PHONY: venv
venv: $(BIN)/.installed collections ## control venv (.venv): ansible + amazon.aws/community.aws, molecule, moto, linters

.PHONY: collections
collections: ## make this checkout visible to Ansible as llmserve.aws (a link under .collections/)
	@mkdir -p .collections/ansible_collections/llmserve
	@# Only when missing: gates in two lanes run this at once, and two `ln -sfn` can race.
	@[ "$$(readlink .collections/ansible_collections/llmserve/aws)" = ../../.. ] \
	  || ln -sfn ../../.. .collections/ansible_collections/llmserve/aws

.PHONY: host-packages
host-packages: ## Debian packages the bench needs (docker.io, debootstrap, shellcheck, haproxy)
	tests/bench/host_packages.sh

.PHONY: bench
bench: venv host-packages ## build or reuse the bench: systemd host image, vLLM CPU venv, models, wheelhouses, IMDS address on lo
	tests/bench/host_image.sh >/dev/null
	tests/bench/models.sh tiny >/dev/null
	tests/bench/models.sh smollm2 >/dev/null
	tests/bench/vllm_wheelhouse.sh >/dev/null
	tests/bench/demo/wheelhouse.sh >/dev/null
	tests/bench/imds_address.sh

.PHONY: lint
lint: venv host-packages ## ansible-lint (production profile) + changelog fragments
	ansible-lint
	antsibull-changelog lint

.PHONY: sanity
sanity: venv host-packages ## ansible-test sanity, run for real (offline stand-in for its pip bootstrap)
	tests/sanity/run.sh

.PHONY: unit
unit: venv ## pytest unit tests (pure logic, seconds)
	pytest -q tests/unit

.PHONY: integration
integration: integration-aws integration-vllm ## pytest integration tests (both halves below)

.PHONY: integration-aws
integration-aws: venv bench ## integration tests without vLLM (moto, IMDS emulator, launcher), two files at a time
	$(BENCH_ENV) pytest -q -m "not vllm" -n 2 --dist loadfile $(call junit_report,integration-aws) tests/integration

.PHONY: integration-vllm
integration-vllm: venv bench ## integration tests with vLLM on CPU (marker vllm), one at a time
	$(BENCH_ENV) pytest -q -m vllm $(call junit_report,integration-vllm) tests/integration

.PHONY: molecule
molecule: venv bench ## molecule scenarios on the systemd host (all, or ROLE=name)
	$(BENCH_ENV) \
	for scenario in $(ROLE); do \
	  case "$$scenario" in bench|fleet) dir=tests/$$scenario;; *) dir=roles/$$scenario;; esac; \
	  echo "== molecule: $$scenario"; \
	  (cd $$dir && LLMSERVE_MOLECULE_HOST=$(MOLECULE_HOST_PREFIX)-$$scenario molecule test --all) || exit 1; \
	done

.PHONY: moto-up
moto-up: venv ## local AWS (moto + AWS-behaviour extensions) in the background; URL in .build/moto.url
	@mkdir -p .build
	python tests/bench/moto_server.py --daemon --port-file .build/moto.url --pid-file .build/moto.pid --log-file .build/moto.log --quiet

.PHONY: moto-down
moto-down: ## stop the local AWS started by moto-up
	python tests/bench/moto_server.py --stop --pid-file .build/moto.pid

.PHONY: bench-cold-start
bench-cold-start: venv bench ## benchmark: host start to first token, manual vs boot path vs baked image (BENCH_ARGS=...)
	$(BENCH_ENV) python benchmarks/cold_start/benchmark.py $(BENCH_ARGS)

.PHONY: demo
demo: venv host-packages ## the main job on the embedded default: local AWS + systemd host + vLLM on CPU -> an answer
	tests/bench/demo/demo.sh

.PHONY: demo-clean
demo-clean: venv ## remove what `make demo` made (the host container, the local AWS, IMDS emulator and ALB stand-in, .build/demo*)
	-docker rm -f llmserve-demo-host
	-python tests/bench/alb_standin.py --stop --pid-file .build/alb.pid
	-[ -s .build/imds.pid ] && kill "$$(cat .build/imds.pid)"
	-[ -s .build/moto.pid ] && python tests/bench/moto_server.py --stop --pid-file .build/moto.pid
	rm -f .build/demo*.json .build/demo-*.log .build/imds.* .build/moto.* .build/alb.*
	rm -rf .build/alb .build/demo-alb-tls

.PHONY: benchmark-model-sync
benchmark-model-sync: venv ## benchmark: model_sync vs s5cmd vs aws s3 sync, CPU- and network-bound (BENCH_ARGS=...)
	python benchmarks/model_sync/benchmark.py $(BENCH_ARGS)

.PHONY: test-watcher-pythons
test-watcher-pythons: ## the spot watcher's unit tests under Python 3.9 and 3.10 (AL2023, Ubuntu 22.04; cached venvs)
	tests/bench/watcher_pythons.sh

.PHONY: benchmark-spot-drill
benchmark-spot-drill: venv bench ## benchmark: spot drill x20, p50/p95 notice -> deregistered (not part of make test)
	$(BENCH_ENV) python benchmarks/spot_drill/benchmark.py --rounds 20

.PHONY: test
test: venv ## every gate: lint, sanity, unit, integration, molecule; ends with "N passed, N failed"
	tests/gates.sh

.PHONY: build
build: venv ## the collection tarball (ansible-galaxy collection build)
	ansible-galaxy collection build --force --output-path .build

.PHONY: galaxy-import
galaxy-import: venv ## Galaxy's import checks (galaxy-importer, offline, flake8 on) on a freshly built tarball
	tests/galaxy/import.sh

.PHONY: clean
clean: ## remove what this checkout made (not the shared cache)
	rm -rf .venv .collections .build .ansible tests/output .pytest_cache

.PHONY: print-molecule-scenarios
print-molecule-scenarios:
	@echo $(MOLECULE_SCENARIOS)
