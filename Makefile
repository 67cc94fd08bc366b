# The two commands of the README:
#   make demo   set up .venv and run the main job on embedded defaults
#   make test   set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-later lint bench clean help browser database

help:
	@echo "make demo   - set up .venv and run the main job (simulate -> validate -> ...)"
	@echo "make test   - set up .venv, lint, and run the whole test suite"
	@echo "make bench  - run the benchmarks in benchmarks/ and print their figures"
	@echo "make test-later [DAYS=400] - the test suite with every clock DAYS days ahead"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/callback-timing demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks training serving

# the dashboard test drives Debian's chromium (Playwright's own browser download is blocked)
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the dashboard's browser test"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
	    apt-get install -y -qq chromium >/dev/null; }

# the store's PostgreSQL tests start a throwaway server of Debian's postgresql (tests/conftest.py)
database:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing Debian's postgresql for the outcome store's PostgreSQL tests"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
	    apt-get install -y -qq postgresql >/dev/null; }

test: $(STAMP) lint browser database
	$(BIN)/python -m pytest -n 2 --dist loadfile

# the whole suite as it will run DAYS days from now (libfaketime moves every clock): tests
# and code that break as dates age fail here first; not part of `make test`
DAYS ?= 400
test-later: $(STAMP) browser database
	$(BIN)/python -m pip install --quiet libfaketime
	$(BIN)/python -m tests.time_travel $(DAYS) -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
