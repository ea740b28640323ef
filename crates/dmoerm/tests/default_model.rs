//! The shipped default model (models/default/model.dmoerm, int8 packed) loads, routes and
//! ranks the examples of its model card the way the card says.

use std::path::Path;

use dmoerm::{Conversation, Device, RewardModel};

fn model() -> RewardModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default/model.dmoerm");
    RewardModel::load_on(path, Device::flex()).expect("models/default/model.dmoerm loads")
}

#[test]
fn default_model_routes_and_ranks_its_model_card_examples() {
    let m = model();
    assert_eq!(m.tasks(), ["chat", "obj_qa", "sayings", "text"]);
    for t in m.tasks() {
        assert_eq!(m.capabilities(t).map(|c| c.len()), Some(5), "{t}");
    }
    let prompt = "What does the word \"harbor\" mean?";
    let good = "\"harbor\" means a sheltered port where ships can take on or discharge cargo.";
    let truncated = "\"harbor\" means a sheltered port where";
    let wrong_word = "\"slum\" means a district of a city marked by poverty and inferior living conditions.";
    let ranked = m.rank(prompt, &[wrong_word.into(), truncated.into(), good.into()]).unwrap();
    assert_eq!(ranked.iter().map(|r| r.index).collect::<Vec<_>>(), [2, 1, 0]);
    assert_eq!(ranked[0].score.task, "obj_qa");
    let cap = |i: usize, name: &str| {
        ranked.iter().find(|r| r.index == i).unwrap().score.capabilities.iter().find(|(c, _)| c == name).unwrap().1
    };
    assert!(cap(1, "completeness") < cap(2, "completeness") - 1.0, "truncation costs completeness");
    assert!(cap(0, "relevance") < cap(2, "relevance") - 1.0, "another word costs relevance");

    let saying = m.score(&Conversation::new("Tell me a saying about patience.", "Patience is a virtue.")).unwrap();
    assert_eq!(saying.task, "sayings");
    let rude = m
        .score(&Conversation::new("Tell me a saying about patience.", "Seriously? Whatever. Patience is a virtue."))
        .unwrap();
    assert!(rude.reward < saying.reward);
}
