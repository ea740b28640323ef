#!/usr/bin/env bash
# Load test of `dmoerm serve` on 127.0.0.1 only: throughput and p50/p99 at 1, 8 and 64 clients
# (oha) against `dmoerm score --input` on the same rows, a 2x overload (every request a correct
# score or a 429), and kill -9 under load then a restart. Prints the tables of BENCHMARKS.md.
#
#     benches/serve/run.sh [--model PATH] [--requests N] [--overload-requests N]
#
# Builds the release CLI with the `serve` feature and installs oha (crates.io) under
# target/tools. Takes ~3 min here (2 cores) after the builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p dmoerm-cli --features serve
if [ ! -x "$target/tools/oha/bin/oha" ]; then
    cargo install oha --version 1.16.0 --locked --no-default-features --root "$target/tools/oha"
fi
exec python3 benches/serve/load.py --dmoerm "$target/release/dmoerm" --oha "$target/tools/oha/bin/oha" "$@"
