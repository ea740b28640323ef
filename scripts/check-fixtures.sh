#!/usr/bin/env bash
# Checks the Python side from scratch: makes the pinned reference venv (scripts/reference-venv.sh),
# regenerates every parity fixture with tests/fixtures/generate.py, and fails if any committed
# fixture file changed (the generator is deterministic). Not part of CI (no torch there).
#   ./scripts/check-fixtures.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
./scripts/reference-venv.sh "$venv"
"$venv/bin/python" tests/fixtures/generate.py
git status --porcelain -- tests/fixtures
git diff --exit-code --stat -- tests/fixtures
test -z "$(git status --porcelain --untracked-files=all -- tests/fixtures)"
echo "fixtures regenerate byte-identical"
