//! Parity with the PyTorch reference (transformers + peft) on every backbone family, on the
//! CPU (`flex`) and through wgpu, for directory and packed bundles.

use dmoerm::{Device, DeviceChoice, PackDtype, RewardModel};
use dmoerm_testkit::fixtures::{self as common, check_model, expected, fixture_dir, FIXTURES};

fn cpu(name: &str) -> RewardModel {
    RewardModel::load_on(fixture_dir(name), Device::flex()).expect("fixture bundle loads")
}

/// The wgpu device. A missing adapter fails the test: CI installs Mesa's lavapipe.
/// `DMOERM_SKIP_WGPU=1` is the explicit opt-out for machines without Vulkan.
fn gpu() -> Option<Device> {
    if std::env::var("DMOERM_SKIP_WGPU").as_deref() == Ok("1") {
        eprintln!("DMOERM_SKIP_WGPU=1: wgpu parity NOT checked");
        return None;
    }
    Some(
        dmoerm::device::open(DeviceChoice::Gpu)
            .expect("a wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1)"),
    )
}

#[test]
fn tokenization_and_truncation_match_reference() {
    for name in FIXTURES {
        let model = cpu(name);
        for (i, input) in expected(name).inputs.iter().enumerate() {
            let enc = model.encode(&input.conversation()).unwrap();
            assert_eq!(enc.expert.ids, input.expert_ids, "{name} input {i}: expert token ids");
            assert_eq!(enc.router.map(|r| r.ids), input.router_ids, "{name} input {i}: router token ids");
            assert!(enc.expert.ids.len() <= model.manifest().input.max_length);
        }
    }
}

