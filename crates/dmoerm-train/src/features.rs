//! The frozen part of the model: the backbone below the first LoRA layer, computed once per
//! distinct text and cached, so each training step runs only the adapted top layers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use dmoerm::backbones::{Backbone, TokenBatch};
use dmoerm::bundle::{BackboneSpec, HfCheckpoint, Pooling};
use dmoerm::lora::AdapterGroup;
use dmoerm::text::{InputEncoder, InputFormat};
use dmoerm::{Conversation, Message};

use crate::error::Result;
use crate::progress;

/// Texts per forward pass when caching.
const CACHE_BATCH: usize = 16;

/// The backbone, its tokenizer and input format, and where the trainable layers start.
#[derive(Debug)]
pub struct Frozen {
    pub backbone: Backbone,
    pub encoder: InputEncoder,
    pub pooling: Pooling,
    /// The checkpoint's files, relative to `dir`.
    pub spec: BackboneSpec,
    /// The checkpoint directory.
    pub dir: PathBuf,
    pub device: Device,
    /// The first layer that carries LoRA; layers `0..split` are frozen and cached.
    pub split: usize,
}

/// A text's token ids and the hidden states entering layer `split` (`[len, H]`, flat).
#[derive(Debug, Clone)]
pub struct CachedText {
    pub ids: Vec<u32>,
    hidden: Vec<f32>,
}

/// Distinct texts and their cached hidden states.
#[derive(Debug, Default)]
pub struct TextCache {
    index: HashMap<Vec<u32>, usize>,
    rows: Vec<CachedText>,
}

impl TextCache {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, i: usize) -> &CachedText {
        &self.rows[i]
    }
}

impl Frozen {
    /// Loads the checkpoint in `dir`; LoRA goes on the top `lora_layers` layers (all if `None`).
    pub fn load(
        dir: &Path,
        input: InputFormat,
        pooling: Pooling,
        lora_layers: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let ckpt = HfCheckpoint::load(dir, device)?;
        let backbone = ckpt.backbone;
        let layers = backbone.num_layers();
        let split = layers - lora_layers.unwrap_or(layers).min(layers);
        let file = "the training config [input]";
        if input.text_pair {
            // the cached features keep token ids only, not the segments of a pair
            let message = "input.text_pair in training".to_string();
            return Err(dmoerm::Error::Unsupported { file: file.into(), message }.into());
        }
        if pooling == Pooling::Pooler && !backbone.has_pooler() {
            let message = "pooling `pooler` needs a backbone with a pooler".to_string();
            return Err(dmoerm::Error::Bundle { file: file.into(), message }.into());
        }
        let encoder = InputEncoder::new(file, input, ckpt.tokenizer, backbone.vocab_size(), ckpt.chat)?;
        Ok(Self { backbone, encoder, pooling, spec: ckpt.spec, dir: dir.to_path_buf(), device: device.clone(), split })
    }

    pub fn hidden_size(&self) -> usize {
        self.backbone.hidden_size()
    }

    /// The experts' token ids for a response to `messages`.
    pub fn expert_ids(&self, messages: &[Message], response: &str) -> Result<Vec<u32>> {
        let conv = Conversation::with_messages(messages.to_vec(), response);
        Ok(self.encoder.expert(&conv)?.ids)
    }

    /// The router's token ids for `messages` (it reads the user turns only).
    pub fn router_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let conv = Conversation::with_messages(messages.to_vec(), "");
        Ok(self.encoder.router(&conv)?.ids)
    }

    fn token_batch(&self, rows: &[&[u32]]) -> TokenBatch {
        let rows: Vec<Vec<u32>> = rows.iter().map(|r| r.to_vec()).collect();
        TokenBatch::new(&rows, self.encoder.format().pad_token_id, &self.device)
    }

    /// Adds the texts not yet in `cache` (computing layers `0..split` once for each) and
    /// returns the cache index of every text.
    pub fn cache(&self, cache: &mut TextCache, texts: Vec<Vec<u32>>, what: &str) -> Result<Vec<usize>> {
        let mut missing: Vec<Vec<u32>> = Vec::new();
        for t in &texts {
            if !cache.index.contains_key(t) && !missing.contains(t) {
                missing.push(t.clone());
            }
        }
        // Similar lengths together: less padding.
        missing.sort_by_key(Vec::len);
        let bar = progress::bar(missing.len(), &format!("caching {what}"));
        let h = self.hidden_size();
        for chunk in missing.chunks(CACHE_BATCH) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let batch = self.token_batch(&refs);
            let [b, s] = batch.dims();
            let hidden = self.backbone.hidden_at(&batch, self.split, None);
            let values = read(hidden.reshape([b, s * h]))?;
            for (row, ids) in chunk.iter().enumerate() {
                let len = ids.len();
                let hidden = values[row * s * h..row * s * h + len * h].to_vec();
                cache.index.insert(ids.clone(), cache.rows.len());
                cache.rows.push(CachedText { ids: ids.clone(), hidden });
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(texts.iter().map(|t| cache.index[t]).collect())
    }

    /// Pooled final hidden states of cached texts, run through layers `split..` with `lora`.
    /// With `experts = E > 1` the texts are repeated expert-major (as the bundle's inner layer
    /// runs them) and the output has `E * texts.len()` rows.
    ///
    /// # Shapes
    /// - output: `[E * N, H]`
    pub fn pooled(&self, cache: &TextCache, texts: &[usize], lora: Option<&AdapterGroup>, experts: usize) -> Tensor<2> {
        let h = self.hidden_size();
        let rows: Vec<&CachedText> = texts.iter().map(|&i| cache.get(i)).collect();
        let seq = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1).max(1);
        let mut flat = vec![0.0f32; rows.len() * seq * h];
        for (i, r) in rows.iter().enumerate() {
            flat[i * seq * h..i * seq * h + r.hidden.len()].copy_from_slice(&r.hidden);
        }
        let hidden = Tensor::<3>::from_data(TensorData::new(flat, [rows.len(), seq, h]), &self.device);
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let mut batch = self.token_batch(&ids);
        let mut hidden = hidden;
        if experts > 1 {
            hidden = hidden.repeat_dim(0, experts);
            batch = batch.repeat(experts);
        }
        let out = self.backbone.forward_from(hidden, &batch, self.split, lora);
        self.backbone.pool(out, &batch, self.pooling)
    }

    /// Pooled final hidden states of the bare backbone (no LoRA) for token rows, host side:
    /// the router's features.
    pub fn bare_pooled(&self, rows: &[Vec<u32>], what: &str) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden_size();
        let bar = progress::bar(rows.len(), &format!("encoding {what}"));
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(CACHE_BATCH) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let batch = self.token_batch(&refs);
            let pooled = self.backbone.pooled(&batch, None, self.pooling);
            out.extend(read(pooled)?.chunks(h).map(<[f32]>::to_vec));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// Reads a tensor back to the host.
pub fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.inner()
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| crate::error::Error::Model(dmoerm::Error::Backend(format!("{e:?}"))))
}
