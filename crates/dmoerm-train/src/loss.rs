//! The losses and accuracies of every phase.
//!
//! - preference (phases 1-3, baselines): `-log(sigmoid(r_better - r_worse))`, averaged over
//!   every ordered pair of responses with different ranks;
//! - router: cross-entropy of the task logits.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// Mean pairwise loss over `pairs` of indices into `rewards` (`[N]`), `None` without pairs.
pub fn pairwise_loss(rewards: Tensor<1>, pairs: &[(usize, usize)]) -> Option<Tensor<1>> {
    if pairs.is_empty() {
        return None;
    }
    let device = rewards.device();
    let index = |f: fn(&(usize, usize)) -> usize| {
        let v: Vec<i64> = pairs.iter().map(|p| f(p) as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(v, [pairs.len()]), &device)
    };
    let better = rewards.clone().select(0, index(|p| p.0));
    let worse = rewards.select(0, index(|p| p.1));
    Some(log_sigmoid(better - worse).mean().neg())
}

/// Mean cross-entropy of `logits` (`[N, C]`) against class `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let [n, c] = logits.dims();
    let mut onehot = vec![0.0f32; n * c];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * c + l] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [n, c]), &logits.device());
    (log_softmax(logits, 1) * onehot).sum().div_scalar(n as f64).neg()
}

/// `(correct, total)`: rows whose largest logit is the label.
pub fn classification_accuracy(logits: &[f32], classes: usize, labels: &[usize]) -> (usize, usize) {
    let correct = logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i) == Some(l))
        .count();
    (correct, labels.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().try_into_vec::<f32>().unwrap()[0] as f64
    }

    #[test]
    fn pairwise_loss_matches_hand_computed_values() {
        let device = Device::flex();
        let r = Tensor::<1>::from_data(TensorData::new(vec![2.0f32, 0.0, 1.0], [3]), &device);
        // pairs (0 > 1): d = 2, (2 > 1): d = 1, (1 > 0): d = -2
        let pairs = [(0, 1), (2, 1), (1, 0)];
        let want = ((1.0 + (-2.0f64).exp()).ln() + (1.0 + (-1.0f64).exp()).ln() + (1.0 + 2.0f64.exp()).ln()) / 3.0;
        let got = scalar(pairwise_loss(r, &pairs).unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(pairwise_loss(Tensor::<1>::zeros([2], &device), &[]).is_none());
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 0.0, 3.0, 0.0, 0.0], [2, 3]), &device);
        let lse1 = (1f64.exp() + 2f64.exp() + 1.0).ln();
        let lse2 = (3f64.exp() + 2.0).ln();
        let want = ((lse1 - 2.0) + (lse2 - 0.0)) / 2.0; // labels 1 and 2
        let got = scalar(cross_entropy(logits, &[1, 2]));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(classification_accuracy(&[1.0, 2.0, 0.0, 3.0, 0.0, 0.0], 3, &[1, 2]), (1, 2));
    }
}
