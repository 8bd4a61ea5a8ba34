# Edge Deploy tasks. `make demo` and `make test` do all their own set-up.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/edge_deploy/simdata/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= 0
SIM_TAG = $(shell bash edge_deploy/simdata/build-image --tag)
SIM_BASE_TAG = $(shell bash edge_deploy/simdata/build-image --base-tag)
# The longest scenarios first, so that the two at a time finish together.
MOLECULE_SCENARIOS ?= release base $(filter-out release base,$(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
MOLECULE_JOBS ?= 2

.PHONY: help setup demo test lint unit robot-py38 molecule fleet bench bench-rollout sim-up sim-down clean

help:
	@echo "make demo      set up, start the simulated fleet, provision it, print the report"
	@echo "make test      set up, then lint, unit tests, molecule scenarios and fleet tests"
	@echo "make setup     apt packages, .venv, collections check, simulated Jetson images"
	@echo "make lint      yamllint, ansible-lint (production profile), ruff"
	@echo "make unit      pytest unit tests (no containers)"
	@echo "make robot-py38  the robot side's tests under Python 3.8 (JetPack 5's interpreter)"
	@echo "make molecule  every molecule scenario, two at a time (MOLECULE_SCENARIOS=..., MOLECULE_JOBS=...)"
	@echo "make fleet     fleet tests over real SSH against simulated robots"
	@echo "make bench     engine_builder benchmark (numbers and a plot under reports/bench)"
	@echo "make bench-rollout  rollouts on 6, 12, 24 simulated robots against a plain push (BENCH_ROBOTS, BENCH_FORKS, BENCH_REPEAT)"
	@echo "make sim-up / sim-down   start or remove the simulated fleet"

setup:
	@scripts/setup

# The demo installs only what it needs; the tests add their tools (a test setup serves the demo too).
demo:
	@scripts/setup demo
	edge-deploy demo

test: setup
	@scripts/run-tests

lint:
	scripts/check-docs
	yamllint --strict .
	ansible-lint
	ruff check .
	@# no import cycles (lazy imports in functions count too), then the import contracts in
	@# pyproject's [tool.importlinter]: controller code (edge_deploy, plugins) never imports edge_agent
	pylint --persistent=n --score=n --disable=all --enable=cyclic-import \
	  edge_agent edge_common edge_deploy engine_builder
	lint-imports --no-cache
	@# the CI templates against GitHub's and GitLab's own schemas (vendored: no network)
	check-jsonschema --builtin-schema vendor.github-workflows examples/ci/github-actions.yml
	check-jsonschema --builtin-schema vendor.gitlab-ci examples/ci/gitlab-ci.yml
	@# the collection as it ships: ansible-test sanity on the built tarball, and the execution
	@# environment's build context (ansible-builder create; building the image needs a registry)
	scripts/collection sanity
	scripts/collection ee

unit:
	pytest -n 2 --ignore=tests/fleet tests

robot-py38:
	scripts/test-robot-py38

molecule:
	@EDGE_SIM_TAG=$(SIM_TAG) EDGE_SIM_BASE_TAG=$(SIM_BASE_TAG) MOLECULE_JOBS=$(MOLECULE_JOBS) \
	  scripts/run-molecule $(MOLECULE_SCENARIOS)

fleet:
	pytest --durations=30 tests/fleet

bench: setup
	python benchmarks/engine_builder_bench.py

# Update, re-deploy, rollback and a plain-push baseline, timed at each fleet size (a quiet machine:
# nothing else running). Ratios on screen; JSON and a plot under reports/bench.
BENCH_ROBOTS ?= 6,12,24
BENCH_FORKS ?= 24
BENCH_REPEAT ?= 1
bench-rollout: setup
	python benchmarks/rollout_bench.py --robots $(BENCH_ROBOTS) --forks $(BENCH_FORKS) --repeat $(BENCH_REPEAT)

sim-up: setup
	edge-deploy sim up

sim-down:
	edge-deploy sim down

clean: sim-down
	rm -rf .sim reports .pytest_cache .ruff_cache
