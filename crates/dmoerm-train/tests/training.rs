//! The trainer against references and properties: gradients against finite differences,
//! a tiny model overfitting tiny data in every phase, resumption, and exported bundles that
//! score exactly as the trainer computed.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use dmoerm::bundle::write::{write_bundle, BackboneFiles, BundleOut, ExpertOut, TaskOut};
use dmoerm::bundle::Pooling;
use dmoerm::expert::ExpertGroup;
use dmoerm::text::InputFormat;
use dmoerm::{Conversation, DeviceChoice, Message, RewardModel, Role};
use dmoerm_data::rng::Rng;
use dmoerm_train::config::{LoraSettings, PhaseSettings, TrainConfig};
use dmoerm_train::features::{read, Frozen, TextCache};
use dmoerm_train::host::{grads_by_path, to_host, with_values};
use dmoerm_train::objectives::{AggregatorObjective, Group, LoraLayout, Objective, PairwiseLora, RouterObjective};
use dmoerm_train::pipeline::Pipeline;
use dmoerm_train::trainer::{record_contents, PhaseRun};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(p: &str) -> PathBuf {
    root().join("tests/fixtures").join(p)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dmoerm-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn input() -> InputFormat {
    serde_json::from_str(r#"{"template": "{query} [SEP] {response}", "max_length": 64}"#).unwrap()
}

fn lora() -> LoraSettings {
    LoraSettings {
        r: 4,
        alpha: 8.0,
        targets: Some(vec!["query".into(), "value".into(), "dense".into()]),
        layers: Some(1),
    }
}

fn user(text: &str) -> Vec<Message> {
    vec![Message { role: Role::User, content: text.into() }]
}

/// The BERT fixture with LoRA on its top layer, and four cached texts.
fn setup() -> (Frozen, LoraLayout, TextCache, Vec<usize>) {
    let device = Device::flex();
    let frozen = Frozen::load(&fixture("bert/backbone"), input(), Pooling::Cls, Some(1), &device).unwrap();
    let layout = LoraLayout::new(&frozen.backbone, frozen.split, &lora()).unwrap();
    let mut cache = TextCache::default();
    let texts = [
        ("what is the capital of france?", "the capital of france is paris."),
        ("what is the capital of france?", "the dog."),
        ("tell me a joke!", "why did the chicken cross the road?"),
        ("tell me a joke!", "eight legs."),
    ];
    let ids = texts.iter().map(|(q, r)| frozen.expert_ids(&user(q), r).unwrap()).collect();
    let index = frozen.cache(&mut cache, ids, "test texts").unwrap();
    (frozen, layout, cache, index)
}

/// A phase-1 style objective on `groups` (validated on the same groups).
fn pairwise<'a>(
    frozen: &'a Frozen,
    layout: &'a LoraLayout,
    cache: &'a TextCache,
    groups: Vec<Group>,
) -> PairwiseLora<'a> {
    PairwiseLora { frozen, cache, layout, train: groups.clone(), valid: groups, start: None }
}

/// A model with a non-zero LoRA `B` (a fresh adapter has `B = 0`, where `A` gets no gradient).
fn random_params<O: Objective>(obj: &O, seed: u64) -> O::Model {
    let model = obj.init(&mut Rng::new(seed));
    let host = to_host(&model).unwrap();
    let mut rng = Rng::new(seed + 100);
    let host = host
        .into_iter()
        .map(|(k, (v, s))| {
            let v = if k.ends_with(".b") { rng.uniform(v.len(), 0.3) } else { v };
            (k, (v, s))
        })
        .collect();
    with_values(model, &host)
}

fn loss_of<O: Objective>(obj: &O, model: &O::Model, units: &[usize]) -> f64 {
    read(obj.step(model, units).unwrap().unwrap().loss).unwrap()[0] as f64
}

/// The LoRA parameter `a` or `b` of projection `path` in an expert of `layout`.
fn lora_param(layout: &LoraLayout, path: &str, which: &str) -> String {
    let i = layout.modules.iter().position(|(p, _, _)| p == path).unwrap_or_else(|| panic!("no LoRA on {path}"));
    format!("adapter.projections.{i}.{which}")
}

