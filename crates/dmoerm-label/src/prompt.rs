//! The judge prompt. Placeholders: `{query}`, `{response_a}` (shown as Response 1),
//! `{response_b}` (Response 2), `{capability}`, `{description}`. Substitution is one pass,
//! so braces inside the texts are never expanded.
//!
//! `--prompt-template FILE` overrides it: a text file is one template for every capability;
//! a `.json` file maps capability names to templates, with `"*"` for the rest.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The default judge prompt.
pub const DEFAULT_TEMPLATE: &str =
    "You are an expert annotator comparing two AI assistant responses to the same conversation.\n\n\
[Conversation]\n{query}\n\n\
[Response 1]\n{response_a}\n\n\
[Response 2]\n{response_b}\n\n\
Judge only this capability: {capability} ({description}). Ignore every other quality.\n\
Which response is better in terms of {capability}? Answer with a single character: 1 or 2.";

const PLACEHOLDERS: [&str; 5] = ["query", "response_a", "response_b", "capability", "description"];

/// Templates per capability.
#[derive(Debug, Clone)]
pub struct Templates {
    default: String,
    per_capability: BTreeMap<String, String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self { default: DEFAULT_TEMPLATE.to_string(), per_capability: BTreeMap::new() }
    }
}

fn check(path: &str, t: &str) -> Result<()> {
    for required in ["{response_a}", "{response_b}"] {
        if !t.contains(required) {
            return Err(Error::Config { path: path.into(), message: format!("template lacks {required}") });
        }
    }
    Ok(())
}

impl Templates {
    /// Reads an override file (see the module docs).
    pub fn load(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        if !path.ends_with(".json") {
            check(path, &text)?;
            return Ok(Self { default: text, per_capability: BTreeMap::new() });
        }
        let mut map: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
        let default = map.remove("*").unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
        check(path, &default)?;
        for t in map.values() {
            check(path, t)?;
        }
        Ok(Self { default, per_capability: map })
    }

    /// The prompt for one ordered pair.
    pub fn render(&self, query: &str, a: &str, b: &str, capability: &str, description: &str) -> String {
        let template = self.per_capability.get(capability).unwrap_or(&self.default);
        let values = [query, a, b, capability, description];
        let mut out = String::with_capacity(template.len() + query.len() + a.len() + b.len());
        let mut rest = template.as_str();
        'outer: while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            for (name, value) in PLACEHOLDERS.iter().zip(values) {
                let token = format!("{{{name}}}");
                if rest[start..].starts_with(&token) {
                    out.push_str(value);
                    rest = &rest[start + token.len()..];
                    continue 'outer;
                }
            }
            out.push('{');
            rest = &rest[start + 1..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder_once_and_leaves_user_braces() {
        let t = Templates::default();
        let s = t.render("Q {response_b}", "first", "second", "logic", "sound reasoning");
        assert!(s.contains("Q {response_b}"), "user braces must stay literal");
        assert!(s.contains("[Response 1]\nfirst") && s.contains("[Response 2]\nsecond"));
        assert_eq!(s.matches("logic").count(), 2);
        assert!(s.contains("(sound reasoning)"));
        assert!(!s.contains("{capability}") && !s.contains("{description}"));
    }
}
