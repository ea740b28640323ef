//! Hugging Face reward models loaded as they are (no dmoerm.json): the chat template renders
//! what transformers renders, a directory imports and packs to the same scores, several
//! labels give one score each, and what cannot load says why. The scores themselves are
//! checked against transformers by `parity.rs` (the `hf_*` fixtures).

use dmoerm::text::Rendered;
use dmoerm::{Combine, Conversation, Device, Error, Message, PackDtype, RewardModel, Role};
use dmoerm_testkit::edit::copy_dir;
use dmoerm_testkit::fixtures::{expected, fixture_dir, HF_FIXTURES};

fn load(name: &str) -> RewardModel {
    RewardModel::load_on(fixture_dir(name), Device::flex()).expect("the Hugging Face directory loads")
}

/// The bundle error loading `dir` gives: (file, message).
fn bundle_error(dir: &std::path::Path) -> (String, String) {
    match RewardModel::load_on(dir, Device::flex()) {
        Err(Error::Bundle { file, message }) => (file, message),
        other => panic!("expected a bundle error, got {other:?}"),
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dmoerm-hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn chat_templates_render_the_text_transformers_renders() {
    let mut checked = 0;
    for name in HF_FIXTURES {
        let model = load(name);
        for (i, input) in expected(name).inputs.iter().enumerate() {
            let Some(want) = &input.chat_text else { continue };
            match model.encoder().expert_text(&input.conversation()).unwrap() {
                Rendered::Text { text, .. } => assert_eq!(&text, want, "{name} input {i}"),
                other => panic!("{name}: expected one text, got {other:?}"),
            }
            checked += 1;
        }
    }
    // four of the five fixtures have a template (BERT reads a text pair)
    assert_eq!(checked, 4 * 5 - 1, "every templated input was compared");
}

#[test]
fn a_router_reads_the_user_turns_as_the_template_renders_them() {
    let (mut rendered, mut refused) = (0, 0);
    for name in HF_FIXTURES {
        let model = load(name);
        for (i, input) in expected(name).inputs.iter().enumerate() {
            let got = model.encoder().router_text(&input.conversation());
            match (&input.router_text, &input.router_refused) {
                (Some(want), _) => {
                    match got.unwrap() {
                        Rendered::Text { text, .. } => assert_eq!(&text, want, "{name} input {i}"),
                        other => panic!("{name}: expected one text, got {other:?}"),
                    }
                    rendered += 1;
                }
                (None, Some(message)) => {
                    let err = got.expect_err("transformers' template refused these turns").to_string();
                    assert!(err.contains(message.as_str()), "{name} input {i}: {err}");
                    refused += 1;
                }
                (None, None) => {}
            }
        }
    }
    // Mistral's template refuses two user turns in a row (its role alternation check)
    assert_eq!((rendered, refused), (4 * 5 - 1 - 1, 1));
}

#[test]
fn a_template_that_refuses_a_conversation_is_an_input_error_with_its_message() {
    let model = load("hf_mistral");
    let conv = Conversation::with_messages(
        vec![
            Message { role: Role::System, content: "Be brief.".into() },
            Message { role: Role::User, content: "Hi".into() },
        ],
        "Hello.",
    );
    match model.score(&conv) {
        Err(Error::Input(message)) => assert!(message.contains("Conversation roles must alternate"), "{message}"),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn several_labels_give_one_score_each_and_label_0_is_the_reward() {
    let name = "hf_qwen3_multilabel";
    let mut model = load(name);
    let exp = expected(name);
    let conv = exp.inputs[0].conversation();
    let score = model.score(&conv).unwrap();
    // in label order (id2label), label 0 the reward
    let names: Vec<&str> = score.capabilities.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["helpfulness", "correctness", "verbosity"]);
    assert_eq!(score.reward, score.capabilities[0].1);
    // another label as the reward
    assert_eq!(model.set_combine(Combine::Capability { index: 1 }), 1);
    assert_eq!(model.score(&conv).unwrap().reward, score.capabilities[1].1);
}

#[test]
fn an_imported_or_packed_directory_scores_as_the_directory_does() {
    for name in HF_FIXTURES {
        let direct = load(name);
        let convs: Vec<Conversation> = expected(name).inputs.iter().map(|i| i.conversation()).collect();
        let want = direct.score_batch(&convs).unwrap();

        let out = tmp(name);
        let manifest = dmoerm::bundle::write::import(&fixture_dir(name), &out, None).unwrap();
        assert_eq!(manifest, RewardModel::load_on(&out, Device::flex()).unwrap().manifest().clone());
        let imported = RewardModel::load_on(&out, Device::flex()).unwrap();
        assert_eq!(imported.score_batch(&convs).unwrap(), want, "{name}: imported bundle");

        let (bytes, _) = dmoerm::pack_bytes(&fixture_dir(name), PackDtype::Keep).unwrap();
        let packed = RewardModel::from_packed_bytes(name, bytes, Device::flex()).unwrap();
        assert_eq!(packed.score_batch(&convs).unwrap(), want, "{name}: packed directory");
    }
    // the reward label is chosen by name
    let out = tmp("label");
    let m = dmoerm::bundle::write::import(&fixture_dir("hf_qwen3_multilabel"), &out, Some("verbosity")).unwrap();
    assert_eq!(m.tasks[0].combine, Some(Combine::Capability { index: 2 }));
    let err = dmoerm::bundle::write::import(&fixture_dir("hf_qwen3_multilabel"), &out, Some("nope")).unwrap_err();
    assert!(err.to_string().contains("helpfulness, correctness, verbosity"), "{err}");
}

#[test]
fn a_directory_that_is_not_a_supported_reward_model_says_why() {
    // a causal LM (the llama fixture's backbone): not a reward model
    match RewardModel::load_on(fixture_dir("llama").join("backbone"), Device::flex()) {
        Err(Error::Unsupported { file, message }) => {
            assert_eq!(file, "config.json");
            assert!(
                message.contains("LlamaForCausalLM") && message.contains("LlamaForSequenceClassification"),
                "{message}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // PyTorch .bin weights only
    let dir = tmp("bin");
    copy_dir(&fixture_dir("hf_llama3"), &dir);
    std::fs::rename(dir.join("model.safetensors"), dir.join("pytorch_model.bin")).unwrap();
    let (_, message) = bundle_error(&dir);
    assert!(message.contains("safetensors"), "{message}");
    // a pad_token_id outside the vocabulary (transformers refuses the config)
    let dir = tmp("badpad");
    copy_dir(&fixture_dir("hf_qwen2"), &dir);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["pad_token_id"] = config["vocab_size"].clone();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (file, message) = bundle_error(&dir);
    assert_eq!(file, "config.json");
    assert!(message.contains("outside the vocabulary"), "{message}");
    // a chat template that renders nothing for a plain conversation
    let dir = tmp("emptytemplate");
    copy_dir(&fixture_dir("hf_llama3"), &dir);
    let only_system = "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}{% endif %}{% endfor %}";
    std::fs::write(dir.join("chat_template.jinja"), only_system).unwrap();
    let (file, message) = bundle_error(&dir);
    assert_eq!(file, "chat_template.jinja");
    assert!(message.contains("renders nothing"), "{message}");
    // a template that does not compile
    let dir = tmp("badtemplate");
    copy_dir(&fixture_dir("hf_llama3"), &dir);
    std::fs::write(dir.join("chat_template.jinja"), "{% for m in messages %}").unwrap();
    let (file, message) = bundle_error(&dir);
    assert_eq!(file, "chat_template.jinja");
    assert!(message.contains("does not compile"), "{message}");
}

/// Truncation with a chat template or a text pair follows the documented policy: the oldest
/// context goes first, the response and the template's own tokens stay.
#[test]
fn chat_templates_and_text_pairs_truncate_the_history_first() {
    for (name, max) in [("hf_qwen2", 80), ("hf_bert", 48)] {
        let out = tmp(&format!("truncate-{name}"));
        let mut manifest = dmoerm::bundle::write::import(&fixture_dir(name), &out, None).unwrap();
        let full = RewardModel::load_on(&out, Device::flex()).unwrap();
        manifest.input.max_length = max;
        std::fs::write(out.join("dmoerm.json"), serde_json::to_string(&manifest).unwrap()).unwrap();
        let short = RewardModel::load_on(&out, Device::flex()).unwrap();
        // a long prompt, a short response
        let conv = expected(name).inputs[4].conversation();
        assert!(conv.messages[0].content.len() > 200 && conv.response.len() < 40);
        let (all, cut) = (full.encode(&conv).unwrap().expert, short.encode(&conv).unwrap().expert);
        assert!(all.ids.len() > max && !all.truncated, "{name}: the input is longer than {max} tokens");
        assert!(cut.truncated && cut.ids.len() == max, "{name}: {} tokens", cut.ids.len());
        // the end (response and closing tokens) is kept whole; so is the start of the text
        let tail = 12;
        assert_eq!(cut.ids[max - tail..], all.ids[all.ids.len() - tail..], "{name}: the response stays");
        assert_eq!(cut.ids[..1], all.ids[..1], "{name}: the first (special) token stays");
        assert_eq!(cut.type_ids.len(), if name == "hf_bert" { max } else { 0 }, "{name}: token types follow the ids");
        assert!(short.score(&conv).unwrap().truncated);
    }
}

/// An input that tokenizes to nothing is an error, not an empty sequence scored.
#[test]
fn an_input_of_no_tokens_is_refused() {
    let out = tmp("notokens");
    let mut manifest = dmoerm::bundle::write::import(&fixture_dir("hf_bert"), &out, None).unwrap();
    manifest.input.text_pair = false;
    manifest.input.template = "{query}{response}".into();
    manifest.input.add_special_tokens = false;
    std::fs::write(out.join("dmoerm.json"), serde_json::to_string(&manifest).unwrap()).unwrap();
    let model = RewardModel::load_on(&out, Device::flex()).unwrap();
    let err = model.score(&Conversation::new(" ", "   ")).unwrap_err().to_string();
    assert!(err.contains("renders to no tokens"), "{err}");
    assert!(model.score(&Conversation::new("a question", "an answer")).is_ok());
}

/// A Qwen2 reward model with projections large enough to quantise (hidden 128, MLP 256, one
/// layer; the `hf_qwen2` fixture's tokenizer), its weights f32 values that f16 holds exactly
/// (`m / 4096`; the norms' `1 + j / 64`), so that `pack`'s f16 for the small tensors changes
/// nothing.
fn quantizable_qwen2(dir: &std::path::Path) {
    copy_dir(&fixture_dir("hf_qwen2"), dir);
    let config_path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    for (key, value) in [
        ("hidden_size", serde_json::json!(128)),
        ("intermediate_size", serde_json::json!(256)),
        ("num_hidden_layers", serde_json::json!(1)),
        ("layer_types", serde_json::json!(["full_attention"])),
    ] {
        config[key] = value;
    }
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (h, m, v, kv) = (128, 256, 400, 64); // kv: 2 heads of 32
    let mut seed = 7u64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 33) % 1025) as f32 / 4096.0 - 0.125
            })
            .collect()
    };
    let mut w = dmoerm::weights::TensorWriter::new();
    let l = "model.layers.0";
    for (name, shape) in [
        ("model.embed_tokens.weight".to_string(), vec![v, h]),
        (format!("{l}.self_attn.q_proj.weight"), vec![h, h]),
        (format!("{l}.self_attn.q_proj.bias"), vec![h]),
        (format!("{l}.self_attn.k_proj.weight"), vec![kv, h]),
        (format!("{l}.self_attn.k_proj.bias"), vec![kv]),
        (format!("{l}.self_attn.v_proj.weight"), vec![kv, h]),
        (format!("{l}.self_attn.v_proj.bias"), vec![kv]),
        (format!("{l}.self_attn.o_proj.weight"), vec![h, h]),
        (format!("{l}.mlp.gate_proj.weight"), vec![m, h]),
        (format!("{l}.mlp.up_proj.weight"), vec![m, h]),
        (format!("{l}.mlp.down_proj.weight"), vec![h, m]),
        (format!("{l}.input_layernorm.weight"), vec![h]),
        (format!("{l}.post_attention_layernorm.weight"), vec![h]),
        ("model.norm.weight".to_string(), vec![h]),
        ("score.weight".to_string(), vec![1, h]),
    ] {
        let n = shape.iter().product();
        let values = match name.ends_with("norm.weight") {
            true => random(n).into_iter().map(|x| 1.0 + (x * 256.0).round() / 64.0).collect(),
            false => random(n),
        };
        w.insert(name, values, shape);
    }
    w.save(&dir.join("model.safetensors"), Default::default()).unwrap();
}

/// Quantising as a model loads gives the model `pack --dtype int8|q4` gives: the same rewards,
/// bit for bit, and not the float model's.
#[test]
fn quantizing_on_load_gives_the_packed_bundles_model() {
    use dmoerm::{LoadOptions, Quantize};
    let dir = tmp("quantizable");
    quantizable_qwen2(&dir);
    let convs = [
        Conversation::new("What is the capital of France?", "Paris, on the Seine."),
        Conversation::new("Say something kind.", "You are doing well, keep going!"),
    ];
    let f32_scores: Vec<f32> = RewardModel::load_on(&dir, Device::flex())
        .unwrap()
        .score_batch(&convs)
        .unwrap()
        .iter()
        .map(|s| s.reward)
        .collect();
    // how far each may move this small random model's rewards (measured: int8 0.020-0.027, q4
    // 0.014-0.12)
    for (quantize, dtype, drift) in [(Quantize::Int8, PackDtype::int8(), 0.05), (Quantize::Q4, PackDtype::q4(), 0.3)] {
        let loaded = RewardModel::load_with(&dir, Device::flex(), LoadOptions { quantize: Some(quantize) }).unwrap();
        let (bytes, _) = dmoerm::pack_bytes(&dir, dtype).unwrap();
        let packed = RewardModel::from_packed_bytes("packed", bytes, Device::flex()).unwrap();
        let got = loaded.score_batch(&convs).unwrap();
        assert_eq!(got, packed.score_batch(&convs).unwrap(), "{quantize:?}");
        for (s, f) in got.iter().zip(&f32_scores) {
            assert!(s.reward != *f && (s.reward - f).abs() < drift, "{quantize:?}: {} against f32 {f}", s.reward);
        }
    }
    assert!(matches!("q8".parse::<Quantize>(), Err(Error::Input(_))));
    std::fs::remove_dir_all(&dir).ok();
}
