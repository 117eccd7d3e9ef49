# Two commands for a fresh clone: `make demo` and `make test`.
# Each creates .venv if missing and installs what is missing; a second run starts at once.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build this package index holds; pyproject says torch>=2.4.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py

test: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

bench: $(STAMP)
	$(PY) bench/loop_overhead.py
	$(PY) bench/save_load.py
	$(PY) bench/checkpoint_overhead.py
	$(PY) bench/resume.py
	$(PY) bench/distributed_save.py
	$(PY) bench/preemption.py
	$(PY) bench/writer_interference.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