/// A tokenizer.json with its own padding and truncation (as sentence-transformers exports
/// have) tokenizes exactly like one without: the bundle's max_length and policy rule.
#[test]
fn the_tokenizers_padding_and_truncation_settings_are_ignored() {
    let src = fixture_dir("bert");
    let dir = std::env::temp_dir().join(format!("dmoerm-padded-tokenizer-{}", std::process::id()));
    copy_dir(&src, &dir);
    let path = dir.join("backbone/tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["padding"] = serde_json::json!({"strategy": {"Fixed": 60}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    tok["truncation"] =
        serde_json::json!({"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0});
    std::fs::write(&path, tok.to_string()).unwrap();
    let padded = RewardModel::load(&dir, DeviceChoice::Cpu).unwrap();
    let plain = cpu("bert");
    for input in &expected("bert").inputs {
        let conv = input.conversation();
        assert_eq!(padded.encode(&conv).unwrap(), plain.encode(&conv).unwrap());
        assert_eq!(padded.score(&conv).unwrap(), plain.score(&conv).unwrap());
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

macro_rules! parity_tests {
    ($($name:ident),*) => {
        mod flex {
            $(#[test] fn $name() { super::check_model(stringify!($name), &super::cpu(stringify!($name))); })*
        }
        mod wgpu {
            $(#[test] fn $name() {
                if let Some(device) = super::gpu() {
                    let model = super::RewardModel::load_on(super::fixture_dir(stringify!($name)), device).unwrap();
                    super::check_model(stringify!($name), &model);
                }
            })*
        }
    };
}

parity_tests!(
    llama,
    llama3_rope,
    qwen2,
    qwen3,
    bert,
    bert_mean,
    plain_rm,
    mistral_window,
    qwen2_window,
    hf_llama3,
    hf_qwen2,
    hf_mistral,
    hf_qwen3_multilabel,
    hf_bert
);

#[test]
fn packed_bundle_scores_like_its_directory() {
    for name in ["llama", "bert"] {
        let (bytes, report) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::Keep).unwrap();
        assert_eq!(report.bytes, bytes.len());
        let packed = RewardModel::from_packed_bytes(name, bytes, Device::flex()).unwrap();
        let dir = cpu(name);
        let exp = expected(name);
        let convs: Vec<_> = exp.inputs.iter().map(|i| i.conversation()).collect();
        // identical weights, identical code: identical numbers
        assert_eq!(packed.score_batch(&convs).unwrap(), dir.score_batch(&convs).unwrap(), "{name}");
        check_model(name, &packed);
    }
}

/// A packed file behind [`ReadAt`], recording the size of every read where the test sees it.
#[derive(Debug)]
struct CountingReader {
    bytes: Vec<u8>,
    reads: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl dmoerm::weights::ReadAt for CountingReader {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.lock().unwrap().push(buf.len());
        self.bytes.read_exact_at(buf, offset)
    }
}

#[test]
fn packed_bundle_loads_from_a_reader_one_tensor_at_a_time() {
    use dmoerm::weights::SafetensorsBuffer;
    for name in ["llama", "bert"] {
        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::Keep).unwrap();
        let (largest, _) = SafetensorsBuffer::parse(name, bytes.clone()).unwrap().loaded_bytes(false, None);
        let reader = CountingReader { bytes: bytes.clone(), reads: Default::default() };
        let reads = reader.reads.clone();
        let lazy = RewardModel::from_packed_reader(name, Box::new(reader), Device::flex()).unwrap();
        let reads = reads.lock().unwrap().clone();
        // no read is larger than one tensor (at most 4 bytes a value as f32; the header aside), and no
        // byte is read twice
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert!(
            reads.iter().all(|&n| n as u64 <= largest.max(header as u64)),
            "{name}: reads {reads:?}, largest tensor {largest} bytes as f32"
        );
        assert!(
            reads.iter().sum::<usize>() <= bytes.len(),
            "{name}: read {} of {} bytes",
            reads.iter().sum::<usize>(),
            bytes.len()
        );
        let exp = expected(name);
        let convs: Vec<_> = exp.inputs.iter().map(|i| i.conversation()).collect();
        let in_memory = RewardModel::from_packed_bytes(name, bytes, Device::flex()).unwrap();
        assert_eq!(lazy.score_batch(&convs).unwrap(), in_memory.score_batch(&convs).unwrap(), "{name}");
    }
}

#[test]
fn int8_and_q4_packed_bundles_store_each_matrix_quantised_and_stay_close() {
    use dmoerm::quant::{Q4Matrix, Q4_BLOCK};
    use dmoerm::weights::{quantize_rows, SafetensorsBuffer, TensorFile};
    use std::sync::Arc;
    // the fixtures' matrices are small: quantise all of them
    let formats = [("int8", PackDtype::Int8 { min_elements: 0 }), ("q4", PackDtype::Q4 { min_elements: 0 })];
    for (name, (format, dtype)) in ["llama", "bert"].into_iter().flat_map(|n| formats.map(|f| (n, f))) {
        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), dtype).unwrap();
        let (keep, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::Keep).unwrap();
        let (half, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::F16).unwrap();
        assert!(bytes.len() < half.len(), "{name}: {format} {} vs f16 {}", bytes.len(), half.len());

        // Every rank-2 tensor reads back as exactly its quantisation (q4 where its rows are
        // whole blocks and the format is q4, else int8 per row); the rest as f16.
        let packed =
            TensorFile::new(format, Arc::new(SafetensorsBuffer::parse(format, bytes.clone()).unwrap()), "".into());
        let original = TensorFile::new("keep", Arc::new(SafetensorsBuffer::parse("keep", keep).unwrap()), "".into());
        let names = original.names();
        assert_eq!(packed.names(), names, "scales are not listed as tensors");
        let (mut int8, mut q4) = (0, 0);
        for tensor in &names {
            let (want, shape) = original.read_f32(tensor, None).unwrap();
            let (got, got_shape) = packed.read_f32(tensor, None).unwrap();
            assert_eq!((packed.shape(tensor).unwrap(), &got_shape), (shape.clone(), &shape), "{tensor}");
            if shape.len() == 2 && format == "q4" && shape[1] % Q4_BLOCK == 0 {
                let m = Q4Matrix::quantize(&want, shape[0]).unwrap();
                let expected: Vec<f32> = (0..shape[0]).flat_map(|r| m.row(r).unwrap()).collect();
                assert_eq!(got, expected, "{tensor}");
                q4 += 1;
            } else if shape.len() == 2 {
                let (codes, scales) = quantize_rows(&want, shape[0]);
                let cols = shape[1];
                for (i, (g, q)) in got.iter().zip(&codes).enumerate() {
                    assert_eq!(*g, *q as f32 * scales[i / cols], "{tensor}[{i}]");
                }
                int8 += 1;
            } else {
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-3 * w.abs().max(1e-2), "{tensor}: {g} vs {w}");
                }
            }
        }
        assert!(int8 + q4 > 10, "{name}: {int8} int8 and {q4} q4 matrices");
        if format == "q4" {
            assert!(q4 >= 2, "{name}: {q4} q4 matrices (the MLPs' down projections have 64 inputs)");
        }

        // Scores move by quantisation noise only, these models being tiny (hidden size 32: a
        // row's rounding error does not average out). Int8 weights alone (expanded to f32, as on
        // an autodiff device): within 5% of the range of the rewards. Q4 weights (16 levels a
        // block) move these rewards by up to 75% of their range (bert's range is 0.46): their
        // values are pinned above, the quantiser's error bound is tested in dmoerm-quant, and the
        // default model's drift is measured in BENCHMARKS.md. The CPU kernel adds the
        // activations' int8 rounding to the weights' error: within 10% of the range of the
        // expanded weights' rewards, for both formats.
        let exp = expected(name);
        let rewards: Vec<f32> = exp.inputs.iter().map(|i| i.expected.reward).collect();
        let range = rewards.iter().cloned().fold(f32::MIN, f32::max) - rewards.iter().cloned().fold(f32::MAX, f32::min);
        let expanded = RewardModel::from_packed_bytes(name, bytes.clone(), Device::flex().autodiff()).unwrap();
        let kernel = RewardModel::from_packed_bytes(name, bytes.clone(), Device::flex()).unwrap();
        for input in &exp.inputs {
            let want = input.expected.reward;
            let weights = expanded.score(&input.conversation()).unwrap().reward;
            let both = kernel.score(&input.conversation()).unwrap().reward;
            if format == "int8" {
                assert!((weights - want).abs() < 0.05 * range, "{name} {format}, weights: {weights} vs {want}");
            }
            assert!((both - weights).abs() < 0.10 * range, "{name} {format}, kernel: {both} vs {weights}");
        }
    }
}

