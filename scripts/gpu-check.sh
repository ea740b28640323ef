#!/usr/bin/env bash
# The wgpu checks for a machine with a real GPU that cannot build (no package registry, no
# toolchain): the parity tests (every backbone family against the PyTorch fixtures, on flex
# and on wgpu), the criterion scoring benches (flex and wgpu), and real reward models' sizes
# (issue 37), from binaries built beforehand on a machine that can build.
#
#   scripts/gpu-check.sh build [DIR]       # where cargo works: DIR defaults to target/gpu-check
#   scripts/gpu-check.sh run [DIR] [OUT]   # on the GPU machine, in a copy of this repository
#   scripts/gpu-check.sh dry-run [BIN] [OUT]  # the sizes step, tiny, on any adapter (lavapipe)
#
# `build` compiles crates/dmoerm's `parity` test and `scoring` bench, and its `shaped_model`
# and `gpu_profile` examples, in the bench profile (optimised, the same code and features as
# `cargo bench`) with the `vulkan` feature (SPIR-V: the f16 products on tensor cores where the
# device has cooperative matrices; `DMOERM_GPU_CMMA=0` runs them without) and packs the four
# executables into DIR/bin.tar.xz, stripped (small enough to carry with the repository). Extra
# cargo features go in GPU_CHECK_FEATURES (e.g. "burn/fusion,burn/autotune"); the build uses
# CARGO_TARGET_DIR.
#
# `run` needs the repository's tests/fixtures and models/default (the binaries find them
# through DMOERM_REPO_ROOT, set here to this checkout) and a Vulkan, Metal or DX12 driver. It
# runs the parity tests (they fail without a wgpu adapter), then the sizes step (below), then
# the benches, and fails when the wgpu groups did not run (no hardware adapter). Each step runs
# even where one before it failed (a lent GPU's minutes are few), and each size's run is cut at
# GPU_CHECK_TIMEOUT seconds (default 180). GPU_CHECK_BENCHES is passed to criterion (e.g.
# "wgpu/", a filter that leaves the flex groups out). On an H200 the parity tests took
# 11 s and the wgpu groups 103 s. The sizes step: `shaped_model` writes the Qwen3-0.6B
# and Llama-3.2-1B shapes (f16, pseudo-random weights, into a scratch directory: 1.2 and
# 2.5 GB), and `gpu_profile time` scores Qwen3-0.6B as stored (f16) and quantised to q4 as it
# loads, at 1k and 4k tokens, and Llama-3.2-1B q4 at 1k (GPU_CHECK_RUNS scores each, default
# 5), printing time per score, GFLOP/s, dispatches per score and per layer, read-backs,
# compilations and GPU memory; Qwen3-0.6B f16 again with the kernels that need no workgroup
# memory (`DMOERM_GPU_TILED=0`, a software adapter's; a GPU runs the tiled ones), whose reward
# must match within 1e-4, and at 1k without cooperative matrices (`nocmma`), the same;
# `gpu_profile products` times one Qwen3-0.6B layer's products at 1,024 rows (f32, f16, int8 and
# q4 weights through our kernels, f32 through burn's matmul: GFLOP/s, q4 over f16), with the
# adapter's kernels, the untiled ones and without cooperative matrices, and fails where the f32
# kernel is over 1e-5 (over sqrt(k)) from burn's product; `gpu_profile stream` scores 200
# conversations of varied lengths on the default model and counts compilations. The step fails
# where a score dispatches more than 12 kernels per layer or reads back more than once (these
# are plain reward models), or a kernel compiles after a length's first score. Where PyTorch sees CUDA, it scores each f16
# case's conversation too (`torch_peer` below), and summary.txt gets the ratio of the times.
# GPU_CHECK_SIZES=0 leaves the step out.
# The output goes to OUT (default DIR/out): parity.log, bench.log, sizes.log and summary.txt
# (one line per benchmark: criterion's estimate; one `result` line per size).
#
# `dry-run` is that sizes step with a tiny Qwen3 (8 layers, hidden 64) instead of the real
# shapes (and the tiled kernels against the adapter's choice), 2 scores each, the products at
# 64 rows and 10 conversations of the stream, on whatever adapter wgpu finds, with the executables in BIN
# (default $CARGO_TARGET_DIR/debug/examples, as the tests' build leaves them): scripts/test.sh
# runs it on lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mode="${1:-}"
dir="${2:-$root/target/gpu-check}"

