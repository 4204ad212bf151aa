# ganforge — the two front doors are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRA ?= cpu,dev
DEMO_DIR ?= runs/demo
PORT ?= 3000
FLAVOR ?= cpu

export BENTOML_DO_NOT_TRACK := 1
export TQDM_MININTERVAL := 5

.PHONY: venv browser test lint format demo bench clean container container-check

# uv installs what pip would, about twice as fast (torch's wheels alone unpack to 5 GB). It reads
# no pip.conf, so the package sources and constraints pip is configured with are handed to it;
# pip is the fallback where uv cannot be installed.
pip_cfg = $(shell $(PY) -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p")
UV_SOURCES = $(foreach d,$(call pip_cfg,find-links),--find-links $(d)) \
	$(foreach u,$(call pip_cfg,extra-index-url),--extra-index-url $(u)) \
	$(foreach c,$(call pip_cfg,constraint),--constraint $(c))

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	if $(BIN)/python -m pip install -qq uv; then \
	  $(BIN)/uv pip install -q --python $(BIN)/python --index-strategy unsafe-best-match \
	    $(UV_SOURCES) -e ".[$(EXTRA)]"; \
	else \
	  $(BIN)/python -m pip install -q -e ".[$(EXTRA)]"; \
	fi
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The playground's browser test drives Debian's chromium through chromium-driver: install them when
# missing (root + apt-get); elsewhere say so, and that test skips naming what is missing.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the playground test"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "note: chromium/chromium-driver missing and apt-get needs root here: the browser test will skip"; \
	fi

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q -ra --durations=15

# train -> reference stats -> export + gate -> serve on port 3000 (each step reuses what exists)
demo: $(STAMP)
	$(BIN)/python -m export.demo --runs $(DEMO_DIR) --port $(PORT)

# The bento and its image ganforge-gan:$(FLAVOR) (cpu or gpu) with Docker or podman; as root it
# installs podman, runc and debootstrap when no engine is found (deploy/container/build.sh).
container: $(STAMP)
	PY=$(BIN)/python bash deploy/container/build.sh $(FLAVOR)

# The GPU image and its CUDA-library test (kept out of `make test`: its CUDA wheels are 2.6 GB).
container-check: $(STAMP)
	PY=$(BIN)/python bash deploy/container/build.sh gpu
	$(BIN)/python -m pytest -q -ra --gpu-image tests/deploy/test_container_gpu.py

bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/fid_speed.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/quality.py

clean:
	rm -rf runs bundles refs out bench/results .pytest_cache .ruff_cache
