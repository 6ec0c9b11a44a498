#!/usr/bin/env bash
# Installs pie_lab and everything its tests and notebooks need into the current Python.
# torch==2.13.0 first: on these machines it is a CPU wheel on disk; a bare "torch" may pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check "torch==2.13.0" \
  || python -m pip install -q --disable-pip-version-check "torch>=2.4"
python -m pip install -q --disable-pip-version-check -e ".[lab,test,browser]"
