#!/usr/bin/env bash
# Set up .venv and the third-party clients if needed, then lint, type-check and run the
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-clients.sh
.venv/bin/ruff check src tests scripts bench fuzz examples
.venv/bin/ruff format --check src tests scripts bench fuzz examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