# `profile LABEL KERNELS ARGS...` (inside `sizes`): `gpu_profile ARGS...` with the kernels KERNELS
# names (tiled, untiled, nocmma: f16 products without cooperative matrices, or "" for the
# adapter's choice), cut at GPU_CHECK_TIMEOUT, its output
# appended to OUT/sizes.log. Its `result` line goes into `line` and, after LABEL, into
# OUT/summary.txt; a run that fails is reported as LABEL failed (status 1).
profile() {
    local label="$1" kernels="$2" tiled="" cmma=""
    shift 2
    case "$kernels" in tiled) tiled=1 ;; untiled) tiled=0 ;; nocmma) cmma=0 ;; esac
    if ! DMOERM_GPU_TILED="$tiled" DMOERM_GPU_CMMA="$cmma" timeout "${GPU_CHECK_TIMEOUT:-180}" "$bin/gpu_profile" "$@" 2>&1 |
        tee -a "$out/sizes.log"; then
        echo "$label: failed" | tee -a "$out/sizes.log" "$out/summary.txt"
        return 1
    fi
    line="$(grep '^result ' "$out/sizes.log" | tail -1)"
    echo "$label $line" >>"$out/summary.txt"
}

# The sizes step: `sizes BIN OUT tiny|real` (see above). Appends to OUT/sizes.log and
# OUT/summary.txt; fails on a target missed.
sizes() {
    local bin="$1" out="$2" kind="$3" models cases stream_count stream_words products
    models="$(mktemp -d)"
    export DMOERM_REPO_ROOT="$root"
    if [ "$kind" = tiny ]; then
        "$bin/shaped_model" tiny-qwen3 "$models/tiny-qwen3" f16 | tee -a "$out/sizes.log"
        cases=("tiny-qwen3 1024 stored" "tiny-qwen3 1024 stored tiled" "tiny-qwen3 1024 q4")
        stream_count=10
        stream_words=120
        products=(64 2 tiled)
    else
        for shape in qwen3-0.6b llama-3.2-1b; do
            "$bin/shaped_model" "$shape" "$models/$shape" f16 | tee -a "$out/sizes.log"
        done
        cases=("qwen3-0.6b 1024 stored" "qwen3-0.6b 1024 stored untiled" "qwen3-0.6b 1024 stored nocmma"
            "qwen3-0.6b 4096 stored" "qwen3-0.6b 4096 stored untiled" "qwen3-0.6b 1024 q4" "qwen3-0.6b 4096 q4"
            "llama-3.2-1b 1024 q4")
        stream_count=200
        stream_words=400
        products=(1024 20 untiled nocmma)
    fi
    # PyTorch on the same GPU where it sees one (the real shapes only)
    local peer=0
    if [ "$kind" = real ] && python3 -c 'import sys, torch, transformers; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        peer=1
    fi
    local failed=0 line
    local -A rewards=()
    for case in "${cases[@]}"; do
        # a fourth word runs the kernels that stage their operands in workgroup memory (tiled),
        # those that do not (untiled) or the f16 products without cooperative matrices (nocmma)
        # instead of those chosen for the adapter
        read -r shape tokens quant kernels <<<"$case"
        echo "== $shape, $tokens tokens, $quant${kernels:+, $kernels kernels}" | tee -a "$out/sizes.log"
        local args=(time "$models/$shape" "$tokens" "${GPU_CHECK_RUNS:-5}")
        [ "$quant" = stored ] || args+=("$quant")
        local conversation="$models/$shape-$tokens.jsonl"
        if ! GPU_PROFILE_CONVERSATION="$conversation" profile "$shape $tokens $quant${kernels:+ $kernels}" "$kernels" \
            "${args[@]}"; then
            failed=1
            continue
        fi
        if [ "$peer" = 1 ] && [ "$quant" = stored ] && [ -z "$kernels" ]; then
            torch_peer "$shape" "$models/$shape" "$conversation" "$line"
        fi
        # the other kernels give the reward of the chosen ones
        local reward="${line##*reward=}" key="$shape $tokens $quant"
        if [ -z "$kernels" ]; then
            rewards[$key]="$reward"
        elif [ -n "${rewards[$key]:-}" ]; then
            awk -v a="$reward" -v b="${rewards[$key]}" -v what="$key" -v k="$kernels" 'BEGIN {
                d = a - b; if (d < 0) d = -d
                if (d > 1e-4) { print what ": the " k " kernels give " a ", the chosen ones " b; exit 1 } }' |
                tee -a "$out/sizes.log" || failed=1
        fi
        # targets: at most 12 dispatches per layer, nothing compiled after the first score
        awk -v what="$shape $tokens $quant" '{
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            if (v["per_layer"] > 12) { print what ": " v["per_layer"] " dispatches per layer (target <= 12)"; bad = 1 }
            if (v["read_backs"] > 1) { print what ": " v["read_backs"] " read-backs a score (a plain reward model: 1)"; bad = 1 }
            if (v["compiled_after"] != 0) { print what ": " v["compiled_after"] " compilations after the first score"; bad = 1 }
            exit bad }' <<<"$line" | tee -a "$out/sizes.log" || failed=1
    done
    # one layer's products alone (tokens, launches, then the other kernels), each kernel choice
    for kernels in "" "${products[@]:2}"; do
        echo "== products: the Qwen3-0.6B shape's layer, ${products[0]} rows${kernels:+, $kernels kernels}" |
            tee -a "$out/sizes.log"
        if profile "products${kernels:+ $kernels}" "$kernels" products "${products[0]}" "${products[1]}"; then
            # the f32 kernel agrees with burn's product
            awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                if (v["f32_error"] + 0 > 1e-5) { print "products: the f32 kernel is " v["f32_error"] " from burn'"'"'s"; exit 1 } }' \
                <<<"$line" | tee -a "$out/sizes.log" || failed=1
        else
            failed=1
        fi
    done
    echo "== stream: default model, $stream_count conversations" | tee -a "$out/sizes.log"
    if profile "default-model stream" "" stream "$root/models/default/model.dmoerm" "$stream_count" "$stream_words"; then
        awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            if (v["recompiled"] != 0) { print "stream: " v["recompiled"] " compilations in the second pass"; exit 1 }
            if (v["read_backs"] > 2) { print "stream: " v["read_backs"] " read-backs a score (DMoERM: 2)"; exit 1 } }' \
            <<<"$line" | tee -a "$out/sizes.log" || failed=1
    else
        failed=1
    fi
    rm -rf "$models"
    return "$failed"
}

