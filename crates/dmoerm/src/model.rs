//! [`RewardModel`]: the double-layer mixture of experts, put together from a bundle.
//!
//! ```text
//! probs = softmax(router_head(pool(backbone[router LoRA](router_text))))      # outer layer
//! t     = argmax(probs)                                                        # top-1 route
//! h_e   = pool(backbone[LoRA_e](expert_text)),  e = 1..k of task t            # one batched pass
//! capability_e = value_head_e(h_e)
//! reward = aggregator_t([h_1; ...; h_k])     # Linear(kH -> H) -> PReLU -> Linear(H -> 1)
//! ```

use std::path::Path;

use burn::tensor::{Device, Tensor};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::aggregator::Combine;
use crate::backbones::{Backbone, TokenBatch};
use crate::bundle::{read, Manifest, Source};
use crate::error::{Error, Result, Stage};
use crate::router::Router;
use crate::task::Task;
use crate::text::{Conversation, Encoded, InputEncoder, Message, Role};
use crate::weights::LoadOptions;

/// The score of one response. Its JSON (CLI, JSONL, npm, Python) is this struct with
/// snake_case keys: `{"reward", "task", "task_probs": {task: p}, "capabilities": {name: s},
/// "truncated"}`, maps in manifest order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
pub struct Score {
    /// The reward (the task's aggregator output).
    pub reward: f32,
    /// The task the router chose.
    pub task: String,
    /// Router probability of every task, in manifest order.
    #[serde(serialize_with = "pairs_as_map")]
    #[cfg_attr(feature = "typescript", tsify(type = "Record<string, number>"))]
    pub task_probs: Vec<(String, f32)>,
    /// Score of each capability expert of the chosen task, in manifest order.
    #[serde(serialize_with = "pairs_as_map")]
    #[cfg_attr(feature = "typescript", tsify(type = "Record<string, number>"))]
    pub capabilities: Vec<(String, f32)>,
    /// Whether the input was cut to the bundle's `max_length`.
    pub truncated: bool,
}

fn pairs_as_map<S: Serializer>(pairs: &[(String, f32)], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// One candidate of [`RewardModel::rank`]: its index in the input, its text and its score
/// (in JSON the score's fields sit beside `index` and `response`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
pub struct Ranked {
    /// Position of the candidate in the input.
    pub index: usize,
    /// The candidate.
    pub response: String,
    /// Its score.
    #[serde(flatten)]
    pub score: Score,
}

/// What [`RewardModel::encode`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encodings {
    /// The router's input, if the bundle has a router.
    pub router: Option<Encoded>,
    /// The experts' input.
    pub expert: Encoded,
}

/// A DMoERM reward model (or a plain single reward model) ready to score.
///
/// `RewardModel` is `Send + Sync`: share it between threads behind an `Arc`.
#[derive(Debug, Clone)]
pub struct RewardModel {
    /// Where the bundle came from (its path, or a packed bundle's name): named in errors.
    origin: String,
    manifest: Manifest,
    device: Device,
    encoder: InputEncoder,
    backbone: Backbone,
    router: Option<Router>,
    tasks: Vec<Task>,
    /// Most rows (items x experts) in one forward pass.
    max_batch_rows: usize,
}

/// Rows (items x experts) per forward pass unless [`RewardModel::set_max_batch_rows`] says
/// otherwise. On the CPU a pass's cost is about proportional to its rows, so narrow passes
/// score as fast as wide ones and hold fewer activations: a rank of 16 on the default model
/// peaks 32 MB lower with 10 rows than with 64, at the same speed (BENCHMARKS.md). A GPU pass
/// is bound by dispatches, not rows, so wide passes pay there (H200: 20 rows cost 1.2x 5 rows).
const CPU_BATCH_ROWS: usize = 10;
const GPU_BATCH_ROWS: usize = 64;

/// On a GPU, a pass's rows are padded to a multiple of this many tokens (the padding masked,
/// as a batch's). CubeCL compiles a kernel once per vector width, which burn's kernels choose
/// from the shapes: with every length a multiple of 4 that width stops changing with the
/// length (the `gpu_profile` example's stream on lavapipe, 200 conversations: the default
/// model, 44 lengths, 33 compilations, 5 of them after the first score, instead of 42 and 14;
/// a Qwen3 reward model, 173 lengths, 13, none after the first, instead of 15 and 2). Steps of
/// 8 and 16 compile as many (16: one fewer) and pad more: on SwiftShader, a CPU, 16 made the
/// default model's score 8-15% slower. Costs at most 3 tokens of work per row.
const GPU_LENGTH_STEP: usize = 4;

