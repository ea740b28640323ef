#!/usr/bin/env bash
# Makes the Python venv of the PyTorch reference stack (fixtures, benches/compare) and checks
# that torch imports and computes on the CPU:
#   ./scripts/reference-venv.sh [VENV] [REQUIREMENTS]
# VENV defaults to .venv, REQUIREMENTS to tests/fixtures/requirements.txt (every package
# pinned; it says why torch comes with its CUDA dependencies). Idempotent; 5.6 GB installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
requirements="${2:-tests/fixtures/requirements.txt}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" - <<'PY'
import peft
import torch
import transformers

x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
assert torch.equal(x @ x.T, torch.tensor([[5.0, 14.0], [14.0, 50.0]])), "torch computed a wrong product"
print(f"torch {torch.__version__} imports and computes on the CPU; "
      f"transformers {transformers.__version__}, peft {peft.__version__}")
PY
