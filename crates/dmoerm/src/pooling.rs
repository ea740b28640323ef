//! Pooling: which hidden state stands for the whole sequence. The router, the experts and the
//! trainer all read one pooled state `[H]` per sequence from the backbone's `[S, H]`.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which hidden state stands for the whole sequence (`pooling` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last non-padding token (the DMoERM reference; decoder backbones).
    Last,
    /// The first token (`[CLS]` of BERT).
    Cls,
    /// The mean over the non-padding tokens.
    Mean,
}

impl Pooling {
    /// Pools `[B, S, H]` to `[B, H]` as one batched product with per-row weights over the
    /// positions (one-hot for last/CLS, `1/len` for mean); `lengths` are the real tokens per row.
    ///
    /// # Shapes
    /// - hidden: `[B, S, H]`, output: `[B, H]`
    pub fn pool(self, hidden: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        let mut w = vec![0.0f32; b * s];
        for (row, &len) in lengths.iter().enumerate() {
            let len = len.clamp(1, s);
            match self {
                Pooling::Last => w[row * s + len - 1] = 1.0,
                Pooling::Cls => w[row * s] = 1.0,
                Pooling::Mean => w[row * s..row * s + len].iter_mut().for_each(|x| *x = 1.0 / len as f32),
            }
        }
        let w = Tensor::<3>::from_data(TensorData::new(w, [b, 1, s]), &hidden.device());
        w.matmul(hidden).reshape([b, h])
    }
}
