# ganeti-ceph: two commands do all set-up on a fresh Debian 12 machine (root):
#   make demo   install, bring up the local cluster, run the main job on it
#   make test   install and run the whole test suite
PY      := .venv/bin/python
STAMP   := .venv/.installed
DEMO_DIR ?= /var/lib/ganeti-ceph/demo

.PHONY: install demo test test-full unit lint bench reliability clean deb

$(STAMP): setup.py scripts/install-deps
	bash scripts/install-deps
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --dir $(DEMO_DIR) $(if $(KEEP),--keep,)

# Lint first: a broken layering contract fails the run before the long suite starts.
test: $(STAMP) lint
	$(PY) -m pytest -m "not full"

# Everything, the repeats marked `full` too (README.md, "Tests").
test-full: $(STAMP) lint
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest -m "not ceph"

# ruff, then the import contracts of pyproject.toml (doc/architecture.md, the dependency rule).
lint: $(STAMP)
	$(PY) -m ruff check .
	.venv/bin/lint-imports --no-cache

# RELIABILITY=<test files> runs part of the suite; rows of scenarios not run are kept in results.json.
RELIABILITY ?= tests/reliability
reliability: $(STAMP)
	mkdir -p reliability
	GANETI_CEPH_RELIABILITY_OUT=reliability/results.json $(PY) -m pytest $(RELIABILITY)

bench: $(STAMP)
	$(PY) bench/run.py

# The Debian package, built with Debian's tools only (doc/packaging.md).
deb: $(STAMP)
	/usr/bin/python3 -I packaging/build_deb.py --out build/deb

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