/// How many tensors scoring has read back from its device in this process: on a GPU a round
/// trip each, one per scoring pass of a plain reward model, two for DMoERM (the router's
/// probabilities, then the experts' capabilities and rewards). For profiling
/// (`examples/gpu_profile`).
pub fn read_backs() -> u64 {
    READ_BACKS.load(std::sync::atomic::Ordering::Relaxed)
}

static READ_BACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads a tensor back (`into_data_async`, so it also works in the browser).
async fn read_back(t: Tensor<2>) -> Result<Vec<f32>> {
    READ_BACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = t.into_data_async().await.map_err(|e| Error::Backend(format!("{e:?}")))?;
    data.try_into_vec::<f32>().map_err(|e| Error::Backend(format!("{e:?}")))
}

impl RewardModel {
    /// Loads a bundle directory or packed file onto the chosen device (native targets; in a
    /// browser open the device asynchronously and use [`from_packed_bytes`](Self::from_packed_bytes)).
    #[cfg(not(target_family = "wasm"))]
    pub fn load(path: impl AsRef<Path>, device: crate::device::DeviceChoice) -> Result<Self> {
        // A missing or malformed bundle is reported before any GPU is touched.
        let mut source = Source::open(path.as_ref())?;
        let manifest = source.manifest()?;
        Self::from_parts(source, manifest, crate::device::open(device)?, LoadOptions::default())
    }

    /// Loads a bundle directory or packed file onto a given burn device.
    pub fn load_on(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::load_with(path, device, LoadOptions::default())
    }

    /// [`load_on`](Self::load_on) with [`LoadOptions`]: a Hugging Face directory of bf16
    /// weights quantised to int8 as it loads, say.
    pub fn load_with(path: impl AsRef<Path>, device: Device, options: LoadOptions) -> Result<Self> {
        Self::from_source(Source::open(path.as_ref())?, device, options)
    }

    /// Loads a packed bundle from memory (`name` is used in errors).
    pub fn from_packed_bytes(name: &str, bytes: Vec<u8>, device: Device) -> Result<Self> {
        Self::from_source(Source::packed(name, bytes)?, device, LoadOptions::default())
    }

    /// Loads a packed bundle from a reader, one tensor at a time: loading holds the model's
    /// tensors and one tensor's stored bytes, never the whole file (in a browser the bundle
    /// stays in JavaScript memory, outside wasm's 4 GB).
    pub fn from_packed_reader(name: &str, reader: Box<dyn crate::weights::ReadAt>, device: Device) -> Result<Self> {
        Self::from_packed_buffer(name, crate::weights::SafetensorsBuffer::from_reader(name, reader)?, device)
    }

    /// Loads a packed bundle whose header is already read (e.g. to check its size first).
    pub fn from_packed_buffer(name: &str, buffer: crate::weights::SafetensorsBuffer, device: Device) -> Result<Self> {
        Self::from_source(Source::packed_buffer(name, buffer)?, device, LoadOptions::default())
    }

    /// Loads a bundle given as the files of its directory ([`crate::bundle::Folder`]: a
    /// Hugging Face reward model a browser page was given, say), one tensor at a time.
    pub fn from_folder(folder: crate::bundle::Folder, device: Device, options: LoadOptions) -> Result<Self> {
        Self::from_parts(folder.source, folder.manifest, device, options)
    }

    fn from_source(mut source: Source, device: Device, options: LoadOptions) -> Result<Self> {
        let manifest = source.manifest()?;
        Self::from_parts(source, manifest, device, options)
    }

    fn from_parts(source: Source, manifest: Manifest, device: Device, options: LoadOptions) -> Result<Self> {
        let cpu = device == Device::flex();
        if cpu {
            crate::device::keep_freed_cpu_memory();
        }
        let read::Parts { origin, manifest, encoder, backbone, router, tasks } =
            read::read(source, manifest, &device, options)?;
        if cpu {
            crate::device::release_freed_cpu_memory();
        }
        let max_batch_rows = if cpu { CPU_BATCH_ROWS } else { GPU_BATCH_ROWS };
        Ok(Self { origin, manifest, device, encoder, backbone, router, tasks, max_batch_rows })
    }

