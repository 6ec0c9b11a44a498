#!/usr/bin/env bash
# Sets up (idempotent) and opens the workbench: JupyterLab on notebooks/01_quickstart.ipynb.
# Extra arguments go to `pie-lab lab` (e.g. --voila for app mode, --port 8890, --no-browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python -m pie_lab.cli lab "$@"
