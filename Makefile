# Entry points: `make demo`, `make test` and `make docs`. Each creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs install colab clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo,docs]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tfprune demo --out demo_output

# Two workers (pytest-xdist), a test file per worker: the suite took 31-37 minutes on one of CI's two cores.
# PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The API reference (pdoc), the README's Tour as its first page: docs/html/index.html.
docs: $(STAMP)
	$(PY) docs/build.py docs/html

# The repository as committed, pretrained models included, for the notebooks' Colab install cell.
colab:
	mkdir -p dist && git archive --format=zip -o dist/tfprune.zip HEAD

clean:
	rm -rf $(VENV) demo_output docs/html build dist *.egg-info
