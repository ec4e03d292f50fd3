#!/usr/bin/env bash
# `make test`: installs and starts the services, updates .venv, runs ruff and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/bootstrap.sh test
.venv/bin/ruff check .
# The stand-in agent that really serves noVNC (desktop proxy tests): built once per machine.
bash scripts/build-novnc-agent-image.sh >/dev/null
export CLAWORC_REQUIRE_SERVICES="${CLAWORC_REQUIRE_SERVICES:-${CI:-}}"
# With arguments: exactly that pytest run. Without: the suite, then (last, slowest) the deploy
# stage that builds and runs the dashboard image. pytest's 5 ("no tests collected") is no failure.
[ $# -gt 0 ] && exec .venv/bin/pytest "$@"
stage() { local rc=0; .venv/bin/pytest "$@" || rc=$?; [ "$rc" = 5 ] && rc=0; return "$rc"; }
stage -m "not deploy"
# The unit tests again on every other supported Python (3.11-3.13) this machine has.
for python in $(bash scripts/other-pythons.sh); do
  version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo "unit tests on Python $version ($python)"
  PYTHON="$python" VENV=".venv-$version" bash scripts/bootstrap.sh test
  rc=0
  ".venv-$version/bin/pytest" -q -p no:cacheprovider \
    -m "not docker and not redis and not postgres and not browser and not worker and not slow \
and not deploy" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || exit "$rc"
done
stage -m deploy
