//! `dmoerm eval`: how well a bundle orders preference data.
//!
//! - **accuracy** (preference consistency): the fraction of response pairs with different
//!   ranks that the model orders the same way (strictly: a tie counts as wrong), overall and
//!   per task category (the data's category, else the routed task);
//! - **router accuracy**: routed task == the data's category, when the bundle has a router and
//!   the data has categories;
//! - **best-of-n**: for each prompt, the gold score of the model's pick against the best
//!   possible pick (oracle) and a uniformly random one. Gold scores are the data's `gold`
//!   field, else the negated ranks.

use std::collections::BTreeMap;

use dmoerm::RewardModel;
use serde::Serialize;

use crate::preferences::Preference;
use crate::Result;

/// Counts of one pass over some units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    pub fn add(&mut self, (correct, total): (usize, usize)) {
        self.correct += correct;
        self.total += total;
    }

    /// `correct / total`, 0 when empty.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// `(correct, total)`: pairs the rewards order strictly the same way (a tie is wrong).
pub fn pairwise_accuracy(rewards: &[f32], pairs: &[(usize, usize)]) -> (usize, usize) {
    (pairs.iter().filter(|&&(b, w)| rewards[b] > rewards[w]).count(), pairs.len())
}

/// Best-of-n results: mean gold score of the pick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestOfN {
    /// Prompts with at least two candidates.
    pub prompts: usize,
    /// Mean candidates per prompt.
    pub mean_candidates: f64,
    /// The model's pick.
    pub model: f64,
    /// The best candidate.
    pub oracle: f64,
    /// A random candidate (the mean).
    pub random: f64,
}

/// What `dmoerm eval --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub accuracy: f64,
    pub per_task: BTreeMap<String, f64>,
    pub router_accuracy: Option<f64>,
    pub bon: Option<BestOfN>,
    /// Pairs with different ranks.
    pub pairs: usize,
}

/// Scores every item (router once per prompt, all candidates batched) and reports;
/// `progress(done, total)` is called after each item.
pub fn evaluate(model: &RewardModel, data: &[Preference], mut progress: impl FnMut(usize, usize)) -> Result<Report> {
    let routed_tasks = model.tasks().len() > 1;
    let mut overall = Tally::default();
    let mut per_task: BTreeMap<String, Tally> = BTreeMap::new();
    let mut router = Tally::default();
    let (mut bon_n, mut cands, mut pick, mut oracle, mut random) = (0usize, 0usize, 0.0, 0.0, 0.0);
    for (done, item) in data.iter().enumerate() {
        let ranked = model.rank_messages(&item.messages, &item.responses)?;
        let mut rewards = vec![0.0f32; item.responses.len()];
        for r in &ranked {
            rewards[r.index] = r.score.reward;
        }
        let routed = ranked.first().map(|r| r.score.task.clone()).unwrap_or_default();
        let counts = pairwise_accuracy(&rewards, &item.pairs());
        overall.add(counts);
        per_task.entry(item.category.clone().unwrap_or_else(|| routed.clone())).or_default().add(counts);
        if let (true, Some(c)) = (routed_tasks, &item.category) {
            router.add((usize::from(*c == routed), 1));
        }
        let gold: Vec<f64> = match &item.gold {
            Some(g) => g.clone(),
            None => item.rank.iter().map(|&r| -(r as f64)).collect(),
        };
        if gold.len() >= 2 {
            bon_n += 1;
            cands += gold.len();
            // ranked[0] is the model's pick (ties: the first candidate)
            pick += gold[ranked[0].index];
            oracle += gold.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            random += gold.iter().sum::<f64>() / gold.len() as f64;
        }
        progress(done + 1, data.len());
    }
    let n = bon_n.max(1) as f64;
    Ok(Report {
        accuracy: overall.accuracy(),
        per_task: per_task.into_iter().map(|(k, t)| (k, t.accuracy())).collect(),
        router_accuracy: (router.total > 0).then(|| router.accuracy()),
        bon: (bon_n > 0).then(|| BestOfN {
            prompts: bon_n,
            mean_candidates: cands as f64 / n,
            model: pick / n,
            oracle: oracle / n,
            random: random / n,
        }),
        pairs: overall.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tie_is_wrong_and_order_counts() {
        assert_eq!(pairwise_accuracy(&[2.0, 0.0, 1.0], &[(0, 1), (2, 1), (1, 0)]), (2, 3));
        assert_eq!(pairwise_accuracy(&[1.0, 1.0], &[(0, 1)]), (0, 1));
        let mut t = Tally::default();
        t.add((2, 3));
        t.add((0, 1));
        assert_eq!(t.accuracy(), 0.5);
        assert_eq!(Tally::default().accuracy(), 0.0);
    }
}
