#!/usr/bin/env bash
# Creates or updates .venv with Claworc and its pinned dependencies (constraints.txt).
# PYTHON and VENV choose another interpreter and directory (scripts/test.sh runs the unit tests
# on every Python 3.11-3.13 the machine has, each in .venv-<version>).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] && { apt-get update -qq; apt-get install -y -qq python3-venv >/dev/null; }
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
  "$venv/bin/python" -m pip check
  touch "$stamp"
fi
