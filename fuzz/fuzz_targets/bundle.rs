//! Fuzzes everything that parses bundle input: the manifest, HF and PEFT configs, the
//! tokenizer, and whole packed files (header, metadata, manifest, tokenizer, tensors, shapes).
//! Any input must give `Ok` or a typed `Err`, never a panic: libfuzzer-sys aborts on every
//! panic, also on one that `parse_tokenizer` catches natively (in wasm it would be a trap).
#![no_main]

use dmoerm::backbones::{bert::BertConfig, llama::LlamaConfig};
use dmoerm::bundle::Manifest;
use dmoerm::lora::LoraConfig;
use dmoerm::{Device, RewardModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Manifest::parse("fuzz.json", &text);
    let _ = LlamaConfig::parse("config.json", &text);
    let _ = BertConfig::parse("config.json", &text);
    let _ = LoraConfig::parse("adapter_config.json", &text);
    let _ = dmoerm::text::parse_tokenizer("tokenizer.json", &text);
    let _ = RewardModel::from_packed_bytes("fuzz.safetensors", data.to_vec(), Device::flex());
});