# PyTorch's score of the conversation gpu_profile scored (benches/long/peer.py's cuda-f16:
# transformers, f16, SDPA): `torch_peer SHAPE MODEL CONVERSATION RESULT_LINE` appends its time
# and reward, and dmoerm's time over PyTorch's, to OUT/summary.txt. A peer that fails is
# reported, not a failure of the check.
torch_peer() {
    local json
    if ! json="$(timeout "${GPU_CHECK_TIMEOUT:-180}" python3 "$root/benches/long/peer.py" cuda-f16 "$2" "$3" 2>>"$out/sizes.log")"; then
        echo "$1 torch-cuda-f16: failed (sizes.log)" | tee -a "$out/sizes.log" "$out/summary.txt"
        return 0
    fi
    python3 - "$1" "$(tail -1 <<<"$json")" "$4" <<'EOF' | tee -a "$out/sizes.log" "$out/summary.txt"
import json, sys
shape, peer = sys.argv[1], json.loads(sys.argv[2])
ours = dict(kv.split("=", 1) for kv in sys.argv[3].split()[1:])
ms = peer["seconds"] * 1e3
print(f"{shape} torch-cuda-f16 tokens={peer['tokens']} best_ms={ms:.3f} gpu_peak_mib={peer['gpu_peak_mb']:.0f} "
      f"reward={peer['reward']} dmoerm_over_torch={float(ours['best_ms']) / ms:.2f} "
      f"reward_difference={abs(float(ours['reward']) - peer['reward']):.2e}")
EOF
}

