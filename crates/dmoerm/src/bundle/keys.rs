//! Every file and tensor name a bundle uses, in one place (`docs/bundle-format.md`). The
//! modules load and save under prefixes built here; nothing else spells a key.

/// A linear layer's weight (`[out, in]`, PyTorch's layout) under its prefix.
pub const WEIGHT: &str = "weight";
/// A linear layer's bias.
pub const BIAS: &str = "bias";

/// The aggregator MLP as PyTorch's `nn.Sequential(Linear, PReLU, Linear)` names its parts.
pub mod aggregator {
    /// `Linear(k*H -> H)`.
    pub const FC1: &str = "0";
    /// `PReLU` (its slopes are `1.weight`, 1 or H of them).
    pub const ACT: &str = "1";
    /// `Linear(H -> 1)`.
    pub const FC2: &str = "2";
}

/// PEFT's adapter files and tensor names.
pub mod peft {
    /// The adapter's config, in its directory.
    pub const CONFIG: &str = "adapter_config.json";
    /// The adapter's weights, in its directory.
    pub const WEIGHTS: &str = "adapter_model.safetensors";
    /// The prefix PEFT writes before a module path.
    pub const MODEL_PREFIX: &str = "base_model.model.";

    /// `base_model.model.<module>.lora_A.weight` (`[r, in]`).
    pub fn lora_a(module: &str) -> String {
        format!("{MODEL_PREFIX}{module}.lora_A.weight")
    }

    /// `base_model.model.<module>.lora_B.weight` (`[out, r]`).
    pub fn lora_b(module: &str) -> String {
        format!("{MODEL_PREFIX}{module}.lora_B.weight")
    }
}

/// The layout a written bundle directory has (a hand-made bundle may place its files anywhere
/// the manifest says).
pub mod layout {
    /// The backbone's HF files.
    pub const BACKBONE_DIR: &str = "backbone";
    /// The router head and every expert's value head.
    pub const HEADS_FILE: &str = "heads.safetensors";
    /// The router head's prefix in [`HEADS_FILE`].
    pub const ROUTER_HEAD: &str = "router";

    /// An expert's value head's prefix in [`HEADS_FILE`]: `<task>.<expert>`.
    pub fn expert_head(task: &str, expert: &str) -> String {
        format!("{task}.{expert}")
    }

    /// An expert's PEFT adapter directory: `tasks/<task>/<expert>`.
    pub fn expert_adapter(task: &str, expert: &str) -> String {
        format!("tasks/{task}/{expert}")
    }

    /// A task's aggregator file: `aggregator_<task>.safetensors`.
    pub fn aggregator_file(task: &str) -> String {
        format!("aggregator_{task}.safetensors")
    }
}

/// `"file#name"`: a tensor prefix inside a file, as the manifest refers to heads.
pub fn reference(file: &str, name: &str) -> String {
    format!("{file}#{name}")
}

/// `"file#name"` -> (`"file"`, `"name"`); `"file"` -> (`"file"`, `""`: the file's top).
pub fn split_ref(reference: &str) -> (&str, &str) {
    reference.split_once('#').unwrap_or((reference, ""))
}

/// `<dir>/adapter_config.json`
pub fn adapter_config_path(dir: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), peft::CONFIG)
}

/// `<dir>/adapter_model.safetensors`
pub fn adapter_weights_path(dir: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), peft::WEIGHTS)
}
