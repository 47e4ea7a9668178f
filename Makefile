# genserve entry points. `make demo` and `make test` are the two commands a newcomer runs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The manifest checks (kubernetes-validate, checkov) in their own environment: checkov's pins clash with
# the server's (numpy 2).
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp

.DEFAULT_GOAL := demo
.PHONY: demo test lint format serve export train bench perf-analyzer lock clean tools nginx

# Create the virtual environment and install everything pinned; skipped when nothing changed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[server,export,bench,dev]'
	touch $@

$(TOOLS_STAMP): docker/kubernetes/tools-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r docker/kubernetes/tools-requirements.txt
	touch $@

tools: $(TOOLS_STAMP)  ## the Kubernetes manifest checks' environment (.venv-tools)

demo: $(STAMP)  ## serve every model and write images through the client
	$(BIN)/genserve demo

# The front proxy's nginx (Debian's package); the tests run servers behind it.
nginx:  ## install nginx if it is missing
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends nginx; }

test: $(STAMP) $(TOOLS_STAMP) nginx  ## lint, export the models if needed, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/genserve export --if-missing --no-report
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

serve: $(STAMP)  ## run the embedded Triton server in the foreground
	$(BIN)/genserve serve

export: $(STAMP)  ## export every model to ONNX into model_repository/
	$(BIN)/genserve export

bench: $(STAMP)  ## the benchmark sweep and its report
	$(BIN)/genserve bench

perf-analyzer: $(STAMP)  ## install Triton's C++ load generator (pinned, from tritonclient 2.51.0) into .venv
	$(BIN)/python -m genserve.benchmarks.perf_analyzer install

lock: $(STAMP)  ## refresh constraints.txt from the current environment
	$(BIN)/pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
