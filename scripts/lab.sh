#!/usr/bin/env bash
# Sets up (idempotent) and opens the workbench: JupyterLab on notebooks/01_quickstart.ipynb.
# As root it passes --allow-root to JupyterLab (and says so); Jupyter's news prompt stays off.
# Extra arguments go to `pie-lab lab` (e.g. --voila for app mode, --port 8890, --no-browser).
# PIE_LAB_SKIP_SETUP=1 skips the setup step (the tests use it: CI has just run it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${PIE_LAB_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
exec python -m pie_lab.cli lab "$@"