/// On a GPU, an int8 or q4 bundle's matrices stay quantised as on the CPU (projections as
/// their codes, which `kernels::gpu::linear_quant` reads; embedding tables on the host), and
/// the scores are those of the same weights expanded to f32 (the GPU computes in f32 on the
/// dequantised values: only the order of the sums differs).
#[test]
fn int8_and_q4_bundles_stay_quantised_on_wgpu_and_score_as_their_expanded_weights() {
    let Some(device) = gpu() else { return };
    let formats = [PackDtype::Int8 { min_elements: 0 }, PackDtype::Q4 { min_elements: 0 }];
    // a DMoERM (LoRA experts), an encoder, and plain reward models of the Llama family, whose
    // layers take the fused products (gated MLP, residual) and Qwen3's fused norms and rope
    let names = ["llama", "bert", "hf_qwen3_multilabel", "hf_llama3"];
    for (name, dtype) in names.into_iter().flat_map(|n| formats.map(|f| (n, f))) {
        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), dtype).unwrap();
        let expanded = RewardModel::from_packed_bytes(name, bytes.clone(), Device::flex().autodiff()).unwrap();
        let on_cpu = RewardModel::from_packed_bytes(name, bytes.clone(), Device::flex()).unwrap();
        let on_gpu = RewardModel::from_packed_bytes(name, bytes, device.clone()).unwrap();
        let quantized = on_gpu.backbone().quantized_params();
        assert_eq!(expanded.backbone().quantized_params(), 0, "{name} {dtype:?}: autodiff expands");
        assert_eq!(quantized, on_cpu.backbone().quantized_params(), "{name} {dtype:?}: GPU against CPU");
        // every matrix: all the parameters but the norms, biases and (Llama) nothing else
        assert!(quantized * 10 > on_gpu.backbone().num_params() * 9, "{name} {dtype:?}: {quantized} quantised");
        assert_same_scores(&format!("{name} {dtype:?}"), &on_gpu, &expanded, name);
    }
}

/// `got` scores the fixture `name`'s inputs as `want` does, within 1e-4 (relative above 1):
/// the same weights, summed in another order. Returns the worst |reward error| of `got`
/// against the f32 reference.
fn assert_same_scores(what: &str, got: &RewardModel, want: &RewardModel, name: &str) -> f32 {
    let mut worst = 0.0f32;
    for input in &expected(name).inputs {
        let (g, w) = (got.score(&input.conversation()).unwrap(), want.score(&input.conversation()).unwrap());
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        assert!(close(g.reward, w.reward), "{what}: reward {} vs {}", g.reward, w.reward);
        assert_eq!(g.task, w.task, "{what}");
        for ((task, g), (_, w)) in
            g.task_probs.iter().chain(&g.capabilities).zip(w.task_probs.iter().chain(&w.capabilities))
        {
            assert!(close(*g, *w), "{what}: {task} {g} vs {w}");
        }
        worst = worst.max((g.reward - input.expected.reward).abs());
    }
    worst
}

