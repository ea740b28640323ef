//! The generator's invariants, on small source files in the real formats
//! (tests/fixtures/synth).

use std::collections::BTreeSet;
use std::path::PathBuf;

use dmoerm_synth::generate::{files, items, ranks};
use dmoerm_synth::tasks::{gold, TASKS};
use dmoerm_synth::{read_sources, synth, Benchmark, Options};

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/synth").join(p)
}

fn options(seed: u64) -> Options {
    Options { seed, train: 5, valid: 2, test: 3, ..Default::default() }
}

fn bench(seed: u64) -> Benchmark {
    let sources = read_sources(&fixture("wordnet"), &fixture("chitchat.json"), &fixture("fortunes")).unwrap();
    synth(&items(&sources), &options(seed)).unwrap()
}

#[test]
fn the_sources_are_read_as_documented() {
    let s = read_sources(&fixture("wordnet"), &fixture("chitchat.json"), &fixture("fortunes")).unwrap();
    // 12 senses; the multi-word lemma is skipped
    assert_eq!(s.senses.len(), 12);
    assert_eq!(s.senses[0].word, "anchor");
    assert_eq!(s.senses[0].definition, "a heavy object dropped from a ship to keep it in place");
    assert_eq!(s.senses[0].examples, ["the ship lowered its anchor near the shore"]);
    assert_eq!(s.exchanges.len(), 12);
    assert_eq!(s.exchanges[0].message, "Hi! How was your weekend?");
    assert_eq!(s.sayings.len(), 12);
    let it = items(&s);
    for task in TASKS {
        assert_eq!(it[task.name()].len(), 12, "{}", task.name());
    }
    assert_eq!(it["sayings"][0].prompt, "Tell me a saying about bitter.");
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let a = files(&bench(7));
    assert_eq!(a, files(&bench(7)));
    assert_ne!(a, files(&bench(8)));
}

#[test]
fn no_prompt_is_in_two_splits() {
    let b = bench(1);
    let set = |rs: &[dmoerm_synth::generate::Record]| rs.iter().map(|r| r.prompt.clone()).collect::<BTreeSet<_>>();
    let (tr, va, te) = (set(&b.train), set(&b.valid), set(&b.test));
    assert_eq!(tr.len(), 5 * TASKS.len());
    assert!(tr.is_disjoint(&te) && tr.is_disjoint(&va) && va.is_disjoint(&te));
    // capability labels of train come from train prompts only, those of valid from valid
    assert!(b.caps_train.iter().all(|l| tr.contains(&l.query)));
    assert!(b.caps_valid.iter().all(|l| va.contains(&l.query)));
}

#[test]
fn every_response_has_true_qualities_and_valid_and_test_keep_the_true_ranks() {
    let b = bench(2);
    for r in b.train.iter().chain(&b.valid).chain(&b.test) {
        let caps = r.task.capabilities().len();
        assert_eq!(r.responses.len(), 4);
        assert!(r.qualities.iter().all(|q| q.len() == caps && q.iter().all(|x| [0.0, 0.5, 1.0].contains(x))));
        for (q, g) in r.qualities.iter().zip(&r.gold) {
            assert!((gold(r.task, q) - g).abs() < 1e-12);
        }
    }
    for r in b.valid.iter().chain(&b.test) {
        assert_eq!(r.rank, ranks(&r.gold), "{}", r.prompt);
    }
    for task in TASKS {
        let sum: f64 = task.weights().iter().map(|(_, w)| w).sum();
        assert!((sum - 1.0).abs() < 1e-12, "{}", task.name());
    }
}

#[test]
fn training_ranks_are_noisy_within_the_stated_band() {
    for seed in 0..3 {
        let b = bench(seed);
        let agree = b.stats["annotation_noise"]["train_rank_agreement_with_truth"].as_f64().unwrap();
        assert!((0.65..=0.75).contains(&agree), "seed {seed}: {agree}");
        // recomputed from the files' contents
        let (mut same, mut all) = (0, 0);
        for r in &b.train {
            for i in 0..4 {
                for j in 0..4 {
                    if r.gold[i] > r.gold[j] {
                        all += 1;
                        same += usize::from(r.rank[i] < r.rank[j]);
                    }
                }
            }
        }
        assert!((same as f64 / all as f64 - agree).abs() < 1e-12);
        // and the noise is real: some training ranks differ from the truth
        assert!(b.train.iter().any(|r| r.rank != ranks(&r.gold)));
    }
}

#[test]
fn capability_labels_are_noisy_in_train_and_true_in_valid() {
    let b = bench(3);
    let correct = b.caps_train.iter().filter(|l| l.correct).count() as f64 / b.caps_train.len() as f64;
    assert!(correct > 0.6 && correct < 0.95, "{correct}");
    for l in &b.caps_valid {
        let r = b.valid.iter().find(|r| r.prompt == l.query).unwrap();
        let c = r.task.capabilities().iter().position(|c| c.name() == l.point).unwrap();
        let q = |text: &str| r.qualities[r.responses.iter().position(|x| x == text).unwrap()][c];
        let (a, bq) = (q(&l.responses[0]), q(&l.responses[1]));
        assert_eq!(l.rank == [1, 2], a > bq, "{l:?}");
        assert_ne!(a, bq);
    }
}

#[test]
fn the_files_read_back_with_the_trainer_readers() {
    let dir = std::env::temp_dir().join(format!("dmoerm-synth-{}", std::process::id()));
    let b = bench(4);
    dmoerm_synth::write(&dir, &b).unwrap();
    let train = dmoerm_data::preferences::read_preferences(&dir.join("train.jsonl")).unwrap();
    assert_eq!(train.len(), b.train.len());
    assert!(train.iter().all(|p| p.gold.is_none()), "train carries no truth");
    let test = dmoerm_data::preferences::read_preferences(&dir.join("test.jsonl")).unwrap();
    assert!(test.iter().all(|p| p.gold.is_some()));
    let caps = dmoerm_data::preferences::read_capability_pairs(&dir.join("caps_train.jsonl")).unwrap();
    assert_eq!(caps.len(), b.caps_train.len());
    let names: BTreeSet<&str> = TASKS.iter().map(|t| t.name()).collect();
    assert!(test.iter().all(|p| names.contains(p.category.as_deref().unwrap())));
}
