# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv when it is missing and
# installs the project into it with the pinned versions in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# panva's oidc-provider for the OIDC peer tests, installed from its lock file (tests/oidc_peer.py says why).
PEER := tests/oidc_peer
# AWS's aws-jwt-verify, which checks the gateway's x-amzn-oidc-data as an app behind an ALB would (tests/alb_verify.py).
ALB_VERIFY := tests/alb_verify

.PHONY: demo test soak image-test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Without npm the peer tests skip locally (and fail under CI=true), so a machine without Node.js can still run the rest.
$(PEER)/node_modules: $(PEER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(PEER) --no-audit --no-fund && touch $@; \
	else \
	  echo "no npm on this machine: the OIDC peer tests will not run (see tests/oidc_peer.py)"; \
	fi

$(ALB_VERIFY)/node_modules: $(ALB_VERIFY)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(ALB_VERIFY) --no-audit --no-fund && touch $@; \
	else \
	  echo "no npm on this machine: the aws-jwt-verify tests will not run (see tests/alb_verify.py)"; \
	fi

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/cfn-lint deploy/cloudformation/cognito.yaml

test: lint $(PEER)/node_modules $(ALB_VERIFY)/node_modules
	$(BIN)/pytest

# The long memory soak: 10 minutes of steady load on two workers with their RSS sampled, and 1,000 keep-alive
# connections held (make test runs the same tests for 20 s). `make soak SOAK_SECONDS=120` (or the environment's) changes it.
SOAK_SECONDS ?= 600
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -s tests/test_server_soak.py

# Builds the Dockerfile on a local Debian base (cached), runs the image, `docker compose up` and a browser sign-in.
# Starts dockerd when none answers (and stops it after). Needs docker.io, mmdebstrap, docker-compose, chromium.
image-test: $(STAMP)
	$(BIN)/pytest -m image tests/image

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Side by side: nginx direct, a minimal aiohttp proxy, Apache + mod_auth_openidc and the gateway (cookie and Redis
# stores), interleaved rounds (bench/README.md). Needs Debian's wrk, nginx, redis-server, apache2 and
# libapache2-mod-auth-openidc. Options go through BENCH_ARGS, e.g. make bench BENCH_ARGS="--baseline ../prev".
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(PEER)/node_modules $(ALB_VERIFY)/node_modules
