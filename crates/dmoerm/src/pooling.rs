//! Pooling: which hidden state stands for the whole sequence. The router, the experts and the
//! trainer all read one pooled state `[H]` per sequence from the backbone's `[S, H]`.

use burn::tensor::{Tensor, TensorData};

use crate::kernels::{batched_matmul, Span};
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
    /// Pools `[B, S, H]` to one state per sequence as one batched product with weights over
    /// the positions (one-hot for a single token, `1/len` for mean). `spans` say where each
    /// sequence lies in the `B * S` positions: one per row (padded rows: `[B, 1, S]` weights)
    /// or one after another in one row (packed: `[1, n, T]`); `last_non_pad` is each
    /// sequence's last position (from its first token) whose id is not the pad id. The
    /// pooler's dense layer is the backbone's (`Backbone::pool`); here it reads `[CLS]`.
    ///
    /// # Shapes
    /// - hidden: `[B, S, H]`, output: `[spans, H]`
    pub fn pool(self, hidden: Tensor<3>, spans: &[Span], last_non_pad: &[usize]) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        let n = spans.len();
        // a row of weights per sequence over the positions of its row
        let (rows, width) = if Span::are_padded(spans, [b, s]) { (b, s) } else { (1, b * s) };
        let mut w = vec![0.0f32; n * width];
        for (i, (span, &last)) in spans.iter().zip(last_non_pad).enumerate() {
            let len = span.len.clamp(1, span.rows);
            let w = &mut w[i * width + span.start % width..][..len];
            match self {
                Pooling::Last => w[len - 1] = 1.0,
                Pooling::LastNonPad => w[last.min(len - 1)] = 1.0,
                Pooling::Cls | Pooling::Pooler => w[0] = 1.0,
                Pooling::Mean => w.iter_mut().for_each(|x| *x = 1.0 / len as f32),
            }
        }
        let w = Tensor::<3>::from_data(TensorData::new(w, [rows, n / rows, width]), &hidden.device());
        batched_matmul(w, hidden.reshape([rows, width, h])).reshape([n, h])
    }
}
