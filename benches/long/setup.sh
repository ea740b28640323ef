# Sourced by run.sh and batch.sh (from the repository root): the release builds they time, the
# reference venv, and where the models and inputs go.
target="${CARGO_TARGET_DIR:-target}"
work="$target/bench-long"
# the builds a user runs: release (two invocations, so that the example's dev-dependencies do
# not change the CLI's features)
cargo build --release --locked --quiet -p dmoerm-cli
cargo build --release --locked --quiet -p dmoerm --example long_input
dmoerm="$target/release/dmoerm"
long_input="$target/release/examples/long_input"
venv="${DMOERM_COMPARE_VENV:-benches/compare/.venv}"
./scripts/reference-venv.sh "$venv" benches/compare/requirements.txt >&2
mkdir -p "$work"
