#!/usr/bin/env bash
# The Python package's tests (pytest), on the native module that the workspace build made:
# `cargo test --workspace --all-features --no-run` (scripts/test.sh) builds bindings/python as
# a cdylib with the same profile, features and target directory as everything else, so the
# core is not compiled once more. pytest and Ray come from PyPI (tests/requirements.txt) into a
# venv in the target directory.
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
requirements=tests/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi
export PYTHONPATH="$stage"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests --ignore=tests/test_ray.py
# Ray in a network namespace of its own whose only interface is loopback: its two local nodes,
# its workers and the driver can reach 127.0.0.1 and nothing else
unshare -rn sh -c "ip link set lo up && exec \"$venv/bin/python\" -m pytest -q -p no:cacheprovider tests/test_ray.py"
