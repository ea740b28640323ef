"""The Python package against the PyTorch reference scores of the parity fixtures
(tests/fixtures/*/expected.json, computed with torch + transformers + peft), the result shape
the CLI prints, its errors, and the GIL released while scoring."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import dmoerm
from dmoerm import DmoermError, RewardModel

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_MODEL = ROOT / "models" / "default" / "model.dmoerm"
# a DMoERM on BERT and on Llama, a plain reward model, a Hugging Face reward-model directory
CASES = ["bert", "llama", "plain_rm", "hf_qwen2"]


def expected(name):
    return json.loads((FIXTURES / name / "expected.json").read_text())


def inputs(exp):
    return [{"messages": i["messages"], "response": i["response"]} for i in exp["inputs"]]


def assert_close(got, want, tol, what):
    assert got["task"] == want["task"], what
    assert got["truncated"] == want["truncated"], what
    assert abs(got["reward"] - want["reward"]) <= tol, (what, got["reward"], want["reward"])
    assert set(got["task_probs"]) == set(want["task_probs"]), what
    for name, p in want["task_probs"].items():
        assert abs(got["task_probs"][name] - p) <= tol, (what, name)
    assert set(got["capabilities"]) == set(want["capabilities"]), what
    for name, v in want["capabilities"].items():
        assert abs(got["capabilities"][name] - v) <= tol, (what, name)


@pytest.mark.parametrize("name", CASES)
def test_scores_match_the_pytorch_reference(name):
    exp = expected(name)
    rm = RewardModel(FIXTURES / name, device="cpu")
    batch = rm.score_batch(inputs(exp))
    assert len(batch) == len(exp["inputs"])
    for i, (got, item) in enumerate(zip(batch, exp["inputs"])):
        assert_close(got, item["expected"], exp["tolerance"], f"{name} batch input {i}")
    for i, (inp, item) in enumerate(zip(inputs(exp), exp["inputs"])):
        assert_close(rm.score(inp), item["expected"], exp["tolerance"], f"{name} input {i}")


@pytest.mark.parametrize("name", CASES)
def test_rank_matches_the_pytorch_reference(name):
    exp = expected(name)["rank"]
    rm = RewardModel(str(FIXTURES / name), device="cpu")
    ranked = rm.rank(exp["prompt"], exp["candidates"])
    assert [r["index"] for r in ranked] == exp["order"]
    for r in ranked:
        assert r["response"] == exp["candidates"][r["index"]]
        assert r["task"] == exp["task"]
        assert abs(r["reward"] - exp["rewards"][r["index"]]) <= 1e-4
    # the prompt as a list of messages routes and scores the same
    as_messages = rm.rank([{"role": "user", "content": exp["prompt"]}], exp["candidates"])
    assert as_messages == ranked


def test_result_is_the_object_the_cli_prints():
    rm = RewardModel(FIXTURES / "bert", device="cpu")
    prompt, response = "What is the capital of France?", "Paris."
    got = rm.score({"prompt": prompt, "response": response})
    assert list(got) == ["reward", "task", "task_probs", "capabilities", "truncated"]
    assert list(got["task_probs"]) == list(rm.info()["tasks"])  # the bundle's order
    # the workspace build that made this module made the CLI too
    cli = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "dmoerm"
    out = subprocess.run(
        [str(cli), "score", "--model", str(FIXTURES / "bert"), "--device", "cpu", "--json",
         "--prompt", prompt, "--response", response],
        check=True, capture_output=True, text=True,
    ).stdout
    printed = json.loads(out)
    # the same keys in the same order; numbers equal up to the f32 printed in decimal
    assert list(printed) == list(got)
    assert printed["task"] == got["task"] and printed["truncated"] == got["truncated"]
    assert printed["reward"] == pytest.approx(got["reward"], abs=1e-6)
    for key in ("task_probs", "capabilities"):
        assert list(printed[key]) == list(got[key])
        assert list(printed[key].values()) == pytest.approx(list(got[key].values()), abs=1e-6)


def test_quantize_on_load_is_the_clis():
    # Rust's tests check that quantising as a model loads gives the model `pack` gives; here,
    # that Python passes the option as the CLI does
    prompt, response = "What does the word \"harbor\" mean?", "A sheltered port."
    for quantize in ["int8", "q4"]:
        rm = RewardModel(DEFAULT_MODEL, device="cpu", quantize=quantize)
        got = rm.score({"prompt": prompt, "response": response})
        cli = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "dmoerm"
        out = subprocess.run(
            [str(cli), "score", "--model", str(DEFAULT_MODEL), "--device", "cpu", "--json", "--quantize", quantize,
             "--prompt", prompt, "--response", response],
            check=True, capture_output=True, text=True,
        ).stdout
        assert json.loads(out)["reward"] == pytest.approx(got["reward"], abs=1e-6)
    with pytest.raises(DmoermError, match="unknown quantisation \"q8\": int8 or q4"):
        RewardModel(DEFAULT_MODEL, device="cpu", quantize="q8")


def test_info_and_device():
    rm = RewardModel(FIXTURES / "bert", device="cpu")
    info = rm.info()
    assert list(info["tasks"]) == ["chat", "obj_qa"]
    assert info["tasks"]["obj_qa"] == ["correctness", "logic"]
    assert rm.device.startswith("the CPU")
    assert "RewardModel(" in repr(rm)
    assert isinstance(dmoerm.__version__, str)


def test_errors_raise_dmoerm_error_with_the_message():
    rm = RewardModel(FIXTURES / "bert", device="cpu")
    with pytest.raises(DmoermError, match="exactly one of `prompt` and `messages`"):
        rm.score({"prompt": "q", "messages": [{"role": "user", "content": "q"}], "response": "r"})
    with pytest.raises(DmoermError, match="missing field `response`"):
        rm.score({"prompt": "q"})
    with pytest.raises(DmoermError, match="at least one user message"):
        rm.score({"messages": [{"role": "system", "content": "s"}], "response": "r"})
    with pytest.raises(DmoermError, match="no candidates"):
        rm.rank("q", [])
    with pytest.raises(DmoermError, match="device `tpu`"):
        RewardModel(FIXTURES / "bert", device="tpu")
    with pytest.raises(DmoermError, match="nowhere"):
        RewardModel(FIXTURES / "nowhere", device="cpu")
    # a bad item of a batch fails the whole call and names the problem
    with pytest.raises(DmoermError, match="bad input"):
        rm.score_batch([{"prompt": "q", "response": "r"}, {"prompt": 3, "response": "r"}])


def test_scoring_releases_the_gil():
    rm = RewardModel(DEFAULT_MODEL, device="cpu")
    # a batch long enough to show a stall on this machine (16 items took 0.2 s on 2 cores)
    batch = [{"prompt": 'What does the word "harbor" mean?', "response": "A sheltered port. " * 8}] * 16
    while True:
        start = time.perf_counter()
        rm.score_batch(batch)
        alone = time.perf_counter() - start
        if alone > 0.5 or len(batch) >= 1024:
            break
        batch = batch * 2
    assert alone > 0.5, f"the batch should take a while to show anything ({alone:.3f} s)"

    done = threading.Event()
    scores = []
    worker = threading.Thread(target=lambda: (scores.extend(rm.score_batch(batch)), done.set()))
    ticks = []
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    # with the GIL held for the call, this thread would stall for the whole batch
    assert len(scores) == len(batch)
    assert max(gaps) < alone / 2, (max(gaps), alone)
