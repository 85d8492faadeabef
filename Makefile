# Two commands on a fresh Debian machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SENDWORX_HOME ?= $(CURDIR)/var

.PHONY: run test lint typecheck unit bench clean system-packages coverage screenshots sendmail \
	fuzz deb

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	@# Debian's own python3 needs python3-venv for this; install it when venv is missing.
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
		$(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# smtp-sink and smtp-source (Postfix) are the real SMTP peers of the tests and benchmarks;
# PHP's SoapClient (php-cli, php-soap) and xmlrpc extension (php-xmlrpc) are the real clients
# most integrations use; Debian's chromium is the browser Playwright drives in the page tests
# (no browser download); Debian's redis-server is the shared store of the sending policy's
# cluster tests; mmdebstrap and systemd-nspawn boot the Debian 12 the package is installed on
# in the install test (debhelper and lintian build and check that package).
system-packages:
	@export PATH="$$PATH:/usr/sbin"; \
	if ! command -v smtp-sink >/dev/null || ! command -v smtp-source >/dev/null; then \
		echo "installing Debian's postfix package for smtp-sink/smtp-source"; \
		echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postfix >/dev/null; \
	fi; \
	if ! php -m 2>/dev/null | grep -qx soap || ! php -m | grep -qx xmlrpc; then \
		echo "installing Debian's php-cli, php-soap and php-xmlrpc for the API tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq php-cli php-soap php-xmlrpc >/dev/null; \
	fi; \
	if ! command -v chromium >/dev/null; then \
		echo "installing Debian's chromium for the page tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi; \
	if ! command -v redis-server >/dev/null; then \
		echo "installing Debian's redis-server for the shared-policy tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; \
	fi; \
	if ! command -v mmdebstrap >/dev/null || ! command -v systemd-nspawn >/dev/null || \
		! command -v dh >/dev/null || ! command -v lintian >/dev/null; then \
		echo "installing mmdebstrap, systemd-container, debhelper and lintian for the install test"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mmdebstrap \
			systemd-container debhelper dpkg-dev lintian >/dev/null; \
	fi; \
	if ! command -v opendkim >/dev/null; then \
		echo "installing Debian's opendkim: the DKIM tests' second, independent verifier"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq opendkim >/dev/null; \
	fi; \
	command -v smtp-sink >/dev/null && php -m | grep -qx soap && php -m | grep -qx xmlrpc && \
		command -v chromium >/dev/null && command -v redis-server >/dev/null && \
		command -v mmdebstrap >/dev/null && command -v systemd-nspawn >/dev/null && \
		command -v opendkim >/dev/null

# The compiled sendmail client (sendmail-client/): what every local account runs per message.
# Built hardened, as Debian builds packages; `make fuzz` runs its reply parser under libFuzzer.
BUILD_DIR ?= build
CLIENT_CFLAGS := -O2 -g -Wall -Wextra -Werror -std=c11 -D_FORTIFY_SOURCE=2 \
	-fstack-protector-strong -fstack-clash-protection -fPIE
CLIENT_LDFLAGS := -pie -Wl,-z,relro,-z,now

$(BUILD_DIR)/sendmail: sendmail-client/sendmail.c sendmail-client/reply.h
	@mkdir -p $(BUILD_DIR)
	$(CC) $(CLIENT_CFLAGS) $(CPPFLAGS) $(CFLAGS) -o $@ sendmail-client/sendmail.c \
		$(CLIENT_LDFLAGS) $(LDFLAGS)

sendmail: $(BUILD_DIR)/sendmail

fuzz:
	@command -v clang >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang >/dev/null; }
	@mkdir -p $(BUILD_DIR)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -o $(BUILD_DIR)/fuzz_reply \
		sendmail-client/fuzz_reply.c
	$(BUILD_DIR)/fuzz_reply -max_total_time=$${FUZZ_SECONDS:-60} -max_len=4096

# The Debian 12 package (debian/): dist/sendworx_<version>_<arch>.deb, checked by lintian.
# Its upstream version is sendworx.__version__; its Python dependencies come from PyPI through
# this checkout's own pip, into a private virtual environment on Debian's python3.
DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
deb: $(STAMP)
	@missing=""; for tool in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian; do \
		command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@upstream=$$($(BIN)/python -c 'import sendworx; print(sendworx.__version__)'); \
	case "$$(dpkg-parsechangelog -S Version)" in "$$upstream"-*) ;; \
	*) echo "debian/changelog does not package sendworx $$upstream" >&2; exit 1;; esac
	PIP=$(CURDIR)/$(BIN)/pip dpkg-buildpackage -us -uc -b --no-sign >/dev/null
	@mkdir -p dist
	mv ../sendworx_$(DEB_VERSION)_*.deb dist/
	rm -f ../sendworx_$(DEB_VERSION)_*.buildinfo ../sendworx_$(DEB_VERSION)_*.changes \
		../sendworx-dbgsym_$(DEB_VERSION)_*.deb
	lintian --fail-on error --suppress-tags-from-file debian/lintian-suppressed dist/sendworx_$(DEB_VERSION)_*.deb

run: $(STAMP) sendmail
	$(BIN)/sendworx init
	$(BIN)/sendworx run

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-packages lint typecheck sendmail
	PATH="$$PATH:/usr/sbin" SENDWORX_SENDMAIL_CLIENT=$(CURDIR)/$(BUILD_DIR)/sendmail \
		$(BIN)/pytest -q --cov --cov-report=term

# Coverage of every process the tests start, lines and branches (slower than `make test`,
# which measures only the test process and holds that figure as its floor). The floor here:
# 82% measured on 2026-12-04; a process a test kills with SIGKILL keeps nothing, so the
# figure moves by a point between runs.
coverage: $(STAMP) system-packages
	PATH="$$PATH:/usr/sbin" $(BIN)/pytest -q --cov --cov-config=tools/coverage-processes.toml \
		--cov-report=term --cov-report=html --cov-fail-under=81

bench: $(STAMP) system-packages
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/relay --postfix
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/injection
	$(SUDO) PATH="$$PATH:/usr/sbin" $(BIN)/python bench/sendmail --postfix
	$(BIN)/python bench/pacing
	$(BIN)/python bench/queue_memory
	$(BIN)/python bench/queue_api
	$(BIN)/python bench/pages
	$(BIN)/python bench/api
	$(BIN)/python bench/cascade
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/webhooks

# The docs' screenshots (docs/web.md) are the page tests' own (test-artifacts/pages/).
screenshots: $(STAMP) system-packages
	PATH="$$PATH:/usr/sbin" $(BIN)/pytest -q tests/test_pages.py
	mkdir -p docs/images
	cp test-artifacts/pages/*.png docs/images/

clean:
	rm -rf $(VENV) var $(BUILD_DIR) dist .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* htmlcov \
		test-artifacts test-results
