//! What the judge said: response 1, response 2, a refusal, or nothing usable.
//!
//! Accepted: a bare `1` / `2` (with markdown, quotes or punctuation around it), "Response 2",
//! "Response 1 is better", "The better one is response 2", "Answer: 1". Both numbers named as
//! the better one, or none, is unparseable; "I can't / I cannot / I won't / as an AI" with no
//! choice is a refusal.

/// A parsed verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The response shown first is better.
    First,
    /// The response shown second is better.
    Second,
    /// The model declined to judge.
    Refused,
    /// No clear choice.
    Unparseable,
}

/// Parses a judge's answer.
pub fn parse(text: &str) -> Verdict {
    let lower = text.to_lowercase();
    let cleaned: String =
        lower.chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let pick = |w: &str| match w {
        "1" | "one" | "first" => Some(Verdict::First),
        "2" | "two" | "second" => Some(Verdict::Second),
        _ => None,
    };
    // 1. the whole answer is one choice: "1", "**2**", "Response 2.", "Answer: 1"
    let content: Vec<&str> =
        words.iter().copied().filter(|w| !matches!(*w, "response" | "answer" | "the" | "is" | "better")).collect();
    if content.len() == 1 {
        if let Some(v) = pick(content[0]) {
            return v;
        }
    }
    // 2. "response N is (the) better"
    let better: Vec<Verdict> = words
        .windows(4)
        .filter(|w| w[0] == "response" && w[2] == "is" && (w[3] == "better" || w[3] == "the"))
        .filter_map(|w| pick(w[1]))
        .collect();
    if !better.is_empty() && better.iter().all(|v| *v == better[0]) {
        return better[0];
    }
    // 3. "response N" mentions: exactly one distinct N
    let mut mentioned: Vec<Verdict> = words
        .windows(2)
        .filter(|w| w[0] == "response")
        .filter_map(|w| match w[1] {
            "1" | "one" => Some(Verdict::First),
            "2" | "two" => Some(Verdict::Second),
            _ => None,
        })
        .collect();
    mentioned.dedup();
    if mentioned.len() == 1 {
        return mentioned[0];
    }
    // 4. a lone digit 1 or 2 (not both)
    let digits: Vec<Verdict> = words
        .iter()
        .filter_map(|w| match *w {
            "1" => Some(Verdict::First),
            "2" => Some(Verdict::Second),
            _ => None,
        })
        .collect();
    if !digits.is_empty() && digits.iter().all(|d| *d == digits[0]) && mentioned.is_empty() {
        return digits[0];
    }
    let refusal = [
        "i can't",
        "i cannot",
        "i can not",
        "i won't",
        "i'm unable",
        "i am unable",
        "as an ai",
        "i'm sorry",
        "i am sorry",
    ];
    if refusal.iter().any(|r| lower.contains(r)) {
        return Verdict::Refused;
    }
    Verdict::Unparseable
}

#[cfg(test)]
mod tests {
    use super::{parse, Verdict::*};

    #[test]
    fn answers() {
        for (text, want) in [
            ("1", First),
            ("2", Second),
            (" **2** ", Second),
            ("\"1\".", First),
            ("Response 2", Second),
            ("Response 1 is better.", First),
            ("The better one is Response 2.", Second),
            ("Answer: 1", First),
            ("Response 2 is better than response 1.", Second),
            ("Response 1 and response 2 are both fine.", Unparseable),
            ("Both are equally good.", Unparseable),
            ("", Unparseable),
            ("1 or 2", Unparseable),
            ("I'm sorry, but I can't help with comparing these.", Refused),
            ("As an AI, I cannot judge that.", Refused),
            ("Second", Second),
        ] {
            assert_eq!(parse(text), want, "{text:?}");
        }
    }
}
