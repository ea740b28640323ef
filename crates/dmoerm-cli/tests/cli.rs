//! The `dmoerm` binary end to end, on the parity fixtures (reference numbers from PyTorch).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use dmoerm_testkit::edit;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

fn dmoerm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmoerm")).args(args).output().expect("run dmoerm")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dmoerm-cli-{}-{name}", std::process::id()))
}

fn stdout_json(out: &Output) -> Value {
    assert!(out.status.success(), "dmoerm failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// `dmoerm score --json` of one prompt and response on the CPU.
fn score_json(model: &str, prompt: &str, response: &str) -> Value {
    let args = ["score", "--model", model, "--prompt", prompt, "--response", response, "--json", "--device", "cpu"];
    stdout_json(&dmoerm(&args))
}

fn assert_close(got: &Value, want: &Value) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((g - w).abs() < 1e-4, "{g} vs reference {w}");
}

#[test]
fn score_json_prints_the_documented_object() {
    let exp = expected("llama");
    let input = &exp["inputs"][0];
    let prompt = input["messages"][0]["content"].as_str().unwrap();
    let response = input["response"].as_str().unwrap();
    let got = score_json(fixture("llama").to_str().unwrap(), prompt, response);
    let want = &input["expected"];
    let keys: Vec<&str> = got.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_close(&got["reward"], &want["reward"]);
    assert_eq!(got["task"], want["task"]);
    assert_eq!(got["truncated"], want["truncated"]);
    for (k, v) in want["task_probs"].as_object().unwrap() {
        assert_close(&got["task_probs"][k], v);
    }
    for (k, v) in want["capabilities"].as_object().unwrap() {
        assert_close(&got["capabilities"][k], v);
    }
}

#[test]
fn score_streams_jsonl() {
    let exp = expected("qwen2");
    let inputs = exp["inputs"].as_array().unwrap();
    let in_path = tmp("in.jsonl");
    let out_path = tmp("out.jsonl");
    let lines: Vec<String> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| serde_json::json!({"messages": x["messages"], "response": x["response"], "id": i}).to_string())
        .collect();
    std::fs::write(&in_path, lines.join("\n") + "\n").unwrap();
    let model = fixture("qwen2");
    let out = dmoerm(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        in_path.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&out_path).unwrap();
    let rows: Vec<Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), inputs.len());
    for (i, (row, x)) in rows.iter().zip(inputs).enumerate() {
        assert_eq!(row["id"], i);
        assert_close(&row["reward"], &x["expected"]["reward"]);
        assert_eq!(row["task"], x["expected"]["task"]);
    }
}

