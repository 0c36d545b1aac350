# Two commands do all set-up: `make demo` (venv, install, default benchmark) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: install demo test test-fast bench clean postgres

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1  # MovieLens-100K for the movielens suite's tests
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mtl-bench calibrate --draws 1 --out runs/demo

# The tuning tests start a throw-away PostgreSQL server: install Debian's package when missing (as root).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL not installed and not root: its test will be skipped (fails under CI=true)"; fi

test: install postgres
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

bench: install
	$(VENV)/bin/mtl-bench bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