case "$mode" in
build)
    command -v xz >/dev/null || { echo "gpu-check: xz is needed to pack the binaries" >&2; exit 1; }
    mkdir -p "$dir"
    # the parity tests check training's autodiff device too (the workspace build has it
    # through dmoerm-train)
    features="burn/autodiff,vulkan${GPU_CHECK_FEATURES:+,$GPU_CHECK_FEATURES}"
    # the executables cargo built, from its JSON messages (one per line)
    cargo bench --locked -p dmoerm --no-run --test parity --bench scoring --features "$features" \
        --message-format=json-render-diagnostics >"$dir/cargo.json"
    cargo build --locked -p dmoerm --profile bench --example shaped_model --example gpu_profile \
        --features "$features" --message-format=json-render-diagnostics >>"$dir/cargo.json"
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' EXIT
    names=(parity scoring shaped_model gpu_profile)
    paths="$(python3 scripts/executables.py "$dir/cargo.json" "${names[@]}")"
    mapfile -t paths <<<"$paths"
    for i in "${!names[@]}"; do
        cp "${paths[i]}" "$stage/${names[i]}"
    done
    strip "${names[@]/#/$stage/}"
    # a window as large as the four executables (77 MB each with the SPIR-V compiler, 0.23 GB
    # in all), so that they share what they have in common: 22 MB where xz -9's 64 MiB gave 35
    # (the repository and the carried files travel within 64 MiB); 3 GB of memory to pack,
    # 256 MiB to unpack
    XZ_OPT="${XZ_OPT:---lzma2=preset=9,dict=256MiB}" tar -C "$stage" -cJf "$dir/bin.tar.xz" "${names[@]}"
    rm "$dir/cargo.json"
    echo "gpu-check: $dir/bin.tar.xz ($(du -h "$dir/bin.tar.xz" | cut -f1))"
    ;;
run)
    out="${3:-$dir/out}"
    mkdir -p "$out"
    : >"$out/summary.txt"
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
    # A lent GPU is scarce: a step that fails is reported and the next one still runs; the
    # exit status is the first failure's.
    failed=0
    fail() { [ "$failed" -ne 0 ] || failed="$1"; }
    # the parity tests, flex and wgpu: a missing adapter fails them (no DMOERM_SKIP_WGPU here)
    echo "== parity (flex and wgpu)" | tee "$out/parity.log"
    start=$SECONDS
    status=0
    timeout 240 "$bin/parity" 2>&1 | tee -a "$out/parity.log" || status=$?
    echo "parity: exit $status in $((SECONDS - start)) s" | tee -a "$out/parity.log"
    [ "$status" -eq 0 ] || fail "$status"
    if [ "${GPU_CHECK_SIZES:-1}" != 0 ]; then
        echo "== sizes" | tee "$out/sizes.log"
        start=$SECONDS
        status=0
        sizes "$bin" "$out" real || status=$?
        echo "sizes: exit $status in $((SECONDS - start)) s" | tee -a "$out/sizes.log"
        [ "$status" -eq 0 ] || fail "$status"
    fi
    # the benches: the wgpu groups only on a hardware adapter (the bench says which it found)
    echo "== scoring benches" | tee "$out/bench.log"
    start=$SECONDS
    # GPU_CHECK_BENCHES unquoted: it may hold several criterion arguments
    # shellcheck disable=SC2086
    CRITERION_HOME="$scratch/criterion" timeout 420 "$bin/scoring" --bench --noplot ${GPU_CHECK_BENCHES:-} 2>&1 | tee -a "$out/bench.log" ||
        fail "$?"
    echo "benches: $((SECONDS - start)) s" | tee -a "$out/bench.log"
    grep -q "^wgpu benches on" "$out/bench.log" || { echo "gpu-check: the wgpu benches did not run" >&2; fail 1; }
    # "group/bench/param  time: [low estimate high]" -> one line each
    awk '/^[a-z]+\/[a-z_0-9]+\// { name = $1 } /time:/ && name { print name, $(NF-3), $(NF-2); name = "" }' \
        "$out/bench.log" | tee -a "$out/summary.txt"
    exit "$failed"
    ;;
dry-run)
    bin="${2:-${CARGO_TARGET_DIR:-$root/target}/debug/examples}"
    out="${3:-$(mktemp -d)}"
    mkdir -p "$out"
    for exe in shaped_model gpu_profile; do
        [ -x "$bin/$exe" ] || { echo "gpu-check: no $bin/$exe (build the examples first)" >&2; exit 1; }
    done
    : >"$out/sizes.log"
    GPU_CHECK_RUNS="${GPU_CHECK_RUNS:-2}" sizes "$bin" "$out" tiny
    echo "gpu-check dry run: passed ($out/summary.txt)"
    cat "$out/summary.txt"
    ;;
*)
    echo "usage: scripts/gpu-check.sh build [DIR] | run [DIR] [OUT] | dry-run [BIN] [OUT]" >&2
    exit 2
    ;;
esac