#[test]
fn rank_orders_candidates() {
    let exp = expected("bert");
    let rank = &exp["rank"];
    let cands = tmp("cands.txt");
    let text: Vec<&str> = rank["candidates"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    std::fs::write(&cands, text.join("\n")).unwrap();
    let model = fixture("bert");
    let out = dmoerm(&[
        "rank",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        rank["prompt"].as_str().unwrap(),
        "--candidates",
        cands.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let got = stdout_json(&out);
    let order: Vec<u64> = got.as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    let want: Vec<u64> = rank["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(order, want);
    // the same candidates as JSONL give the same order
    let jsonl: Vec<String> = text.iter().map(|c| serde_json::json!({"response": c}).to_string()).collect();
    std::fs::write(&cands, jsonl.join("\n")).unwrap();
    let out = dmoerm(&[
        "rank",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        rank["prompt"].as_str().unwrap(),
        "--candidates",
        cands.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let again: Vec<u64> = stdout_json(&out).as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(again, want);
}

#[test]
fn inspect_reports_the_bundle() {
    let model = fixture("llama");
    let got = stdout_json(&dmoerm(&["inspect", "--model", model.to_str().unwrap(), "--json"]));
    assert_eq!(got["architecture"], "llama");
    assert_eq!(got["layers"], 2);
    assert_eq!(got["hidden_size"], 32);
    // embeddings 400x32 + 2 layers x (q 32x32 + k,v 32x16 + o 32x32 + mlp 3x32x64 + 2 norms) + final norm
    assert_eq!(got["backbone_params"], 400 * 32 + 2 * (32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32);
    let tasks = got["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["capabilities"].as_array().unwrap().len(), 3);
}

#[test]
fn pack_then_score_gives_the_same_numbers() {
    let packed = tmp("llama.dmoerm.safetensors");
    let model = fixture("llama");
    let out = dmoerm(&["pack", "--model", model.to_str().unwrap(), "--out", packed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = |m: &str| {
        dmoerm(&[
            "score",
            "--model",
            m,
            "--prompt",
            "Tell me a joke.",
            "--response",
            "Why did the chicken cross the road?",
            "--json",
            "--device",
            "cpu",
        ])
    };
    assert_eq!(stdout_json(&args(packed.to_str().unwrap())), stdout_json(&args(model.to_str().unwrap())));
}

#[test]
fn errors_are_one_line_and_a_failure_exit() {
    let out = dmoerm(&["score", "--model", "/nonexistent/bundle", "--prompt", "a", "--response", "b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("/nonexistent/bundle"), "{err}");
}

/// `score` on the llama fixture with `--device auto`, as on a machine without a desktop
/// session (no XDG_RUNTIME_DIR): what a probe of the GPUs must not make noisy.
fn score_auto(extra: &[&str]) -> Output {
    let model = fixture("llama");
    let mut args = vec!["score", "--model", model.to_str().unwrap(), "--prompt", "Hi", "--response", "Hello"];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_dmoerm"))
        .args(&args)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .expect("run dmoerm")
}

#[test]
fn a_successful_score_prints_nothing_on_stderr() {
    let out = score_auto(&["--device", "auto"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "stderr of a successful score");
}

#[test]
fn verbose_says_once_which_device_and_why() {
    let out = score_auto(&["--device", "auto", "-v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("device: "), "{err}");
    // this machine kind has no hardware GPU; lavapipe, where installed, is named as the reason
    if !dmoerm::device::has_hardware_gpu() {
        assert!(lines[0].starts_with("device: the CPU (flex, "), "{err}");
    }
    let cpu = score_auto(&["--device", "cpu", "-v"]);
    assert_eq!(String::from_utf8_lossy(&cpu.stderr).lines().collect::<Vec<_>>().len(), 1);
    assert!(String::from_utf8_lossy(&cpu.stderr).contains("as asked"));
}

#[test]
fn a_non_finite_score_is_an_error_not_null() {
    // every weight of a copy of the llama fixture's aggregators set to NaN
    let dir = tmp("nan-bundle");
    let _ = std::fs::remove_dir_all(&dir);
    edit::copy_dir(&fixture("llama"), &dir);
    for file in ["aggregator_chat.safetensors", "aggregator_obj_qa.safetensors"] {
        edit::fill(&dir, file, |_| true, f32::NAN);
    }
    let out = dmoerm(&[
        "score",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "a",
        "--response",
        "b",
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success(), "exit code 0 for a NaN reward");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("aggregator") && err.contains("non-finite"), "{err}");
}

#[test]
fn inspect_check_names_the_non_finite_tensors() {
    let clean = dmoerm(&["inspect", "--model", fixture("llama").to_str().unwrap(), "--check", "--json"]);
    let got = stdout_json(&clean);
    assert_eq!(got["check"]["non_finite"], serde_json::json!([]));
    assert!(got["check"]["tensors_scanned"].as_u64().unwrap() > 20, "{got}");

    let dir = tmp("inspect-nan");
    let _ = std::fs::remove_dir_all(&dir);
    edit::copy_dir(&fixture("llama"), &dir);
    edit::fill(&dir, "heads.safetensors", |n| n == "router.bias", f32::INFINITY);
    let out = dmoerm(&["inspect", "--model", dir.to_str().unwrap(), "--check"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("heads.safetensors::router.bias: 2 of 2 values NaN or infinite"), "{text}");
    assert!(!text.contains("conversational_sense.bias:"), "only the broken tensor is named: {text}");
}

/// A Hugging Face reward-model directory scores as it is, and `import` writes a bundle whose
/// reward is the chosen label.
#[test]
fn hugging_face_directories_score_as_they_are_and_import() {
    let name = "hf_qwen3_multilabel";
    let exp = expected(name);
    let input = &exp["inputs"][0];
    let prompt = input["messages"][0]["content"].as_str().unwrap();
    let response = input["response"].as_str().unwrap();
    let score = |model: &str| score_json(model, prompt, response);
    let dir = fixture(name);
    let got = score(dir.to_str().unwrap());
    let caps = &input["expected"]["capabilities"];
    assert_close(&got["reward"], &caps["helpfulness"]);
    assert_close(&got["capabilities"]["verbosity"], &caps["verbosity"]);

    let out = tmp("import");
    let run = dmoerm(&["import", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--reward-label", "verbosity"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.join("dmoerm.json").exists() && out.join("backbone/model.safetensors").exists());
    assert_close(&score(out.to_str().unwrap())["reward"], &caps["verbosity"]);

    let bad =
        dmoerm(&["import", dir.to_str().unwrap(), "--out", tmp("import-bad").to_str().unwrap(), "--reward-label", "x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no label `x`"));
}