    /// The manifest the model was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backbone.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// How conversations become token ids (templates, tokenizer, truncation).
    pub fn encoder(&self) -> &InputEncoder {
        &self.encoder
    }

    /// Task names, in manifest order.
    pub fn tasks(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// Capability points of a task, in manifest order.
    pub fn capabilities(&self, task: &str) -> Option<Vec<&str>> {
        self.tasks.iter().find(|t| t.name == task).map(|t| t.capabilities.iter().map(String::as_str).collect())
    }

    /// The token ids the router and the experts would see for `conversation`
    /// (`router` is `None` for a bundle without a router).
    pub fn encode(&self, conversation: &Conversation) -> Result<Encodings> {
        conversation.validate()?;
        let router = match self.router {
            Some(_) => Some(self.encode_for(conversation, Input::Router)?),
            None => None,
        };
        Ok(Encodings { router, expert: self.encode_for(conversation, Input::Expert)? })
    }

    fn encode_for(&self, conversation: &Conversation, input: Input) -> Result<Encoded> {
        match input {
            Input::Router => self.encoder.router(conversation),
            Input::Expert => self.encoder.expert(conversation),
        }
    }

    /// Replaces the combine rule of every ensemble task (a task with several experts and no
    /// aggregator); returns how many tasks it changed.
    pub fn set_combine(&mut self, rule: Combine) -> usize {
        let mut changed = 0;
        for t in self.tasks.iter_mut().filter(|t| t.combine.is_some()) {
            t.combine = Some(rule);
            changed += 1;
        }
        changed
    }

    /// Most rows (items x experts of a task) per forward pass; bounds memory. Default 10 on
    /// the CPU, 64 on a GPU.
    pub fn set_max_batch_rows(&mut self, rows: usize) {
        self.max_batch_rows = rows.max(1);
    }

    /// Scores one response.
    pub fn score(&self, conversation: &Conversation) -> Result<Score> {
        let mut scores = self.score_batch(std::slice::from_ref(conversation))?;
        scores.pop().ok_or_else(|| Error::Backend("no score came back".into()))
    }

    /// Scores many responses (each routed on its own).
    pub fn score_batch(&self, conversations: &[Conversation]) -> Result<Vec<Score>> {
        block_on(self.score_batch_async(conversations))
    }

    /// Best-of-n: routes `prompt` once, scores every candidate in the chosen task in one
    /// batched pass, and returns them best first.
    pub fn rank(&self, prompt: &str, candidates: &[String]) -> Result<Vec<Ranked>> {
        let messages = vec![Message { role: Role::User, content: prompt.to_string() }];
        self.rank_messages(&messages, candidates)
    }

    /// [`rank`](Self::rank) with a multi-turn history.
    pub fn rank_messages(&self, messages: &[Message], candidates: &[String]) -> Result<Vec<Ranked>> {
        block_on(self.rank_messages_async(messages, candidates))
    }

    /// Async [`score`](Self::score) (the only way in a browser).
    pub async fn score_async(&self, conversation: &Conversation) -> Result<Score> {
        let mut scores = self.score_batch_async(std::slice::from_ref(conversation)).await?;
        scores.pop().ok_or_else(|| Error::Backend("no score came back".into()))
    }

    /// Async [`score_batch`](Self::score_batch).
    pub async fn score_batch_async(&self, conversations: &[Conversation]) -> Result<Vec<Score>> {
        for c in conversations {
            c.validate()?;
        }
        let routes = self.route(conversations).await?;
        let mut scores: Vec<Option<Score>> = vec![None; conversations.len()];
        for t in 0..self.tasks.len() {
            let members: Vec<usize> = (0..conversations.len()).filter(|&i| routes[i].task == t).collect();
            if members.is_empty() {
                continue;
            }
            let convs: Vec<&Conversation> = members.iter().map(|&i| &conversations[i]).collect();
            let outputs = self.run_task(t, &convs).await?;
            for (&i, out) in members.iter().zip(outputs) {
                scores[i] = Some(self.make_score(t, &routes[i], out));
            }
        }
        scores.into_iter().map(|s| s.ok_or_else(|| Error::Backend("a score is missing".into()))).collect()
    }

    /// Async [`rank_messages`](Self::rank_messages).
    pub async fn rank_messages_async(&self, messages: &[Message], candidates: &[String]) -> Result<Vec<Ranked>> {
        if candidates.is_empty() {
            return Err(Error::Input("no candidates to rank".into()));
        }
        let probe = Conversation::with_messages(messages.to_vec(), "");
        probe.validate()?;
        let route = self.route(std::slice::from_ref(&probe)).await?.remove(0);
        let convs: Vec<Conversation> =
            candidates.iter().map(|c| Conversation::with_messages(messages.to_vec(), c.clone())).collect();
        let refs: Vec<&Conversation> = convs.iter().collect();
        let outputs = self.run_task(route.task, &refs).await?;
        let mut ranked: Vec<Ranked> = outputs
            .into_iter()
            .enumerate()
            .map(|(index, out)| Ranked {
                index,
                response: candidates[index].clone(),
                score: self.make_score(route.task, &route, out),
            })
            .collect();
        ranked.sort_by(|a, b| b.score.reward.total_cmp(&a.score.reward).then(a.index.cmp(&b.index)));
        Ok(ranked)
    }

    fn make_score(&self, t: usize, route: &Route, out: TaskOutput) -> Score {
        let task = &self.tasks[t];
        Score {
            reward: out.reward,
            task: task.name.clone(),
            task_probs: self.tasks.iter().map(|t| t.name.clone()).zip(route.probs.iter().copied()).collect(),
            capabilities: task.capabilities.iter().cloned().zip(out.capabilities).collect(),
            truncated: route.truncated || out.truncated,
        }
    }

    /// The outer layer: task probabilities of each conversation.
    async fn route(&self, conversations: &[Conversation]) -> Result<Vec<Route>> {
        let n_tasks = self.tasks.len();
        let Some(router) = &self.router else {
            return Ok(conversations
                .iter()
                .map(|_| Route { task: 0, probs: vec![1.0; n_tasks], truncated: false })
                .collect());
        };
        let mut routes = Vec::with_capacity(conversations.len());
        for chunk in conversations.chunks(self.max_batch_rows) {
            let encoded = chunk.iter().map(|c| self.encode_for(c, Input::Router)).collect::<Result<Vec<_>>>()?;
            let batch = self.batch(&encoded);
            let probs = read_back(router.forward(&self.backbone, &batch, self.manifest.pooling)).await?;
            for (row, enc) in probs.chunks(n_tasks).zip(&encoded) {
                self.check_finite(Stage::Router, row, |i| format!("probability of task `{}`", self.tasks[i].name))?;
                let task = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                routes.push(Route { task, probs: row.to_vec(), truncated: enc.truncated });
            }
        }
        Ok(routes)
    }

    /// The inner layer of task `t`: all k experts over all conversations, k x n rows per pass.
    async fn run_task(&self, t: usize, conversations: &[&Conversation]) -> Result<Vec<TaskOutput>> {
        let task = &self.tasks[t];
        let k = task.capabilities.len();
        let per_pass = (self.max_batch_rows / k).max(1);
        let mut outputs = Vec::with_capacity(conversations.len());
        for chunk in conversations.chunks(per_pass) {
            let encoded = chunk.iter().map(|c| self.encode_for(c, Input::Expert)).collect::<Result<Vec<_>>>()?;
            let n = encoded.len();
            let (caps, rewards) = task.forward(self.expert_pass(task, &encoded));
            // one read-back (a GPU round trip) for the capabilities [k, n] and the rewards [n]
            let (caps, rewards) = match rewards {
                Some(r) => {
                    let mut caps = read_back(Tensor::cat(vec![caps, r.reshape([1, n])], 0)).await?;
                    let rewards = caps.split_off(k * n);
                    (caps, rewards)
                }
                None => {
                    let caps = read_back(caps).await?;
                    let rewards = task.combine_rewards(&caps, n);
                    (caps, rewards)
                }
            };
            for (j, enc) in encoded.iter().enumerate() {
                let capabilities: Vec<f32> = (0..k).map(|e| caps[e * n + j]).collect();
                self.check_finite(Stage::Expert, &capabilities, |e| {
                    format!("capability `{}` of task `{}`", task.capabilities[e], task.name)
                })?;
                self.check_finite(Stage::Aggregator, &rewards[j..=j], |_| format!("reward of task `{}`", task.name))?;
                outputs.push(TaskOutput { reward: rewards[j], capabilities, truncated: enc.truncated });
            }
        }
        Ok(outputs)
    }

    /// One batched pass of all k experts of `task` over `encoded`: pooled states `[k, n, H]`.
    fn expert_pass(&self, task: &Task, encoded: &[Encoded]) -> Tensor<3> {
        task.pooled(&self.backbone, &self.batch(encoded), self.manifest.pooling)
    }

    /// The pooled hidden state that each capability expert of `task` gives each conversation,
    /// `[k, n, H]` (expert-major), from one batched pass of all k experts: what the value heads
    /// and the aggregator read. No routing; `conversations` is one pass (no `max_batch_rows` split).
    pub fn expert_states(&self, task: &str, conversations: &[Conversation]) -> Result<Tensor<3>> {
        let task = self
            .tasks
            .iter()
            .find(|t| t.name == task)
            .ok_or_else(|| Error::Input(format!("no task `{task}` in this model")))?;
        let encoded = conversations
            .iter()
            .map(|c| c.validate().and_then(|()| self.encode_for(c, Input::Expert)))
            .collect::<Result<Vec<_>>>()?;
        if encoded.is_empty() {
            return Err(Error::Input("no conversations".into()));
        }
        Ok(self.expert_pass(task, &encoded))
    }

    /// The first non-finite value of a stage's outputs as [`Error::NonFinite`]; `what(i)`
    /// names output `i` (only called for the error).
    fn check_finite(&self, stage: Stage, values: &[f32], what: impl Fn(usize) -> String) -> Result<()> {
        match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(Error::NonFinite { bundle: self.origin.clone(), stage, what: what(i), value: values[i] }),
            None => Ok(()),
        }
    }

