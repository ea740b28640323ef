//! `dmoerm train` and `dmoerm eval` end to end on the tiny training fixture
//! (tests/fixtures/train): the pipeline and the baselines write bundles that score, and
//! `eval` reports what the scores say.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmoerm::{Combine, Conversation, DeviceChoice, RewardModel};
use serde_json::Value;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(p)
}

fn dmoerm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmoerm")).args(args).output().expect("run dmoerm")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "dmoerm failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dmoerm-cli-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn train(args: &[&str], out: &Path) -> String {
    let config = fixture("train/train.toml");
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    all.extend(["--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--device", "cpu"]);
    ok(&dmoerm(&all))
}

fn eval_json(model: &Path, extra: &[&str]) -> Value {
    let data = fixture("train/valid.jsonl");
    let mut args = vec!["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    args.extend(["--device", "cpu"]);
    serde_json::from_str(&ok(&dmoerm(&args))).expect("eval prints JSON")
}

/// Pairwise accuracy of `model` on the validation fixture, from its scores.
fn accuracy_from_scores(model: &RewardModel) -> f64 {
    let data = dmoerm_train_data();
    let (mut right, mut all) = (0, 0);
    for (prompt, responses, rank) in data {
        let scores: Vec<f32> = responses
            .iter()
            .map(|r| model.score(&Conversation::new(prompt.clone(), r.clone())).unwrap().reward)
            .collect();
        for i in 0..rank.len() {
            for j in 0..rank.len() {
                if rank[i] < rank[j] {
                    all += 1;
                    right += usize::from(scores[i] > scores[j]);
                }
            }
        }
    }
    right as f64 / all as f64
}

/// `(prompt, responses, rank)` of the validation fixture, read independently of the trainer.
fn dmoerm_train_data() -> Vec<(String, Vec<String>, Vec<u64>)> {
    std::fs::read_to_string(fixture("train/valid.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let strings =
                |k: &str| v[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
            let rank = v["rank"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
            (strings("src")[0].clone(), strings("response"), rank)
        })
        .collect()
}

#[test]
fn train_all_writes_a_bundle_that_scores_and_evaluates() {
    let out = run_dir("all");
    let printed = train(&["all"], &out);
    for phase in ["router", "phase 1 chat", "phase 2 obj_qa/relevance", "phase 3 obj_qa"] {
        assert!(printed.contains(phase), "{printed}");
    }
    let bundle = out.join("bundle");
    for f in
        ["dmoerm.json", "heads.safetensors", "aggregator_chat.safetensors", "tasks/chat/empathy/adapter_config.json"]
    {
        assert!(bundle.join(f).exists(), "{f} missing");
    }
    for f in [
        "router/metrics.json",
        "phase1/chat/curve.svg",
        "phase2/obj_qa/correctness/metrics.json",
        "phase3/chat/curve.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }

    // The CLI scores with it: two tasks routed, two capabilities each.
    let score: Value = serde_json::from_str(&ok(&dmoerm(&[
        "score",
        "--model",
        bundle.to_str().unwrap(),
        "--prompt",
        "why is the sky blue?",
        "--response",
        "air molecules scatters blue sunlight.",
        "--json",
        "--device",
        "cpu",
    ])))
    .unwrap();
    assert!(score["reward"].as_f64().unwrap().is_finite());
    assert_eq!(score["task_probs"].as_object().unwrap().len(), 2);
    assert_eq!(score["capabilities"].as_object().unwrap().len(), 2);

    // eval's numbers are the ones the scores give.
    let report = eval_json(&bundle, &[]);
    let model = RewardModel::load(&bundle, DeviceChoice::Cpu).unwrap();
    assert!((report["accuracy"].as_f64().unwrap() - accuracy_from_scores(&model)).abs() < 1e-12, "{report}");
    assert_eq!(report["pairs"], 12);
    assert!(report["router_accuracy"].is_number());
    let bon = &report["bon"];
    assert_eq!(bon["prompts"], 4);
    assert_eq!(bon["oracle"], 1.0); // the fixture's gold: best 1.0, middle 0.5, worst 0.0
    assert_eq!(bon["random"], 0.5);

    // A second run finds every phase done and rewrites the same bundle.
    let before = std::fs::read(bundle.join("heads.safetensors")).unwrap();
    train(&["all"], &out);
    assert_eq!(std::fs::read(bundle.join("heads.safetensors")).unwrap(), before);
}

#[test]
fn baselines_train_and_the_ensemble_rules_combine_member_scores() {
    let out = run_dir("baselines");
    train(&["baseline", "--kind", "single"], &out);
    train(&["baseline", "--kind", "ensemble"], &out);

    let single = out.join("baseline-single");
    let report = eval_json(&single, &[]);
    let model = RewardModel::load(&single, DeviceChoice::Cpu).unwrap();
    assert!((report["accuracy"].as_f64().unwrap() - accuracy_from_scores(&model)).abs() < 1e-12);
    assert!(report["router_accuracy"].is_null(), "one task: no router");
    // per task comes from the data's categories
    assert_eq!(report["per_task"].as_object().unwrap().len(), 2);

    let ensemble = out.join("baseline-ensemble");
    let mut model = RewardModel::load(&ensemble, DeviceChoice::Cpu).unwrap();
    let conv = Conversation::new("why is the sky blue?", "air molecules scatters blue sunlight.");
    let members = |s: &dmoerm::Score| s.capabilities.iter().map(|(_, v)| *v as f64).collect::<Vec<_>>();
    let s = model.score(&conv).unwrap();
    let m = members(&s);
    assert_eq!(m.len(), 2);
    assert!(m[0] != m[1], "members differ (seeds): {m:?}");
    let mean = (m[0] + m[1]) / 2.0;
    assert!((s.reward as f64 - mean).abs() < 1e-5);
    model.set_combine(Combine::Min);
    assert!((model.score(&conv).unwrap().reward as f64 - m[0].min(m[1])).abs() < 1e-5);
    model.set_combine(Combine::Uncertainty { lambda: 2.0 });
    let var = ((m[0] - mean).powi(2) + (m[1] - mean).powi(2)) / 2.0;
    assert!((model.score(&conv).unwrap().reward as f64 - (mean - 2.0 * var)).abs() < 1e-5);

    // --combine reaches eval; on a bundle that is not an ensemble it is an error.
    for rule in ["mean", "min", "uncertainty:0.5"] {
        assert!(eval_json(&ensemble, &["--combine", rule])["accuracy"].is_number());
    }
    let err = dmoerm(&["eval", "--model", single.to_str().unwrap(), "--data", "x", "--combine", "min"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("not an ensemble"));
}

#[test]
fn training_errors_name_the_file() {
    let dir = run_dir("errors");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("train.jsonl");
    std::fs::write(&bad, "{\"src\": [\"q\"], \"response\": [\"a\", \"b\"], \"rank\": [1, 2], \"label\": \"poetry\"}\n")
        .unwrap();
    let config = std::fs::read_to_string(fixture("train/train.toml")).unwrap();
    let config = config
        .replace("backbone = \"../bert/backbone\"", &format!("backbone = {:?}", fixture("bert/backbone")))
        .replace("train = \"train.jsonl\"", &format!("train = {:?}", bad))
        .replace("valid = \"valid.jsonl\"", &format!("valid = {:?}", fixture("train/valid.jsonl")))
        .replace("\"caps_", &format!("\"{}/caps_", fixture("train").display()));
    let cfg = dir.join("train.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = dmoerm(&["train", "phase1", "--config", cfg.to_str().unwrap(), "--device", "cpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1: category `poetry` is not a task", bad.display())), "{err}");
}
