//! Task categories and their capability points.
//!
//! The default is the DMoERM reference's five categories, in English. A custom file is JSON,
//! either `{"category": ["point", ...]}` or `{"category": {"point": "description", ...}}`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};

/// One capability point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Identifier, e.g. `empathy_ability`.
    pub name: String,
    /// What the judge is asked to look at.
    pub description: String,
}

/// Category name -> its points, in order.
pub type Categories = BTreeMap<String, Vec<Point>>;

fn p(name: &str, description: &str) -> Point {
    Point { name: name.into(), description: description.into() }
}

/// The reference's five categories and their capability points.
pub fn defaults() -> Categories {
    let mut c = Categories::new();
    c.insert(
        "roleplay".into(),
        vec![
            p(
                "character_setting_and_emotional_investment",
                "staying in character and engaging emotionally as the character would",
            ),
            p("conversational_sense", "natural, coherent conversational flow"),
            p("empathy_ability", "understanding and responding to the user's feelings"),
            p("manifestation_of_relationship_traits", "reflecting the relationship between the character and the user"),
            p("personalized_characteristic_expression", "expressing the character's distinctive traits"),
            p("content_richness", "substantive, varied and informative content"),
        ],
    );
    c.insert(
        "chat".into(),
        vec![
            p("conversational_sense", "natural, coherent conversational flow"),
            p("proactivity", "moving the conversation forward, asking or offering helpful follow-ups"),
            p("emotion_expression", "appropriate expression of emotion"),
            p("empathy_ability", "understanding and responding to the user's feelings"),
            p("content_richness", "substantive, varied and informative content"),
        ],
    );
    c.insert(
        "subj_qa".into(),
        vec![
            p("convincing_ability", "how persuasive and well supported the answer is"),
            p("logic", "sound, consistent reasoning"),
            p("viewpoint_richness", "considering several viewpoints"),
            p("breadth_of_knowledge", "range of relevant knowledge brought in"),
            p("question_specific", "addressing exactly what was asked"),
        ],
    );
    c.insert(
        "obj_qa".into(),
        vec![
            p("correctness", "factual correctness"),
            p("objectiveness", "neutral, unbiased presentation"),
            p("reasoning_ability", "quality of the reasoning toward the answer"),
            p("logic", "sound, consistent reasoning"),
            p("depth_of_knowledge", "depth of relevant knowledge"),
            p("question_specific", "addressing exactly what was asked"),
        ],
    );
    c.insert(
        "text".into(),
        vec![
            p("intent_conformity", "doing what the user intended"),
            p("expressiveness", "vivid, apt expression"),
            p("readability", "clear, easy to read writing"),
            p("content_richness", "substantive, varied and informative content"),
            p("logic", "sound, coherent structure"),
        ],
    );
    c
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPoints {
    Names(Vec<String>),
    Described(BTreeMap<String, String>),
}

/// Reads a categories file (see the module docs).
pub fn load(path: &str) -> Result<Categories> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let raw: BTreeMap<String, RawPoints> =
        serde_json::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
    let mut out = Categories::new();
    for (cat, points) in raw {
        let points: Vec<Point> = match points {
            RawPoints::Names(names) => {
                names.into_iter().map(|n| Point { description: n.replace('_', " "), name: n }).collect()
            }
            RawPoints::Described(map) => {
                map.into_iter().map(|(name, description)| Point { name, description }).collect()
            }
        };
        if points.is_empty() {
            return Err(Error::Config {
                path: path.into(),
                message: format!("category `{cat}` has no capability points"),
            });
        }
        out.insert(cat, points);
    }
    if out.is_empty() {
        return Err(Error::Config { path: path.into(), message: "no categories".into() });
    }
    Ok(out)
}
