"""Ray Data over dmoerm on a local two-node Ray cluster that the test starts and stops.

Every address is on the loopback interface: the nodes are started with
`--node-ip-address=127.0.0.1` and the driver with `_node_ip_address="127.0.0.1"`, and the test
refuses to run outside a network namespace whose only interface is `lo` (test.sh runs it in
one, `unshare -rn`), so no packet can reach any other address.

10,000 rows are scored by two actors spread over the two nodes; the output equals
`dmoerm score --input` on the same file, row for row.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

# Ray reads its settings when it is imported. The cluster has a token of its own, which the
# nodes and this driver share (whatever ~/.ray holds), and reports no usage statistics.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray  # noqa: E402

from dmoerm.ray import DmoermScorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "tests" / "fixtures" / "bert"  # a router over two tasks, LoRA experts, aggregators
ROWS = 10_000
RAY = Path(sys.executable).parent / "ray"
CLI = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "dmoerm"


def write_rows(path):
    prompts = ["What is the capital of France?", "Tell me a joke.", "How do I boil an egg?", "Pretend you are a pirate."]
    responses = ["Paris.", "Why did the chicken cross the road?", "Put it in boiling water for 8 minutes.", "Arr!"]
    with open(path, "w") as f:
        for i in range(ROWS):
            row = {"id": i}
            if i % 5 == 0:
                row["messages"] = [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": prompts[i % 4]},
                ]
            else:
                row["prompt"] = prompts[i % 4]
            row["response"] = f"{responses[(i * 7) % 4]} ({i})"
            f.write(json.dumps(row) + "\n")


@pytest.fixture
def cluster():
    interfaces = [name for _, name in socket.if_nameindex()]
    assert interfaces == ["lo"], (
        f"interfaces {interfaces}: run this test in a network namespace with only the loopback "
        "interface (bindings/python/test.sh does: unshare -rn)"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    env = dict(os.environ)
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=200000000", "--disable-usage-stats"]

    def run(*args):
        done = subprocess.run([str(RAY), "start", *args, *node], env=env, timeout=180, capture_output=True, text=True)
        assert done.returncode == 0, f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"

    try:
        run("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}")
        run(f"--address=127.0.0.1:{port}")
        ray.init(address=f"127.0.0.1:{port}", _node_ip_address="127.0.0.1", log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], env=env, timeout=180, capture_output=True)


def bounded(seconds):
    def expire(*_):
        raise TimeoutError(f"the Ray job took longer than {seconds} s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)


def test_ray_data_scores_like_the_cli(cluster, tmp_path):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}

    rows = tmp_path / "rows.jsonl"
    write_rows(rows)
    cli_out = tmp_path / "cli.jsonl"
    subprocess.run(
        [str(CLI), "score", "--model", str(MODEL), "--device", "cpu", "--input", str(rows), "--output", str(cli_out),
         "--batch-size", "64"],
        check=True, capture_output=True, timeout=600,
    )
    want = [json.loads(line) for line in cli_out.read_text().splitlines()]
    assert len(want) == ROWS

    class Scorer(DmoermScorer):
        """The library's scorer, plus the node that scored each row."""

        def __call__(self, batch):
            scored = super().__call__(batch)
            node = ray.get_runtime_context().get_node_id()
            return scored.append_column("node", pa.array([node] * scored.num_rows))

    bounded(600)
    try:
        got = ray.data.read_json(str(rows)).map_batches(
            Scorer,
            fn_constructor_kwargs={"model": str(MODEL), "device": "cpu"},
            concurrency=2,
            batch_size=500,
            batch_format="pyarrow",
            scheduling_strategy="SPREAD",
        ).take_all()
    finally:
        signal.alarm(0)

    assert len(got) == ROWS
    got.sort(key=lambda r: r["id"])
    assert len({r["node"] for r in got}) == 2, "both nodes scored"
    for row, cli in zip(got, want):
        assert row["id"] == cli["id"]
        assert row["task"] == cli["task"], row["id"]
        assert row["truncated"] == cli["truncated"], row["id"]
        assert abs(row["reward"] - cli["reward"]) <= 1e-5, (row["id"], row["reward"], cli["reward"])
        for key in ("task_probs", "capabilities"):
            mine = dict(row[key])  # a map column: its order is not kept
            assert set(mine) == set(cli[key]), (row["id"], key)
            for name, value in cli[key].items():
                assert abs(mine[name] - value) <= 1e-5, (row["id"], key, name)