/// Central differences on `entries` of each named parameter against the autodiff gradient.
fn check_gradients<O: Objective>(obj: &O, model: &O::Model, units: &[usize], names: &[&str]) {
    let tracked = model.clone().train();
    let grads = obj.step(&tracked, units).unwrap().unwrap().loss.backward();
    let grads = grads_by_path(&tracked, &GradientsParams::from_grads(grads, &tracked)).unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    for name in names {
        let grad = &grads.get(*name).unwrap_or_else(|| panic!("no grad for {name}")).0;
        let n = grad.len();
        for idx in [0, n / 3, n - 1] {
            let shifted = |delta: f32| {
                let mut host = to_host(model).unwrap();
                host.get_mut(*name).unwrap_or_else(|| panic!("no parameter {name}")).0[idx] += delta;
                loss_of(obj, &with_values(model.clone(), &host), units)
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
            let analytic = grad[idx] as f64;
            // f32 central differences are good to a few 1e-6 here (LoRA gradients are ~1e-3).
            let tol = 5e-5 + 0.01 * numeric.abs().max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < tol,
                "{name}[{idx}]: autodiff {analytic}, finite difference {numeric}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * names.len());
}

#[test]
fn lora_and_value_head_gradients_match_finite_differences() {
    let (frozen, layout, cache, idx) = setup();
    let groups = vec![
        Group { texts: vec![idx[0], idx[1]], pairs: vec![(0, 1)] },
        Group { texts: vec![idx[2], idx[3]], pairs: vec![(1, 0)] },
    ];
    let obj = pairwise(&frozen, &layout, &cache, groups);
    let params = random_params(&obj, 1);
    let names = [
        lora_param(&layout, "encoder.layer.1.attention.self.query", "a"),
        lora_param(&layout, "encoder.layer.1.attention.self.value", "b"),
        lora_param(&layout, "encoder.layer.1.output.dense", "a"),
        "head.weight".into(),
        "head.bias".into(),
    ];
    check_gradients(&obj, &params, &[0, 1], &names.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn aggregator_and_router_gradients_match_finite_differences() {
    let device = Device::flex();
    let (k, h) = (3, 8);
    let mut rng = Rng::new(5);
    let features = (0..6).map(|_| rng.uniform(k * h, 1.0)).collect();
    let groups = vec![
        Group { texts: vec![0, 1, 2], pairs: vec![(0, 1), (0, 2), (1, 2)] },
        Group { texts: vec![3, 4, 5], pairs: vec![(2, 0), (1, 0)] },
    ];
    let agg = AggregatorObjective {
        features,
        experts: k,
        hidden: h,
        train: groups.clone(),
        valid: groups,
        expert_heads: Vec::new(),
        device: device.clone(),
    };
    let params = agg.init(&mut Rng::new(2));
    check_gradients(&agg, &params, &[0, 1], &["fc1.weight", "fc1.bias", "act.alpha", "fc2.weight", "fc2.bias"]);

    let rows: Vec<(Vec<f32>, usize)> = (0..5).map(|i| (rng.uniform(h, 1.0), i % 3)).collect();
    let router = RouterObjective { train: rows.clone(), valid: rows, tasks: 3, hidden: h, device };
    let params = router.init(&mut Rng::new(3));
    check_gradients(&router, &params, &[0, 1, 2, 3, 4], &["head.weight", "head.bias"]);
}

#[test]
fn an_aggregator_started_from_the_experts_scores_their_mean() {
    let (k, h) = (3, 8);
    let mut rng = Rng::new(9);
    let features: Vec<Vec<f32>> = (0..5).map(|_| rng.uniform(k * h, 2.0)).collect();
    let heads: Vec<(Vec<f32>, f32)> = (0..k).map(|_| (rng.uniform(h, 1.0), rng.uniform(1, 1.0)[0])).collect();
    let group = Group { texts: (0..5).collect(), pairs: vec![(0, 1)] };
    let agg = AggregatorObjective {
        features: features.clone(),
        experts: k,
        hidden: h,
        train: vec![group.clone()],
        valid: vec![group],
        expert_heads: heads.clone(),
        device: Device::flex(),
    };
    let params = agg.init(&mut Rng::new(4));
    let got = read(agg.rewards(&params, &[0, 1, 2, 3, 4])).unwrap();
    for (f, got) in features.iter().zip(got) {
        let mean = heads
            .iter()
            .enumerate()
            .map(|(i, (v, b))| v.iter().zip(&f[i * h..(i + 1) * h]).map(|(v, x)| v * x).sum::<f32>() + b)
            .sum::<f32>()
            / k as f32;
        assert!((got - mean).abs() < 1e-5, "aggregator {got} vs mean expert score {mean}");
    }
    // Every parameter still gets a gradient from there (the extra hidden units included).
    check_gradients(&agg, &params, &[0], &["fc1.weight", "fc1.bias", "act.alpha", "fc2.weight", "fc2.bias"]);
}

#[test]
fn an_exported_adapter_and_head_score_in_the_bundle_as_in_the_trainer() {
    let (frozen, layout, cache, idx) = setup();
    let groups = vec![Group { texts: idx.clone(), pairs: vec![(0, 1)] }];
    let obj = pairwise(&frozen, &layout, &cache, groups);
    let params = random_params(&obj, 4);
    let trainer_rewards = read(obj.rewards(&params, &idx)).unwrap();

    let out = temp("export").join("bundle");
    let group = ExpertGroup::stack(&[&params]);
    let task = TaskOut {
        name: "all".into(),
        description: None,
        experts: vec![ExpertOut { name: "overall".into(), adapter: Some(params.adapter()) }],
        heads: group.heads(),
        aggregator: None,
        combine: None,
    };
    let backbone = BackboneFiles { dir: frozen.dir.clone(), spec: frozen.spec.clone() };
    let export = BundleOut {
        name: None,
        description: None,
        backbone: &backbone,
        input: input(),
        pooling: Pooling::Cls,
        router: None,
        tasks: vec![task],
    };
    write_bundle(&out, &export).unwrap();
    let model = RewardModel::load(&out, DeviceChoice::Cpu).unwrap();
    let convs = [
        Conversation::new("what is the capital of france?", "the capital of france is paris."),
        Conversation::new("what is the capital of france?", "the dog."),
        Conversation::new("tell me a joke!", "why did the chicken cross the road?"),
        Conversation::new("tell me a joke!", "eight legs."),
    ];
    let scores = model.score_batch(&convs).unwrap();
    for (s, want) in scores.iter().zip(&trainer_rewards) {
        assert!((s.reward - want).abs() < 1e-4, "bundle {} vs trainer {want}", s.reward);
    }
    // The LoRA really changes the scores (B is not zero), so the check above covers it.
    let bare = read(obj.rewards(&obj.init(&mut Rng::new(4)), &idx)).unwrap();
    assert!(bare.iter().zip(&trainer_rewards).any(|(a, b)| (a - b).abs() > 1e-3));
}

fn phase(lr: f64, batch_size: usize, max_steps: usize) -> PhaseSettings {
    PhaseSettings { lr, batch_size, max_steps, eval_every: 5, patience: 1000 }
}

#[test]
fn an_interrupted_phase_resumes_to_the_same_parameters() {
    let (frozen, layout, cache, idx) = setup();
    let groups = vec![
        Group { texts: vec![idx[0], idx[1]], pairs: vec![(0, 1)] },
        Group { texts: vec![idx[2], idx[3]], pairs: vec![(0, 1)] },
        Group { texts: vec![idx[0], idx[3]], pairs: vec![(1, 0)] },
    ];
    let obj = pairwise(&frozen, &layout, &cache, groups);
    let run = |dir: &Path, steps: usize| PhaseRun {
        dir: dir.to_path_buf(),
        label: "resume test".into(),
        settings: phase(0.01, 2, steps),
        seed: 9,
    };
    let straight = temp("straight");
    let a = run(&straight, 20).train(&obj).unwrap();

    let broken = temp("broken");
    run(&broken, 10).train(&obj).unwrap();
    // Killed after the step-10 checkpoint, before the phase finished:
    std::fs::remove_file(broken.join("result.safetensors")).unwrap();
    let b = run(&broken, 20).train(&obj).unwrap();

    assert_eq!(b.summary.steps, 20);
    assert_eq!(to_host(&a.model).unwrap(), to_host(&b.model).unwrap());
    assert_eq!(a.summary.history, b.summary.history);
    // The last checkpoints (model, Adam moments, best model) are identical too.
    let ca = record_contents(&straight.join("checkpoint.safetensors")).unwrap();
    let cb = record_contents(&broken.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ca, cb);
    // Training moved the parameters.
    let init = to_host(&obj.init(&mut Rng::new(9))).unwrap();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert!(init.iter().any(|(k, (v, _))| ca[&format!("model/tensor/{k}")] != bytes(v)));
}

/// The wgpu device (Mesa lavapipe in CI); `DMOERM_SKIP_WGPU=1` is the explicit opt-out.
fn wgpu() -> Option<Device> {
    if std::env::var("DMOERM_SKIP_WGPU").as_deref() == Ok("1") {
        eprintln!("DMOERM_SKIP_WGPU=1: training on wgpu NOT checked");
        return None;
    }
    Some(
        dmoerm::device::open(DeviceChoice::Gpu)
            .expect("a wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1)"),
    )
}

#[test]
fn wgpu_gradients_match_flex_and_training_on_wgpu_learns() {
    let Some(gpu) = wgpu() else { return };
    // Loss and gradients of the same parameters on both devices.
    let grads = |device: Device| {
        let frozen = Frozen::load(&fixture("bert/backbone"), input(), Pooling::Cls, Some(1), &device).unwrap();
        let layout = LoraLayout::new(&frozen.backbone, frozen.split, &lora()).unwrap();
        let mut cache = TextCache::default();
        let texts = [("tell me a joke!", "why did the chicken cross the road?"), ("tell me a joke!", "eight legs.")];
        let ids = texts.iter().map(|(q, r)| frozen.expert_ids(&user(q), r).unwrap()).collect();
        let idx = frozen.cache(&mut cache, ids, "texts").unwrap();
        let obj = pairwise(&frozen, &layout, &cache, vec![Group { texts: idx, pairs: vec![(0, 1)] }]);
        let tracked = random_params(&obj, 11).train();
        let out = obj.step(&tracked, &[0]).unwrap().unwrap();
        let loss = read(out.loss.clone()).unwrap()[0];
        let g = GradientsParams::from_grads(out.loss.backward(), &tracked);
        let grads: Vec<(String, Vec<f32>)> =
            grads_by_path(&tracked, &g).unwrap().into_iter().map(|(n, (v, _))| (n, v)).collect();
        // five steps of training on this device lower the loss
        let run = PhaseRun {
            dir: temp(&format!("{device:?}").replace(['(', ')', ' ', ':'], "")),
            label: "wgpu".into(),
            settings: phase(0.01, 1, 5),
            seed: 3,
        };
        let trained = run.train(&obj).unwrap();
        let after = read(obj.step(&trained.model, &[0]).unwrap().unwrap().loss).unwrap()[0];
        (loss, grads, after)
    };
    let (cpu_loss, cpu_grads, _) = grads(Device::flex());
    let (gpu_loss, gpu_grads, gpu_after) = grads(gpu);
    assert!((cpu_loss - gpu_loss).abs() < 1e-5, "loss: wgpu {gpu_loss} vs flex {cpu_loss}");
    for ((name, want), (_, got)) in cpu_grads.iter().zip(&gpu_grads) {
        // lavapipe's f32 kernels differ from flex's by ~1e-4 relative in the forward pass
        // (see the parity tests); gradients are compared relative to the tensor's scale.
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // (the pairwise loss does not depend on the head's bias: its gradient is 0)
        assert!(scale > 0.0 || name == "head.bias", "{name}: no gradient");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 3e-3 * scale + 1e-7, "{name}: wgpu {g} vs flex {w} (scale {scale})");
        }
    }
    assert!(gpu_after < gpu_loss, "training on wgpu: loss {gpu_loss} -> {gpu_after}");
}

/// The fixture config with validation = training data, so "validation accuracy" is the
/// training accuracy.
fn overfit_config(out: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::load(&fixture("train/train.toml")).unwrap();
    cfg.out = out.to_path_buf();
    cfg.data.valid = cfg.data.train.clone();
    cfg.data.capabilities_valid = cfg.data.capabilities_train.clone();
    cfg.router = phase(0.05, 8, 60);
    cfg.phase1 = phase(0.02, 4, 100);
    cfg.phase2 = phase(0.02, 8, 150);
    cfg.phase3 = phase(0.01, 4, 100);
    for p in [&mut cfg.router, &mut cfg.phase1, &mut cfg.phase2, &mut cfg.phase3] {
        p.patience = 8; // stop soon after 100%: nothing beats it
    }
    cfg
}

#[test]
fn a_tiny_model_overfits_tiny_data_in_every_phase_and_the_bundle_agrees() {
    let out = temp("overfit");
    let mut p = Pipeline::open(overfit_config(&out), Device::flex()).unwrap();
    let bundle = p.all().unwrap();

    let router = p.router().unwrap().unwrap();
    assert_eq!(router.summary.best_valid_accuracy, 1.0, "router: {:?}", router.summary.history);
    for t in p.phase1().unwrap() {
        assert_eq!(t.summary.best_valid_accuracy, 1.0, "{}: {:?}", t.summary.label, t.summary.history);
    }
    for t in p.phase2().unwrap().iter().flatten() {
        assert_eq!(t.summary.best_valid_accuracy, 1.0, "{}: {:?}", t.summary.label, t.summary.history);
    }
    let phase3 = p.phase3().unwrap();
    for t in phase3.iter().flatten() {
        assert_eq!(t.summary.best_valid_accuracy, 1.0, "{}: {:?}", t.summary.label, t.summary.history);
        assert!(out.join(format!("phase3/{}/curve.svg", t.summary.label.trim_start_matches("phase 3 "))).exists());
    }
    assert!(out.join("config.toml").exists());

    // The bundle routes and orders the training data as the phases did.
    let model = RewardModel::load(&bundle, DeviceChoice::Cpu).unwrap();
    let data = dmoerm_data::read_preferences(&fixture("train/train.jsonl")).unwrap();
    let report = dmoerm_data::evaluate(&model, &data, |_, _| {}).unwrap();
    assert_eq!(report.router_accuracy, Some(1.0));
    assert_eq!(report.accuracy, 1.0, "{report:?}");
    let bon = report.bon.unwrap();
    assert_eq!(bon.model, bon.oracle);
    assert!(bon.random < bon.oracle);
}