/// On a GPU with f16 in shaders (lavapipe has it), an f16 bundle's matrices (projections and
/// embedding tables) stay f16, half the memory of f32; the model computes in f32 on them, so
/// the scores are those of the same bundle on the CPU, which expands them to f32. Against the
/// f32 reference the difference is the bundle's rounding to f16.
#[test]
fn f16_bundles_stay_f16_on_wgpu_and_score_as_their_expanded_weights() {
    let Some(device) = gpu() else { return };
    for name in ["llama", "bert"] {
        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::F16).unwrap();
        let on_cpu = RewardModel::from_packed_bytes(name, bytes.clone(), Device::flex()).unwrap();
        let on_gpu = RewardModel::from_packed_bytes(name, bytes, device.clone()).unwrap();
        assert_eq!(on_cpu.backbone().half_params(), 0, "{name}: the CPU expands f16");
        // every matrix: all the parameters but the norms and biases (lavapipe has f16 in
        // shaders, as most Vulkan GPUs do)
        let half = on_gpu.backbone().half_params();
        assert!(half * 10 > on_gpu.backbone().num_params() * 9, "{name}: {half} f16 (does the adapter have f16?)");
        let worst = assert_same_scores(name, &on_gpu, &on_cpu, name);
        eprintln!("{name}: f16 bundle on the GPU against the f32 reference: worst |reward error| {worst:e}");
    }
}

/// A checkpoint stored in bf16 (as most Hugging Face reward models are) loads on the CPU
/// expanded to f32 and, on a GPU with f16 in shaders, as f16 (WebGPU has no bf16; f16 holds
/// bf16's significant bits exactly, only the values below f16's normal range round): the
/// same scores within 1e-4 either way.
#[test]
fn a_bf16_checkpoint_scores_alike_on_the_cpu_and_as_f16_on_wgpu() {
    let Some(device) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("dmoerm-bf16-{}", std::process::id()));
    copy_dir(&fixture_dir("bert"), &dir);
    let path = dir.join("backbone/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = dmoerm::weights::to_f32(view.data(), view.dtype()).expect("float tensors");
            let data = values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, data)| {
        (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data).unwrap())
    });
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let on_cpu = RewardModel::load_on(&dir, Device::flex()).unwrap();
    let on_gpu = RewardModel::load_on(&dir, device).unwrap();
    let half = on_gpu.backbone().half_params();
    assert!(half * 10 > on_gpu.backbone().num_params() * 9, "{half} f16");
    let worst = assert_same_scores("bert bf16", &on_gpu, &on_cpu, "bert");
    eprintln!("bert in bf16 against the f32 reference: worst |reward error| {worst:e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn f16_packed_bundle_stays_close() {
    let (bytes, _) = dmoerm::pack_bytes(&fixture_dir("llama"), PackDtype::F16).unwrap();
    let (full, _) = dmoerm::pack_bytes(&fixture_dir("llama"), PackDtype::Keep).unwrap();
    // every f32 tensor shrinks to half; text (tokenizer, configs) stays
    let st = safetensors::SafeTensors::deserialize(&full).unwrap();
    let f32_bytes: usize =
        st.tensors().iter().filter(|(_, v)| v.dtype() == safetensors::Dtype::F32).map(|(_, v)| v.data().len()).sum();
    let saved = (full.len() - bytes.len()) as f64;
    assert!(
        (saved - f32_bytes as f64 / 2.0).abs() < 0.01 * f32_bytes as f64,
        "saved {saved} bytes of {f32_bytes} f32 bytes"
    );
    let st16 = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st16.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::F16));
    let half = RewardModel::from_packed_bytes("llama-f16", bytes, Device::flex()).unwrap();
    let exp = expected("llama");
    for input in &exp.inputs {
        let got = half.score(&input.conversation()).unwrap();
        assert!(
            (got.reward - input.expected.reward).abs() < 0.05,
            "f16 reward {} vs {}",
            got.reward,
            input.expected.reward
        );
    }
}

#[test]
fn model_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RewardModel>();
    let model = std::sync::Arc::new(cpu("llama"));
    let exp = expected("llama");
    std::thread::scope(|s| {
        for input in &exp.inputs {
            let model = model.clone();
            s.spawn(move || {
                let got = model.score(&input.conversation()).unwrap();
                common::assert_score("thread", &got, &input.expected, exp.tolerance);
            });
        }
    });
}

