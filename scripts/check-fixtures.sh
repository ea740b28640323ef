#!/usr/bin/env bash
# Checks the Python side from scratch: makes the pinned reference venv (scripts/reference-venv.sh),
# regenerates every parity fixture with tests/fixtures/generate.py, and compares what it wrote
# with the committed files: every file byte-identical, except that float values (tensors,
# numbers in JSON) may differ by float rounding between CPUs (the router bias is fitted to the
# model's own outputs). It fails on any other difference or a float one above 1e-5 (the Rust
# tests' tolerance is 1e-4), then puts the committed files back. Not part of CI (no torch there).
#   ./scripts/check-fixtures.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
./scripts/reference-venv.sh "$venv"
trap 'git checkout -q -- tests/fixtures && git clean -qfd -- tests/fixtures' EXIT
"$venv/bin/python" tests/fixtures/generate.py >/dev/null 2>&1
test -z "$(git status --porcelain --untracked-files=all -- tests/fixtures | grep -v '^ M ')" \
    || { git status --porcelain -- tests/fixtures; echo "files were added or removed"; exit 1; }
git diff --name-only -- tests/fixtures | "$venv/bin/python" -c '
import json, subprocess, sys
from safetensors.numpy import load

TOL = 1e-5
worst = 0.0

def committed(path):
    return subprocess.run(["git", "show", f"HEAD:{path}"], check=True, capture_output=True).stdout

def close(a, b, where):
    global worst
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(close(a[k], b[k], f"{where}/{k}") for k in a)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(close(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        worst = max(worst, abs(a - b))
        return abs(a - b) <= TOL or sys.exit(f"{where}: {a} vs committed {b}")
    return a == b or sys.exit(f"{where}: {a!r} vs committed {b!r}")

for path in sys.stdin.read().split():
    new = open(path, "rb").read()
    if path.endswith(".json"):
        close(json.loads(new), json.loads(committed(path)), path)
    elif path.endswith(".safetensors"):
        a, b = load(new), load(committed(path))
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape or a[k].dtype != b[k].dtype for k in a):
            sys.exit(f"{path}: tensor names, shapes or dtypes changed")
        for k in a:
            close([float(v) for v in a[k].ravel()], [float(v) for v in b[k].ravel()], f"{path}::{k}")
    else:
        sys.exit(f"{path} changed")
print(f"fixtures regenerate as committed (largest float difference {worst:.2g}, tolerance {TOL})")
'