    fn batch(&self, encoded: &[Encoded]) -> TokenBatch {
        let rows: Vec<Vec<u32>> = encoded.iter().map(|e| e.ids.clone()).collect();
        let types: Vec<Vec<u32>> = encoded.iter().map(|e| e.type_ids.clone()).collect();
        let format = self.encoder.format();
        let step = match self.device != Device::flex() && !self.device.is_autodiff() {
            true => GPU_LENGTH_STEP,
            false => 1,
        };
        TokenBatch::padded_to(&rows, format.pad_token_id, step, format.max_length, &self.device).with_type_ids(&types)
    }
}

/// Which of the two inputs of a conversation.
#[derive(Debug, Clone, Copy)]
enum Input {
    Router,
    Expert,
}

#[derive(Debug, Clone)]
struct Route {
    task: usize,
    probs: Vec<f32>,
    truncated: bool,
}

#[derive(Debug, Clone)]
struct TaskOutput {
    reward: f32,
    capabilities: Vec<f32>,
    truncated: bool,
}

/// Runs an async scoring call to completion on native targets.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    burn::tensor::try_read_sync(f)
        .unwrap_or_else(|| Err(Error::Backend("blocking reads are not possible here; use the async API".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped default model adapts layers 4 and 5 of 6: its expert pass runs layers 0-3
    /// once per conversation and repeats their states for the 5 experts. The reference runs
    /// every layer on the `5 x n` rows.
    #[test]
    fn an_expert_pass_shares_the_unadapted_layers_and_gives_the_full_passs_numbers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default/model.dmoerm");
        let m = RewardModel::load_on(path, Device::flex()).expect("models/default/model.dmoerm loads");
        let conversations = [
            Conversation::new("What does the word \"harbor\" mean?", "A sheltered port where ships anchor."),
            Conversation::new(
                "Tell me a saying about patience.",
                "Patience is a virtue, and good things come to those who wait.",
            ),
        ];
        let encoded: Vec<Encoded> =
            conversations.iter().map(|c| m.encode_for(c, Input::Expert).expect("encodes")).collect();
        assert_ne!(encoded[0].ids.len(), encoded[1].ids.len(), "rows of different lengths: padding is exercised");
        let batch = m.batch(&encoded);
        for task in &m.tasks {
            let adapter = task.experts.adapter().expect("the default model's experts have adapters");
            assert_eq!(m.backbone.first_adapted_layer(adapter), 4, "task {}", task.name);
            let k = task.capabilities.len();
            let shared = m.expert_pass(task, &encoded);
            let repeated = batch.repeat(k);
            let full = m.backbone.pooled(&repeated, Some(adapter), m.manifest.pooling).reshape(shared.dims());
            let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
            let (shared, full) = (values(shared), values(full));
            let worst = shared.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-6, "task {}: worst difference {worst:e}", task.name);
        }
    }
}
