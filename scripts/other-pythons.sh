#!/usr/bin/env bash
# Prints one path per supported Python (3.11-3.13, as pyproject.toml's requires-python says)
# found on this machine, other than the one .venv runs: on PATH, or installed by pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."
own="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
for version in 3.11 3.12 3.13; do
  [ "$version" = "$own" ] && continue
  for candidate in "$(command -v "python$version" || true)" \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] \
        && "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "$candidate"
      break
    fi
  done
done