/// A batch of conversations of different lengths runs packed on the CPU (the sequences one
/// after another, no padding: `Backbone::pooled` without adapters) and gives the states the
/// padded batch gives, on every backbone family, with int8 projections too.
#[test]
fn a_batch_of_mixed_lengths_runs_packed_with_the_padded_batchs_states() {
    use dmoerm::backbones::TokenBatch;
    let int8 = |name: &str| {
        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::Int8 { min_elements: 0 }).unwrap();
        RewardModel::from_packed_bytes(name, bytes, Device::flex()).unwrap()
    };
    let models = FIXTURES.iter().map(|&name| (name.to_string(), cpu(name)));
    let models = models.chain(["qwen3", "bert"].map(|name| (format!("{name} int8"), int8(name))));
    for (name, model) in models {
        let base = name.split(' ').next().unwrap_or_default();
        let encoded: Vec<_> =
            expected(base).inputs.iter().map(|i| model.encode(&i.conversation()).unwrap().expert).collect();
        let rows: Vec<Vec<u32>> = encoded.iter().map(|e| e.ids.clone()).collect();
        let types: Vec<Vec<u32>> = encoded.iter().map(|e| e.type_ids.clone()).collect();
        let pad = model.encoder().format().pad_token_id;
        let batch = TokenBatch::new(&rows, pad, &Device::flex()).with_type_ids(&types);
        let packed = batch.packed().expect("rows of different lengths on the CPU pack");
        let total: usize = rows.iter().map(Vec::len).sum();
        assert_eq!(packed.dims(), [1, total], "{name}: one row of the real tokens");
        let (backbone, pooling) = (model.backbone(), model.manifest().pooling);
        let padded = backbone.pool(backbone.forward(&batch, None), &batch, pooling);
        let values = |t: burn::tensor::Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let (want, got) = (values(padded), values(backbone.pooled(&batch, None, pooling)));
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
        assert!(worst <= 1e-5, "{name}: packed states differ from padded ones by {worst:e}");
    }
}

/// On wgpu a pass's rows are padded to a multiple of 4 tokens (so that kernels compile once
/// whatever the lengths): every backbone family's states of a sequence padded (here to a
/// multiple of 16, more padding) are its states unpadded.
#[test]
fn on_wgpu_states_padded_to_a_length_step_are_the_unpadded_ones() {
    use dmoerm::backbones::TokenBatch;
    let Some(device) = gpu() else { return };
    for name in FIXTURES {
        let model = RewardModel::load_on(fixture_dir(name), device.clone()).expect("fixture bundle loads on wgpu");
        let (backbone, pooling) = (model.backbone(), model.manifest().pooling);
        let format = model.encoder().format();
        let values = |t: burn::tensor::Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let mut longer = 0;
        for input in &expected(name).inputs {
            let encoded = model.encode(&input.conversation()).unwrap().expert;
            // the input, and its first two thirds (shorter than a truncated input's limit)
            for len in [encoded.ids.len(), encoded.ids.len() * 2 / 3] {
                let rows = vec![encoded.ids[..len].to_vec()];
                let types = vec![encoded.type_ids[..len.min(encoded.type_ids.len())].to_vec()];
                let exact = TokenBatch::new(&rows, format.pad_token_id, &device).with_type_ids(&types);
                let padded = TokenBatch::padded_to(&rows, format.pad_token_id, 16, format.max_length, &device)
                    .with_type_ids(&types);
                let [_, s] = padded.dims();
                assert!(s == len.next_multiple_of(16) || s == format.max_length, "{name}: {len} padded to {s}");
                longer += usize::from(s > len);
                let want = values(backbone.pooled(&exact, None, pooling));
                let got = values(backbone.pooled(&padded, None, pooling));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
                assert!(worst <= 1e-5, "{name}: {len} tokens padded to {s}: states differ by {worst:e}");
            }
        }
        assert!(longer > 0, "{name}: no input was padded");
    }
}

/// On the CPU an int8 bundle's embedding table stays int8 everywhere, and its projections stay
/// int8 where the CPU has an int8 kernel (x86-64 with AVX2, ARM64 with `sdot`: the ARM64 runs
/// under qemu check both kinds of CPU); elsewhere they are expanded to f32 when they load.
#[test]
fn an_int8_bundle_holds_its_projections_as_int8_where_the_cpu_has_an_int8_kernel() {
    let (bytes, _) = dmoerm::pack_bytes(&fixture_dir("llama"), PackDtype::Int8 { min_elements: 0 }).unwrap();
    let model = RewardModel::from_packed_bytes("llama", bytes, Device::flex()).unwrap();
    let backbone = model.backbone();
    let table = backbone.vocab_size() * backbone.hidden_size();
    let projections = backbone.quantized_params() - table;
    match dmoerm::quant::Int8Linear::available() {
        true => assert!(projections > 0, "the projections stay int8"),
        false => assert_eq!(projections, 0, "no int8 kernel: the projections are f32"),
    }
}
