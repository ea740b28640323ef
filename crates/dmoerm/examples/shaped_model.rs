//! Writes a Hugging Face reward model of a real one's exact shape, with pseudo-random weights:
//! what `scripts/gpu-check.sh` times on a machine that can neither download a checkpoint nor
//! run transformers (speed and memory do not depend on the values).
//!
//!     cargo run --release -p dmoerm --example shaped_model -- SHAPE OUT [f16|bf16|f32]
//!
//! SHAPE is one of
//! - `qwen3-0.6b`: `Qwen3ForSequenceClassification`, hidden 1024, 28 layers, 16 query / 8 KV
//!   heads of 128, MLP 3072, vocabulary 151,936 (Skywork-Reward-V2-Qwen3-0.6B);
//! - `llama-3.2-1b`: `LlamaForSequenceClassification`, hidden 2048, 16 layers, 32 / 8 heads of
//!   64, MLP 8192, vocabulary 128,256 (Skywork-Reward-V2-Llama-3.2-1B);
//! - `tiny-qwen3`: the Qwen3 layout at hidden 64, 8 layers (a dry run on a software adapter).
//!
//! OUT gets `config.json`, `model.safetensors` (default f16, as most checkpoints ship: bf16
//! loads the same way) and the tokenizer, its config and chat template of the
//! `tests/fixtures/hf_qwen3_multilabel` fixture, whose ids fit every vocabulary here (read from
//! `DMOERM_REPO_ROOT`, else the current directory). The projections' weights are uniform with
//! transformers' standard deviation (0.02), the norms' are 1, from a fixed seed.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};
use serde_json::json;

/// A model's shape: (model type, architecture, hidden, layers, heads, KV heads, head dim, MLP,
/// vocabulary, RoPE theta, RMSNorm eps).
struct Shape {
    model_type: &'static str,
    architecture: &'static str,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    mlp: usize,
    vocab: usize,
    rope_theta: f64,
    eps: f64,
}

impl Shape {
    fn named(name: &str) -> Option<Self> {
        let qwen3 = Shape {
            model_type: "qwen3",
            architecture: "Qwen3ForSequenceClassification",
            hidden: 1024,
            layers: 28,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            mlp: 3072,
            vocab: 151_936,
            rope_theta: 1_000_000.0,
            eps: 1e-6,
        };
        match name {
            "qwen3-0.6b" => Some(qwen3),
            "llama-3.2-1b" => Some(Shape {
                model_type: "llama",
                architecture: "LlamaForSequenceClassification",
                hidden: 2048,
                layers: 16,
                heads: 32,
                kv_heads: 8,
                head_dim: 64,
                mlp: 8192,
                vocab: 128_256,
                rope_theta: 500_000.0,
                eps: 1e-5,
            }),
            "tiny-qwen3" => Some(Shape {
                hidden: 64,
                layers: 8,
                heads: 4,
                kv_heads: 2,
                head_dim: 16,
                mlp: 192,
                vocab: 512,
                ..qwen3
            }),
            _ => None,
        }
    }

    fn config(&self) -> serde_json::Value {
        json!({
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.mlp,
            "vocab_size": self.vocab,
            "hidden_act": "silu",
            "max_position_embeddings": 40960,
            "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta,
            "attention_bias": false,
            "tie_word_embeddings": true,
            "pad_token_id": 0,
            "id2label": {"0": "LABEL_0"},
            "label2id": {"LABEL_0": 0},
        })
    }

    /// Every tensor's name and shape, PyTorch's layout (`[out, in]` for a projection).
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, q, kv) = (self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for i in 0..self.layers {
            let at = |name: &str| format!("model.layers.{i}.{name}.weight");
            out.push((at("input_layernorm"), vec![h]));
            out.push((at("self_attn.q_proj"), vec![q, h]));
            out.push((at("self_attn.k_proj"), vec![kv, h]));
            out.push((at("self_attn.v_proj"), vec![kv, h]));
            out.push((at("self_attn.o_proj"), vec![h, q]));
            if self.model_type == "qwen3" {
                out.push((at("self_attn.q_norm"), vec![self.head_dim]));
                out.push((at("self_attn.k_norm"), vec![self.head_dim]));
            }
            out.push((at("post_attention_layernorm"), vec![h]));
            out.push((at("mlp.gate_proj"), vec![self.mlp, h]));
            out.push((at("mlp.up_proj"), vec![self.mlp, h]));
            out.push((at("mlp.down_proj"), vec![h, self.mlp]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        out.push(("score.weight".to_string(), vec![1, h]));
        out
    }
}

/// A tensor made when it is written: 1 for a norm's weight (rank 1), else uniform values of
/// standard deviation 0.02 from `seed`.
struct Made {
    shape: Vec<usize>,
    dtype: Dtype,
    seed: u64,
}

impl Made {
    fn values(&self) -> Vec<f32> {
        let n: usize = self.shape.iter().product();
        if self.shape.len() == 1 {
            return vec![1.0; n];
        }
        // xorshift64: uniform in [-a, a), a = 0.02 * sqrt(3)
        let mut x = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let a = 0.02 * 3f32.sqrt();
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
            })
            .collect()
    }
}

impl View for Made {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let values = self.values();
        let bytes = match self.dtype {
            Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        };
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        let width = match self.dtype {
            Dtype::F16 | Dtype::BF16 => 2,
            _ => 4,
        };
        self.shape.iter().product::<usize>() * width
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: shaped_model qwen3-0.6b|llama-3.2-1b|tiny-qwen3 OUT [f16|bf16|f32]";
    let (Some(name), Some(out)) = (args.get(1), args.get(2)) else { return Err(usage.into()) };
    let shape = Shape::named(name).ok_or(usage)?;
    let dtype = match args.get(3).map_or("f16", String::as_str) {
        "f16" => Dtype::F16,
        "bf16" => Dtype::BF16,
        "f32" => Dtype::F32,
        _ => return Err(usage.into()),
    };
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&shape.config())?)?;
    let root = std::env::var_os("DMOERM_REPO_ROOT").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let fixture = root.join("tests/fixtures/hf_qwen3_multilabel");
    for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(fixture.join(file), out.join(file))
            .map_err(|e| format!("{}: {e}", fixture.join(file).display()))?;
    }
    let tensors = shape.tensors();
    let params: usize = tensors.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let made =
        tensors.into_iter().enumerate().map(|(i, (key, shape))| (key, Made { shape, dtype, seed: i as u64 + 1 }));
    safetensors::tensor::serialize_to_file(made, None, &out.join("model.safetensors"))?;
    println!("{name}: {params} parameters, {dtype:?}, in {}", out.display());
    Ok(())
}
