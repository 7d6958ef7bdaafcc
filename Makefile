# graceful.wsgi: `make demo` (a local fleet of 3 app hosts behind nginx: deploy v1, then v2 under load) and `make test` (everything).
# Works on a bare Debian 12 host as root: missing Debian packages are installed first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := .build
COLLECTION_LINK := $(BUILD)/collections/ansible_collections/graceful/wsgi
# Outside the work tree: inside it ansible-test would ask git, which ignores $(BUILD), and find no files.
SANITY_TOP := $(or $(TMPDIR),/tmp)/graceful-wsgi-sanity-$(shell echo $(CURDIR) | sha256sum | cut -c1-8)
SANITY_ROOT := $(SANITY_TOP)/ansible_collections/graceful/wsgi
STAMP := $(VENV)/.installed-$(shell cat requirements/dev.txt 2>/dev/null | sha256sum | cut -c1-12)
DEBIAN_PACKAGES := python3 python3-venv python3-dev gcc make git haproxy
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: help test demo demo-clean deps debian-deps venv lint sanity publish-check ee-check units integration compat compat-venvs integration-and-compat molecule fleet-image benchmark benchmark-deploy lock clean

export PATH := $(CURDIR)/$(BIN):$(PATH)

help:
	@echo "make demo   - build a local fleet (3 app hosts + nginx), deploy the demo app v1, then v2 under load; print the report"
	@echo "make test   - install what is missing, then lint, sanity, unit, integration, compat tests and the molecule fleet scenarios"

test: deps lint sanity publish-check ee-check units integration-and-compat molecule
	@echo "make test: all green"

# The fleet stays up after the demo (curl http://127.0.0.1:18400/); make demo-clean removes it.
demo: deps $(COLLECTION_LINK)
	$(BIN)/python demo/run.py

demo-clean: venv
	$(BIN)/python demo/run.py --clean

deps: debian-deps venv

debian-deps:
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP) $(COLLECTION_LINK)

$(STAMP): requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	rm -f $(VENV)/.installed-* && touch $@

# Unit tests import the working tree as ansible_collections.graceful.wsgi.
$(COLLECTION_LINK):
	mkdir -p $(dir $@) && ln -sfn $(CURDIR) $@

# ansible-lint is offline (.ansible-lint): it finds this collection through the link, not by installing it.
lint: venv
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(BUILD)/collections $(BIN)/ansible-lint --profile production --strict

