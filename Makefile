# ganforge — the two front doors are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRA ?= cpu,dev
DEMO_DIR ?= runs/demo
PORT ?= 3000

export BENTOML_DO_NOT_TRACK := 1
export TQDM_MININTERVAL := 5

.PHONY: venv browser test lint format demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRA)]"
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

bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/fid_speed.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/quality.py

clean:
	rm -rf runs bundles refs out bench/results .pytest_cache .ruff_cache
