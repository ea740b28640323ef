//! A Hugging Face model directory as transformers saves it (`save_pretrained`): the files of
//! its backbone, and, for a `*ForSequenceClassification` reward model, the manifest those
//! files imply, so that the directory loads as it is (`RewardModel::load(dir)`) and
//! `dmoerm import` writes it out as a bundle. `docs/bring-your-own-model.md` describes what
//! the manifest says and why.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::keys;
use super::manifest::{self, BackboneSpec, ExpertSpec, Manifest, TaskSpec, MANIFEST_FILE};
use super::Source;
use crate::aggregator::Combine;
use crate::backbones::Backbone;
use crate::chat_template::ChatTemplate;
use crate::error::{Error, Result};
use crate::pooling::Pooling;
use crate::text::InputFormat;

/// The files of the directory, as transformers names them.
pub(crate) const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const TOKENIZER: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const CHAT_TEMPLATE: &str = "chat_template.jinja";

/// The task an imported reward model's scores are reported under.
pub const TASK: &str = "general";

/// The reward-model classes this crate loads, with the name of their classification head.
const ARCHITECTURES: [(&str, &str); 5] = [
    ("LlamaForSequenceClassification", "score"),
    ("MistralForSequenceClassification", "score"),
    ("Qwen2ForSequenceClassification", "score"),
    ("Qwen3ForSequenceClassification", "score"),
    ("BertForSequenceClassification", "classifier"),
];

/// A Hugging Face checkpoint directory loaded as a backbone, e.g. to train on it.
#[derive(Debug, Clone)]
pub struct HfCheckpoint {
    /// Its files, relative to the directory (see [`backbone_spec`]).
    pub spec: BackboneSpec,
    /// The transformer.
    pub backbone: crate::backbones::Backbone,
    /// The tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// The tokenizer's chat template, when it has one.
    pub chat: Option<ChatTemplate>,
}

impl HfCheckpoint {
    /// Loads `dir/config.json`, its safetensors weights, `dir/tokenizer.json` and the chat
    /// template.
    pub fn load(dir: &Path, device: &burn::tensor::Device) -> Result<Self> {
        let spec = backbone_spec(dir)?;
        let mut source = Source::dir(dir)?;
        let (backbone, tokenizer) = source.backbone(&spec, device, None)?;
        let chat = source.chat_template(&spec)?;
        Ok(Self { spec, backbone, tokenizer, chat })
    }
}

#[derive(Deserialize)]
struct WeightIndex {
    weight_map: BTreeMap<String, String>,
}

/// The backbone files of `dir`: `config.json`; the weights (`model.safetensors`, or the shards
/// `model.safetensors.index.json` lists, or else every `model-*.safetensors`);
/// `tokenizer.json`; and when present `tokenizer_config.json` and `chat_template.jinja`.
pub fn backbone_spec(dir: &Path) -> Result<BackboneSpec> {
    backbone_files(&Source::dir(dir)?)
}

/// [`backbone_spec`] of a directory given as a [`Source`]: every file it names is there.
fn backbone_files(source: &Source) -> Result<BackboneSpec> {
    let names = source.listing()?;
    let has = |n: &str| names.iter().any(|m| m == n);
    let missing = |message: String| Error::bundle(&source.name(), message);
    let weights: Vec<String> = if has(WEIGHTS) {
        vec![WEIGHTS.to_string()]
    } else if has(WEIGHTS_INDEX) {
        let index: WeightIndex =
            serde_json::from_str(&source.text(WEIGHTS_INDEX)?).map_err(|e| Error::json(WEIGHTS_INDEX, e))?;
        let mut shards: Vec<String> = index.weight_map.into_values().collect();
        shards.sort();
        shards.dedup();
        for shard in &shards {
            super::check_relative(WEIGHTS_INDEX, shard)?;
            if !has(shard) {
                return Err(missing(format!("{WEIGHTS_INDEX} names the shard {shard}, which is not in the directory")));
            }
        }
        shards
    } else {
        names.iter().filter(|n| n.starts_with("model-") && n.ends_with(".safetensors")).cloned().collect()
    };
    if weights.is_empty() {
        let message = if names.iter().any(|n| n.ends_with(".bin")) {
            "only PyTorch .bin weights: dmoerm reads safetensors (transformers' `save_pretrained` writes them by default)"
        } else {
            "no model.safetensors (or model-*.safetensors shards)"
        };
        return Err(missing(message.into()));
    }
    if !has(TOKENIZER) {
        return Err(missing(format!("no {TOKENIZER}: dmoerm needs the fast tokenizer's file")));
    }
    let optional = |n: &str| has(n).then(|| n.to_string());
    Ok(BackboneSpec {
        config: CONFIG.into(),
        weights,
        tokenizer: TOKENIZER.into(),
        tokenizer_config: optional(TOKENIZER_CONFIG),
        chat_template: optional(CHAT_TEMPLATE),
    })
}

/// The fields of `config.json` the manifest is made from.
#[derive(Deserialize)]
struct ClassifierConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    num_labels: Option<usize>,
    pad_token_id: Option<u32>,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    _name_or_path: String,
}

