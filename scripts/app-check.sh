#!/usr/bin/env bash
# The crate as a user's dependency: a fresh Cargo project outside the workspace depends on
# `dmoerm` with the Cargo.toml lines of README's "In your own crate" (read from README, so the
# two stay in step; only the path is this checkout's), builds in dev and in release, and scores
# the default model with each build. Each reward must equal the CLI's; prints the time of each
# first build and of one score (the faster of two calls).
#
#     scripts/app-check.sh [MODEL CONV_JSONL]
#
# MODEL and CONV_JSONL (its first line a {"prompt"|"messages", "response"} object): also time
# that score in both builds, e.g. target/bench-long/qwen3-0.6b/model.int8.dmoerm and
# target/bench-long/conv-1024.jsonl (benches/long/run.sh writes them). The project and its
# target directory are new (a user's first build is cold): about 20 min on 2 cores. The CLI is
# the workspace's debug build ($CARGO_TARGET_DIR or target), built if missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
app="$work/app"
cargo new --quiet --bin --vcs none --name score-app "$app"

# the README's lines: the block after the app-check marker; the dependency's path made this
# checkout's
lines=$(awk '/<!-- app-check:/ { marked = 1; next } marked && /^```toml/ { inside = 1; next } inside && /^```/ { exit } inside' "$root/README.md")
grep -q '^dmoerm = ' <<<"$lines" || { echo "README has no app-check block with a dmoerm dependency" >&2; exit 1; }
sed -i '/^\[dependencies\]/d' "$app/Cargo.toml"
# (and the app's own serde_json, beside dmoerm)
sed -e "s#path = \"[^\"]*\"#path = \"$root/crates/dmoerm\"#" -e '/^dmoerm = /a serde_json = "1"' <<<"$lines" >>"$app/Cargo.toml"

cat >"$app/src/main.rs" <<'RUST'
//! Scores the first conversation of a JSONL file with a model, twice; prints the reward and
//! the faster call's seconds as JSON.
use std::time::Instant;

use dmoerm::{Conversation, ConversationInput, Device, RewardModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(conv)) = (args.get(1), args.get(2)) else {
        return Err("usage: score-app MODEL CONV_JSONL".into());
    };
    let line = std::fs::read_to_string(conv)?;
    let input: ConversationInput = serde_json::from_str(line.lines().next().unwrap_or_default())?;
    let conv: Conversation = input.try_into()?;
    let model = RewardModel::load_on(model, Device::flex())?;
    let (mut seconds, mut reward) = (f64::INFINITY, 0.0);
    for _ in 0..2 {
        let start = Instant::now();
        reward = model.score(&conv)?.reward;
        seconds = seconds.min(start.elapsed().as_secs_f64());
    }
    println!("{}", serde_json::json!({ "reward": reward, "seconds": seconds }));
    Ok(())
}
RUST

default_model="$root/models/default/model.dmoerm"
default_conv="$work/default.jsonl"
echo '{"prompt": "What does the word \"harbor\" mean?", "response": "\"harbor\" means a sheltered port where ships can take on or discharge cargo."}' >"$default_conv"
cli="$target/debug/dmoerm"
[ -x "$cli" ] || cargo build --manifest-path "$root/Cargo.toml" --locked --quiet -p dmoerm-cli
want=$("$cli" score --model "$default_model" --device cpu --json \
  --prompt 'What does the word "harbor" mean?' \
  --response '"harbor" means a sheltered port where ships can take on or discharge cargo.')

for profile in dev release; do
  flag=$([ "$profile" = release ] && echo --release || true)
  start=$(date +%s)
  # shellcheck disable=SC2086
  (cd "$app" && env -u CARGO_TARGET_DIR -u RUSTC_WORKSPACE_WRAPPER cargo build --quiet $flag)
  built=$(($(date +%s) - start))
  bin="$app/target/$([ "$profile" = release ] && echo release || echo debug)/score-app"
  got=$("$bin" "$default_model" "$default_conv")
  python3 - "$profile" "$built" "$got" "$want" <<'PY'
import json, sys
profile, built, got, want = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
assert abs(got["reward"] - want["reward"]) <= 1e-6, f"{profile}: reward {got['reward']} vs the CLI's {want['reward']}"
print(f"{profile}: first build {built // 60} min {built % 60} s; default model reward {got['reward']:.6f} "
      f"(the CLI's {want['reward']:.6f}), a score {got['seconds'] * 1e3:.1f} ms")
PY
  if [ $# -ge 2 ]; then
    echo "$profile: $1 on $2: $("$bin" "$1" "$2")"
  fi
done
