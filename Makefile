# The two set-up commands of the README: `make demo` and `make test`. Both create the environment first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vopd-bench-env

.PHONY: demo reports test env lint bench
env: $(STAMP)
$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)

demo: env  ## the whole story on the embedded default model (no downloads); report under runs/demo/report/
	$(VENV)/bin/vopd-bench demo

reports: env  ## the demo, refreshing the committed reports/ snapshot (rewrites tracked files)
	$(VENV)/bin/vopd-bench demo --report-dir reports

test: env  ## lint, then every test (vLLM and lmms-eval tests included)
	$(VENV)/bin/ruff check vopd_bench tests benchmarks scripts
	$(PY) -m pytest -q -p no:cacheprovider

bench: env  ## benchmark scripts (print figures; not tests)
	$(PY) benchmarks/eval_throughput.py