# ansible-test needs the collection under ansible_collections/NAMESPACE/NAME: a copy of the tracked files.
sanity: venv
	rm -rf $(SANITY_TOP) && mkdir -p $(SANITY_ROOT)
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $(SANITY_ROOT)
	$(BIN)/python .ci/ansible_test_pip_bootstrap.py
	cd $(SANITY_ROOT) && $(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --color no
	rm -rf $(SANITY_TOP)

# The tarball Galaxy / Automation Hub get: built from the tracked files with caches planted, members and size
# checked, imported by galaxy-importer (its own venv from requirements/galaxy-importer.txt).
publish-check: venv
	$(BIN)/python tests/publish/check_collection.py

# The AWX side: the execution environment's build context (ansible-builder create from its own venv, offline,
# no image) and the survey in step with the rollout role's argument specs.
ee-check: venv
	$(BIN)/python tests/publish/check_execution_environment.py
	$(BIN)/python tests/publish/awx_survey.py --check

units: venv
	PYTHONPATH=$(BUILD)/collections $(PYTEST) -q tests/unit

integration: venv
	$(PYTEST) -q -rA --timeout 600 tests/support_selftest tests/integration

# Both at once, the compat runs' output shown once the integration tests end: each keeps about one of CI's two cores
# busy (their servers spend much of a test waiting on slow requests in flight), one after the other they leave one idle.
integration-and-compat: venv compat-venvs
	@integration_rc=0; compat_rc=0; \
	$(MAKE) --no-print-directory compat > $(BUILD)/compat.log 2>&1 & compat_pid=$$!; \
	$(MAKE) --no-print-directory integration || integration_rc=$$?; \
	wait $$compat_pid || compat_rc=$$?; \
	echo "== compat, run beside the integration tests (exit $$compat_rc)"; cat $(BUILD)/compat.log; \
	[ $$integration_rc -eq 0 ] && [ $$compat_rc -eq 0 ]

# One venv per older ansible-core (requirements/core-*.txt), keyed by its lock file. The compat runs leave out the
# deploy benchmark's picture (matplotlib is in the main venv only: it is no part of the collection).
compat-venvs: deps
	@for lock in requirements/core-*.txt; do \
	  core=$$(basename $$lock .txt); venv=$(BUILD)/venv-$$core-$$(sha256sum $$lock | cut -c1-8); \
	  if [ ! -x $$venv/bin/ansible ]; then \
	    rm -rf $(BUILD)/venv-$$core-* && $(PYTHON) -m venv $$venv && \
	    $$venv/bin/python -m pip install --quiet --disable-pip-version-check -r $$lock; \
	  fi; \
	done

compat: compat-venvs
	@for lock in requirements/core-*.txt; do \
	  core=$$(basename $$lock .txt); venv=$(BUILD)/venv-$$core-$$(sha256sum $$lock | cut -c1-8); \
	  echo "== $$core: unit tests and the real uWSGI and gunicorn integration subset"; \
	  PYTHONPATH=$(BUILD)/collections $$venv/bin/python -m pytest -p no:cacheprovider -q tests/unit \
	    --ignore=tests/unit/test_deploy_timeline.py; \
	  $$venv/bin/python -m pytest -p no:cacheprovider -q --timeout 600 tests/integration \
	    -k "chain-fifo or rolling-2 or bad_input or broken_worker or info_reports \
	        or test_upgrade_loses_no_request or test_upgrade_to_a_broken_release or test_check_mode_sends_nothing \
	        or test_pidfile_naming_an_unrelated_process"; \
	done

# Molecule scenarios on a fleet of systemd containers. tests/fleet/testbed starts dockerd only when no engine
# answers and builds the host image only when none was built from the same inputs (no registry needed).
# Two lanes run at once, each its scenarios in turn (comma-separated; lanes apart by spaces): a scenario leaves about
# 40% of two cores idle (SSH round trips, health gates, slow requests draining), which the other lane takes. Each lane
# has its own XDG_CACHE_HOME, so two deploys never build one wheelhouse at once. A lane's output is shown once both
# ended; its lines "== molecule <scenario>: ..." as they happen. make molecule MOLECULE_LANES=rollout runs one.
MOLECULE_LANES := rollout,uwsgi,emperor rollout_haproxy,django,gunicorn

fleet-image: deps
	tests/fleet/testbed image

# The rollout_haproxy scenario runs some playbooks with the compat venvs' ansible-core (2.17, 2.18). The rollout
# scenario runs some through ansible-runner, from the collection's tarball installed beside ansible-core alone with
# the collections galaxy.yml declares (tests/publish/install_core_only.py).
molecule: venv compat-venvs $(COLLECTION_LINK)
	@image=$$(tests/fleet/testbed image); \
	for lock in requirements/core-*.txt; do \
	  core=$$(basename $$lock .txt); \
	  export GRACEFUL_CORE_$$(echo $${core#core-} | tr . _)=$(CURDIR)/$(BUILD)/venv-$$core-$$(sha256sum $$lock | cut -c1-8)/bin/ansible-playbook; \
	done; \
	export GRACEFUL_COLLECTIONS_SITE=$$($(BIN)/python -c 'import ansible_collections.community.docker as c, os; print(os.path.abspath(os.path.join(c.__path__[0], "../../..")))'); \
	runner_env=$$($(BIN)/python tests/publish/install_core_only.py $(BUILD)); export $$runner_env; \
	run_lane() { \
	  for scenario in $${2//,/ }; do \
	    echo "== molecule $$scenario on $$image" >> $(BUILD)/molecule-lane$$1.log; started=$$(date +%s); \
	    if XDG_CACHE_HOME=$(CURDIR)/$(BUILD)/cache-lane$$1 GRACEFUL_FLEET_IMAGE=$$image \
	        $(BIN)/molecule test --scenario-name $$scenario >> $(BUILD)/molecule-lane$$1.log 2>&1; then \
	      echo "== molecule $$scenario: green in $$(( $$(date +%s) - started )) s (lane $$1)" | tee -a $(BUILD)/molecule-lane$$1.log; \
	    else \
	      echo "== molecule $$scenario: FAILED after $$(( $$(date +%s) - started )) s (lane $$1)" | tee -a $(BUILD)/molecule-lane$$1.log; \
	      return 1; \
	    fi; \
	  done; \
	}; \
	lane=0; pids=""; \
	for scenarios in $(MOLECULE_LANES); do \
	  lane=$$((lane + 1)); rm -f $(BUILD)/molecule-lane$$lane.log; \
	  run_lane $$lane $$scenarios & pids="$$pids $$!"; \
	done; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	for log in $$(seq 1 $$lane); do echo "==== lane $$log: $(BUILD)/molecule-lane$$log.log"; cat $(BUILD)/molecule-lane$$log.log; done; \
	[ $$failed -eq 0 ]

benchmark: venv
	$(BIN)/python benchmarks/reload.py

# graceful.wsgi.deploy on a fleet of the test bed under load, against the physical limit (BENCH_ARGS="--hosts 12").
BENCH_ARGS ?=
benchmark-deploy: venv $(COLLECTION_LINK)
	$(BIN)/python benchmarks/deploy.py $(BENCH_ARGS)

lock:
	$(PYTHON) -m venv $(BUILD)/lock && $(BUILD)/lock/bin/pip install --quiet -r requirements/dev.in
	(echo "# Generated by 'make lock' from requirements/dev.in: do not edit by hand."; $(BUILD)/lock/bin/pip freeze) > requirements/dev.txt

clean:
	rm -rf $(BUILD) $(VENV)
