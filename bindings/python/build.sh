#!/usr/bin/env bash
# Builds the `dmoerm` wheel (abi3: one wheel for CPython >= 3.9 on this platform) with maturin,
# release profile, into target/wheels:
#
#     bindings/python/build.sh && pip install target/wheels/dmoerm-*.whl
#
# maturin comes from PyPI into a venv in the target directory. The first build compiles the
# core in release (many minutes on 2 cores); later ones reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/maturin-venv"
if [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9,<2"
fi
"$venv/bin/maturin" build --release --locked --manifest-path bindings/python/Cargo.toml --out "$target/wheels" "$@"
