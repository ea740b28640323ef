//! Pooling: which hidden state stands for the whole sequence. The router, the experts and the
//! trainer all read one pooled state `[H]` per sequence from the backbone's `[S, H]`.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which hidden state stands for the whole sequence (`pooling` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last token of each row (the DMoERM reference; decoder backbones).
    Last,
    /// The last token whose id is not the pad id, as transformers'
    /// `*ForSequenceClassification` reads the reward (it differs from `last` only when the
    /// text itself ends with the pad token, e.g. a pad id equal to the end-of-turn id).
    LastNonPad,
    /// The first token (`[CLS]` of BERT).
    Cls,
    /// `[CLS]` through the backbone's pooler (`tanh(dense(h_cls))`), as
    /// `BertForSequenceClassification` reads it.
    Pooler,
    /// The mean over the non-padding tokens.
    Mean,
}

impl Pooling {
    /// Pools `[B, S, H]` to `[B, H]` as one batched product with per-row weights over the
    /// positions (one-hot for a single token, `1/len` for mean); `lengths` are the real tokens
    /// per row, `last_non_pad` each row's last position whose id is not the pad id. The
    /// pooler's dense layer is the backbone's (`Backbone::pool`); here it reads `[CLS]`.
    ///
    /// # Shapes
    /// - hidden: `[B, S, H]`, output: `[B, H]`
    pub fn pool(self, hidden: Tensor<3>, lengths: &[usize], last_non_pad: &[usize]) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        let mut w = vec![0.0f32; b * s];
        for (row, &len) in lengths.iter().enumerate() {
            let len = len.clamp(1, s);
            match self {
                Pooling::Last => w[row * s + len - 1] = 1.0,
                Pooling::LastNonPad => w[row * s + last_non_pad[row].min(len - 1)] = 1.0,
                Pooling::Cls | Pooling::Pooler => w[row * s] = 1.0,
                Pooling::Mean => w[row * s..row * s + len].iter_mut().for_each(|x| *x = 1.0 / len as f32),
            }
        }
        let w = Tensor::<3>::from_data(TensorData::new(w, [b, 1, s]), &hidden.device());
        w.matmul(hidden).reshape([b, h])
    }
}
