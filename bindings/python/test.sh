#!/usr/bin/env bash
# The Python package's tests (pytest), on the native module that the workspace build made:
# `cargo test --workspace --all-features --no-run` (scripts/test.sh) builds bindings/python as
# a cdylib with the same profile, features and target directory as everything else, so the
# core is not compiled once more. pytest comes from PyPI into a venv in the target directory.
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-../../target}"
module="$target/debug/lib_dmoerm.so"
if [ ! -f "$module" ]; then
    echo "no $module: build the workspace first (cargo test --workspace --all-features --no-run)" >&2
    exit 1
fi
# the package as the wheel lays it out: python/dmoerm/* and the native module beside them
stage="$target/python-stage"
rm -rf "$stage"
mkdir -p "$stage/dmoerm"
cp python/dmoerm/* "$stage/dmoerm/"
cp "$module" "$stage/dmoerm/_dmoerm.abi3.so"
venv="$target/python-venv"
if [ ! -x "$venv/bin/pytest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pytest==9.0.3
fi
PYTHONPATH="$stage" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