/// The manifest a `*ForSequenceClassification` reward model in `dir` implies:
/// - one task, [`TASK`], with one expert per output label (named by `id2label`, in label
///   order), each reading its row of the classification head; with several labels the reward
///   is label 0's score (`combine: {"rule": "capability", "index": 0}`);
/// - the input: the tokenizer's chat template when it has one (the text transformers'
///   `apply_chat_template` gives), else for BERT the text pair (history, response), else the
///   history and the response joined by a newline; `max_length` the model's
///   `max_position_embeddings`;
/// - pooling as the class pools: the last token that is not `pad_token_id` (the last token
///   when the config has none) for decoders, `[CLS]` through the pooler for BERT.
pub(crate) fn reward_model_manifest(source: &mut Source) -> Result<Manifest> {
    let backbone = backbone_files(source)?;
    let text = source.text(CONFIG)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json(CONFIG, e))?;
    let config = ClassifierConfig::deserialize(&value).map_err(|e| Error::json(CONFIG, e))?;
    let Some((arch, head)) = ARCHITECTURES.iter().find(|(a, _)| config.architectures.iter().any(|c| c == a)) else {
        let supported: Vec<&str> = ARCHITECTURES.iter().map(|(a, _)| *a).collect();
        return Err(Error::unsupported(
            CONFIG,
            format!(
                "architectures {:?}: a directory without {MANIFEST_FILE} loads when it is one of {} \
                 (for anything else, write a {MANIFEST_FILE}: docs/bundle-format.md)",
                config.architectures,
                supported.join(", ")
            ),
        ));
    };
    let labels = labels(&config)?;
    // transformers refuses such a config; here every padded batch would index past the table
    let vocab = value.get("vocab_size").and_then(serde_json::Value::as_u64);
    if let (Some(pad), Some(vocab)) = (config.pad_token_id, vocab) {
        if u64::from(pad) >= vocab {
            return Err(Error::bundle(
                CONFIG,
                format!("pad_token_id {pad} is outside the vocabulary (vocab_size {vocab})"),
            ));
        }
    }
    // the file holding the head (with shards, the one that has it)
    let weight = format!("{head}.{}", keys::WEIGHT);
    let mut head_file = None;
    for file in &backbone.weights {
        if source.tensors(file)?.contains(&weight) {
            head_file = Some(file.clone());
            break;
        }
    }
    let head_file =
        head_file.ok_or_else(|| Error::MissingTensor { file: backbone.weights.join(", "), tensor: weight })?;
    let experts = labels
        .iter()
        .enumerate()
        .map(|(i, name)| ExpertSpec {
            name: name.clone(),
            adapter: None,
            head: keys::reference(&head_file, head),
            head_row: (labels.len() > 1).then_some(i),
        })
        .collect();
    let bert = *arch == "BertForSequenceClassification";
    let chat = source.chat_template(&backbone)?.is_some();
    let pooling = match (bert, config.pad_token_id) {
        (true, _) => Pooling::Pooler,
        (false, Some(_)) => Pooling::LastNonPad,
        (false, None) => Pooling::Last,
    };
    let input = InputFormat {
        template: "{query}\n{response}".into(),
        router_template: "{query}".into(),
        user_turn: "{content}".into(),
        assistant_turn: "{content}".into(),
        system_turn: "{content}".into(),
        turn_separator: "\n".into(),
        // the backbone's own limit, its family's default when the config has none
        max_length: Backbone::config_max_positions(CONFIG, &value)?,
        add_special_tokens: !chat,
        pad_token_id: config.pad_token_id.unwrap_or(0),
        chat_template: chat,
        text_pair: bert && !chat,
    };
    let name = match config._name_or_path.as_str() {
        "" => Path::new(&source.name()).file_name().map(|n| n.to_string_lossy().into_owned()),
        n => Some(n.to_string()),
    };
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        name,
        description: Some(format!("{arch} ({}), read from its Hugging Face files", config.model_type)),
        backbone,
        input,
        pooling,
        router: None,
        tasks: vec![TaskSpec {
            name: TASK.into(),
            description: None,
            experts,
            aggregator: None,
            combine: (labels.len() > 1).then_some(Combine::Capability { index: 0 }),
        }],
    };
    m.validate(CONFIG)?;
    Ok(m)
}

/// The manifest of the reward model in `dir`, as [`RewardModel::load`](crate::RewardModel::load)
/// reads it (what `dmoerm import` writes beside its files).
pub fn manifest(dir: &Path) -> Result<Manifest> {
    reward_model_manifest(&mut Source::dir(dir)?)
}

/// The output labels in order: `id2label` (keys `"0"`, `"1"`, ...), or `LABEL_<i>` for
/// `num_labels` (transformers' default names; 2 labels when neither is given).
fn labels(config: &ClassifierConfig) -> Result<Vec<String>> {
    let n = if config.id2label.is_empty() { config.num_labels.unwrap_or(2) } else { config.id2label.len() };
    if config.num_labels.is_some_and(|k| k != n) {
        return Err(Error::bundle(CONFIG, "num_labels and id2label disagree"));
    }
    if n == 0 {
        return Err(Error::bundle(CONFIG, "the model has no output labels"));
    }
    (0..n)
        .map(|i| match (config.id2label.is_empty(), config.id2label.get(&i.to_string())) {
            (true, _) => Ok(format!("LABEL_{i}")),
            (false, Some(name)) => Ok(name.clone()),
            (false, None) => Err(Error::bundle(CONFIG, format!("id2label has no label {i}"))),
        })
        .collect()
}
