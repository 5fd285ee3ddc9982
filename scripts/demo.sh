#!/usr/bin/env bash
# Set up .venv if needed, then run the main job (scripts/demo.py; --check stops after it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
