# Two commands do everything on a fresh machine with Python 3.11+:
#   make run   - the whole service on http://127.0.0.1:8000
#   make test  - the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test package bench migrate outbox publish rebuild dlq dlq-replay lint clean token

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@echo "installing what the service and its tools need into $(VENV) (the first time: about a minute) ..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@echo "installed"
	@touch $@

run: $(VENV)/.installed
	$(PY) -m devstack

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The deployable package in dist/ (or DIST): the functions' zip (with
# compiled bytecode: Lambda cannot write it) and a SAM template with
# everything of deploy/template.yaml merged in. STAGE=prod unless told.
STAGE ?= prod
DIST ?= dist
package: $(VENV)/.installed
	rm -rf $(DIST)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-1} $(VENV)/bin/chalice package --stage $(STAGE) \
		--merge-template deploy/template.yaml $(DIST)
	$(PY) -m deploy.snapstart $(DIST)/sam.yaml
	$(PY) -m deploy.bytecode $(DIST)/deployment.zip $(DIST)/sam.yaml
	$(PY) -m deploy.validate $(DIST)/sam.yaml

# Every benchmark, ratios against baselines run in the same process, into
# bench/results.json; BENCH_QUICK=1 for a run of seconds (it checks that
# everything runs, its figures mean little).
bench: $(VENV)/.installed
	$(PY) -m bench

migrate: $(VENV)/.installed
	$(PY) -m ops migrate

# Style and types: ruff, then mypy over the code that runs (pyproject.toml says which).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache

# The outbox's backlog; publish sends it to Kafka now, once (or wakes the
# running relay and waits for it).
outbox: $(VENV)/.installed
	$(PY) -m ops outbox

publish: $(VENV)/.installed
	$(PY) -m ops outbox --publish

rebuild: $(VENV)/.installed
	$(PY) -m ops rebuild

# The projection's dead letters; dlq-replay re-projects the customers they
# name from the event store and deletes them.
dlq: $(VENV)/.installed
	$(PY) -m ops dlq

dlq-replay: $(VENV)/.installed
	$(PY) -m ops dlq --replay

# A token for the running local stack, valid for an hour.
# SCOPES="customers:read customers:write" (the default) and SUBJECT=... choose.
token: $(VENV)/.installed
	@$(PY) -m devstack.issuer token
