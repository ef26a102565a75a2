# Clarion — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-peers clean catalogue browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: install, migrate, and serve the API + workers on 127.0.0.1:8000 (SQLite under ./var, file providers)
run: $(STAMP)
	$(BIN)/clarion serve

## browser: Debian's Chromium and CJK fonts for the console's browser tests (Playwright drives /usr/bin/chromium)
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { echo "installing Chromium (the console's browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; }

## test: install the dev extras and Chromium, then lint and run the whole suite (SQLite and PostgreSQL)
test: $(STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## catalogue: refresh the console's message catalogues from its code and templates (then translate the new
## entries in src/clarion/console/locale/zh_CN/LC_MESSAGES/console.po); they are compiled when the console starts
CONSOLE := src/clarion/console
catalogue: $(STAMP)
	cd $(CONSOLE) && ../../../$(BIN)/pybabel extract -F locale/babel.cfg -k _ --no-location --omit-header \
		-o locale/console.pot . && ../../../$(BIN)/pybabel update -D console -d locale -i locale/console.pot \
		--no-fuzzy-matching -w 120 && rm locale/console.pot

## bench: the triggered-send benchmark (prints one JSON line)
bench: $(STAMP)
	$(BIN)/python bench/triggered.py

## bench-peers: the Celery baseline and Clarion's campaign side by side in one run (installs the peers extra)
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,peers]'
	$(BIN)/python bench/peers/celery_campaign.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
