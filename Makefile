# virtplane — see README.md. Every target does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := build
GUEST := $(BUILD)/guest
BUF := $(BUILD)/tools/node_modules/.bin/buf
NODE_CLIENT := tests/node/node_modules/.package-lock.json
WEB_DEPS := web/node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
PROTO_SRC := $(wildcard protos/virtplane/v1/*.proto)
PYTEST_ARGS ?=
GUESTD_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: setup host postgres proto lint test demo bench guest-image clean web

setup: host postgres $(VENV)/.installed $(NODE_CLIENT) $(CHROMIUM) web

# System packages and daemons (libvirtd, virtlogd); root only.
host:
	@bash hostd/host-setup.sh

# PostgreSQL from Debian, its cluster started, a CREATEDB role for this user; root only.
postgres:
	@bash db/pg-setup.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

$(BUF):
	@command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q npm)
	mkdir -p $(BUILD)/tools
	cd $(BUILD)/tools && npm install --no-audit --no-fund --silent @bufbuild/buf@1

# The Node client's packages (tests/node): Node from Debian, @grpc/grpc-js and
# @grpc/proto-loader from npm, as its package-lock.json pins them.
$(NODE_CLIENT): tests/node/package.json tests/node/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
		(apt-get update -q && apt-get install -y -q nodejs npm)
	cd tests/node && npm ci --no-audit --no-fund --silent
	@touch $@

# The web page (web/): its npm packages as web/package-lock.json pins them;
# its client generated from protos/ by buf (protobuf-es), type-checked, and
# bundled by esbuild into web/dist, which the controller serves (--web-listen).
$(WEB_DEPS): web/package.json web/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
		(apt-get update -q && apt-get install -y -q nodejs npm)
	cd web && npm ci --no-audit --no-fund --silent
	@touch $@

web: $(WEB_DEPS)
	cd web && npx buf generate && npx tsc --noEmit && node build.mjs

# Debian's Chromium, which tests/web drive through Playwright (no browser download).
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

proto: $(VENV)/.installed
	$(BIN)/python protos/generate.py

lint: $(VENV)/.installed $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BUF) lint
	$(BIN)/python tools/sizes.py

guest-image: $(VENV)/.installed
	@bash tools/guest-image/build.sh $(GUEST)

test: setup guest-image debian-image
	VIRTPLANE_REQUIRE_REAL=1 VIRTPLANE_DEBIAN_IMAGE=$(abspath $(DEBIAN_IMAGE_DIR)) $(BIN)/pytest $(PYTEST_ARGS)

demo: setup guest-image
	@bash tests/demo.sh

bench: setup guest-image debian-image
	VIRTPLANE_DEBIAN_IMAGE=$(abspath $(DEBIAN_IMAGE_DIR)) $(BIN)/python -m tests.bench

clean:
	rm -rf $(BUILD) .mypy_cache .pytest_cache .ruff_cache

# The guest agent alone, for real VM images: a pure-Python wheel and a Debian
# package in build/guestd/ (see guestd/README.md).
.PHONY: guestd-wheel guestd-deb
guestd-wheel: $(VENV)/.installed
	$(BIN)/python guestd/packaging/build.py wheel --out $(BUILD)/guestd

guestd-deb: $(VENV)/.installed
	$(BIN)/python guestd/packaging/build.py deb --out $(BUILD)/guestd

# A Debian 12 guest with systemd and the agent installed from that .deb
# (tools/debian-image/): raw disk, kernel and initrd in DEBIAN_IMAGE_DIR, rebuilt
# only when the .deb, the script or its package list change. Root only (mmdebstrap).
DEBIAN_IMAGE_DIR ?= $(BUILD)/debian
.PHONY: debian-image
debian-image: guestd-deb
	@bash tools/debian-image/build.sh $(BUILD)/guestd/virtplane-guestd_$(GUESTD_VERSION)_all.deb $(DEBIAN_IMAGE_DIR)
