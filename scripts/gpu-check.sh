#!/usr/bin/env bash
# The wgpu checks for a machine with a real GPU that cannot build (no package registry, no
# toolchain): the parity tests (every backbone family against the PyTorch fixtures, on flex
# and on wgpu) and the criterion scoring benches (flex and wgpu), from binaries built
# beforehand on a machine that can build.
#
#   scripts/gpu-check.sh build [DIR]       # where cargo works: DIR defaults to target/gpu-check
#   scripts/gpu-check.sh run [DIR] [OUT]   # on the GPU machine, in a copy of this repository
#
# `build` compiles crates/dmoerm's `parity` test and `scoring` bench in the bench profile
# (optimised, the same code and features as `cargo bench`) and packs the two executables into
# DIR/bin.tar.xz, stripped (14 MB: small enough to carry with the repository). Extra cargo
# features go in GPU_CHECK_FEATURES (e.g. "burn/fusion,burn/autotune"); the build uses
# CARGO_TARGET_DIR.
#
# `run` needs the repository's tests/fixtures and models/default (the binaries find them
# through DMOERM_REPO_ROOT, set here to this checkout) and a Vulkan, Metal or DX12 driver. It
# runs the parity tests (they fail without a wgpu adapter), then the benches, and fails when
# the wgpu groups did not run (no hardware adapter). GPU_CHECK_BENCHES is passed to criterion
# (e.g. "wgpu/", a filter that leaves the flex groups out). On an H200 the parity tests took
# 11 s and the wgpu groups 103 s. The output goes to OUT (default DIR/out): parity.log,
# bench.log and summary.txt (one line per benchmark: criterion's estimate).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mode="${1:-}"
dir="${2:-$root/target/gpu-check}"

case "$mode" in
build)
    command -v xz >/dev/null || { echo "gpu-check: xz is needed to pack the binaries" >&2; exit 1; }
    mkdir -p "$dir"
    # the parity tests check training's autodiff device too (the workspace build has it
    # through dmoerm-train)
    features="burn/autodiff${GPU_CHECK_FEATURES:+,$GPU_CHECK_FEATURES}"
    # the executables cargo built, from its JSON messages (one per line)
    cargo bench --locked -p dmoerm --no-run --test parity --bench scoring --features "$features" \
        --message-format=json-render-diagnostics >"$dir/cargo.json"
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' EXIT
    python3 - "$dir/cargo.json" "$stage" <<'EOF'
import json, shutil, sys
found = {}
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
        name = msg["target"]["name"]
        if name in ("parity", "scoring"):
            found[name] = msg["executable"]
missing = {"parity", "scoring"} - found.keys()
if missing:
    sys.exit(f"gpu-check: cargo built no {', '.join(sorted(missing))}")
for name, path in found.items():
    shutil.copy(path, f"{sys.argv[2]}/{name}")
EOF
    strip "$stage/parity" "$stage/scoring"
    # xz -9: a 64 MiB window, so the two executables share what they have in common
    XZ_OPT="${XZ_OPT:--9}" tar -C "$stage" -cJf "$dir/bin.tar.xz" parity scoring
    rm "$dir/cargo.json"
    echo "gpu-check: $dir/bin.tar.xz ($(du -h "$dir/bin.tar.xz" | cut -f1))"
    ;;
run)
    out="${3:-$dir/out}"
    mkdir -p "$out"
    # DIR holds bin.tar.xz as `build` wrote it (unpacked into a scratch directory), or the two
    # executables unpacked
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    bin="$dir"
    if [ -f "$dir/bin.tar.xz" ]; then
        tar -C "$scratch" -xJf "$dir/bin.tar.xz"
        bin="$scratch"
    fi
    export DMOERM_REPO_ROOT="$root"
    # the parity tests, flex and wgpu: a missing adapter fails them (no DMOERM_SKIP_WGPU here)
    echo "== parity (flex and wgpu)" | tee "$out/parity.log"
    start=$SECONDS
    status=0
    timeout 240 "$bin/parity" 2>&1 | tee -a "$out/parity.log" || status=$?
    echo "parity: exit $status in $((SECONDS - start)) s" | tee -a "$out/parity.log"
    [ "$status" -eq 0 ] || exit "$status"
    # the benches: the wgpu groups only on a hardware adapter (the bench says which it found)
    echo "== scoring benches" | tee "$out/bench.log"
    start=$SECONDS
    # GPU_CHECK_BENCHES unquoted: it may hold several criterion arguments
    # shellcheck disable=SC2086
    CRITERION_HOME="$scratch/criterion" timeout 420 "$bin/scoring" --bench --noplot ${GPU_CHECK_BENCHES:-} 2>&1 | tee -a "$out/bench.log"
    echo "benches: $((SECONDS - start)) s" | tee -a "$out/bench.log"
    grep -q "^wgpu benches on" "$out/bench.log" || { echo "gpu-check: the wgpu benches did not run" >&2; exit 1; }
    # "group/bench/param  time: [low estimate high]" -> one line each
    awk '/^[a-z]+\/[a-z_0-9]+\// { name = $1 } /time:/ && name { print name, $(NF-3), $(NF-2); name = "" }' \
        "$out/bench.log" | tee "$out/summary.txt"
    ;;
*)
    echo "usage: scripts/gpu-check.sh build [DIR] | run [DIR] [OUT]" >&2
    exit 2
    ;;
esac
