#!/usr/bin/env bash
# `make test`: installs and starts the services, updates .venv, runs ruff and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/bootstrap.sh test
.venv/bin/ruff check .
export CLAWORC_REQUIRE_SERVICES="${CLAWORC_REQUIRE_SERVICES:-${CI:-}}"
exec .venv/bin/pytest "$@"
