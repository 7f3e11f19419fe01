# Two entry points for a fresh machine: `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# The pinned torch first, so the package's looser torch requirement is already met.
	# On a machine whose pip finds no local CPU wheel, this is PyPI's CUDA build (several GB).
	$(VENV)/bin/pip install --quiet $(TORCH_PIN)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/llmjobs run llmjobs/samples/comments.jsonl --kind moderate

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check llmjobs tests benchmarks
	$(VENV)/bin/mypy
