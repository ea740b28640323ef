//! A tokenizer's own chat template: the Jinja text that Hugging Face tokenizers carry in
//! `tokenizer_config.json` (`chat_template`) or, since transformers 5, in
//! `chat_template.jinja`, rendered with minijinja the way transformers'
//! `apply_chat_template` renders it:
//! - blocks trimmed (`trim_blocks`, `lstrip_blocks`), loop controls on;
//! - the variables `messages`, `add_generation_prompt` and the tokenizer's special tokens
//!   (`bos_token`, `eos_token`, ... from `tokenizer_config.json`);
//! - `raise_exception(msg)` (an error), `strftime_now(format)` (the current UTC date; not in
//!   the browser, where the template's own fallback date is used), `tojson` as Python's
//!   `json.dumps(..., ensure_ascii=False)`;
//! - Python's string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...) through
//!   minijinja-contrib's `pycompat`.
//!
//! The rendered text is tokenized without adding special tokens (the template writes them),
//! as `apply_chat_template(..., tokenize=True)` does.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};

/// The template's name in the environment.
const NAME: &str = "chat_template";

/// The special tokens transformers passes to the template, by their `tokenizer_config.json` keys.
const SPECIAL_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"];

/// A compiled chat template with the tokenizer's special tokens.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    special: Vec<(String, String)>,
}

/// What a template renders: transformers' message dicts.
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    /// The template of a tokenizer directory: `chat_template.jinja` when given (what
    /// transformers 5 writes, and what it prefers), else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is used).
    /// Each file is `(path, text)`; `None` when neither has a template.
    pub fn from_files(tokenizer_config: Option<(&str, &str)>, jinja: Option<(&str, &str)>) -> Result<Option<Self>> {
        let config: serde_json::Value = match tokenizer_config {
            Some((file, text)) => serde_json::from_str(text).map_err(|e| Error::json(file, e))?,
            None => serde_json::Value::Null,
        };
        let (file, source) = match (jinja, config.get("chat_template")) {
            (Some((file, text)), _) => (file.to_string(), text.to_string()),
            (None, Some(t)) => {
                let file = tokenizer_config.map_or("tokenizer_config.json", |(f, _)| f).to_string();
                (file.clone(), Self::pick(&file, t)?)
            }
            (None, None) => return Ok(None),
        };
        let special = SPECIAL_TOKENS
            .iter()
            .filter_map(|&key| token_text(config.get(key)?).map(|t| (key.to_string(), t)))
            .collect();
        Self::new(&file, source, special).map(Some)
    }

    /// `chat_template` as a string, or the `default` entry of a list of `{name, template}`.
    fn pick(file: &str, value: &serde_json::Value) -> Result<String> {
        if let Some(s) = value.as_str() {
            return Ok(s.to_string());
        }
        value
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))?
                    .get("template")?
                    .as_str()
            })
            .map(str::to_string)
            .ok_or_else(|| {
                Error::bundle(file, "chat_template is neither a string nor a list with a `default` template")
            })
    }

    /// Compiles `source` (`file` names it in errors); `special` are the template's token
    /// variables (`("bos_token", "<s>")`, ...).
    pub fn new(file: &str, source: String, special: Vec<(String, String)>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|e| Error::bundle(file, e.to_string()))?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        #[cfg(not(target_family = "wasm"))]
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // transformers' `{% generation %}` marks assistant text for training masks; it renders
        // its body unchanged
        let source = ["{% generation %}", "{%- generation %}", "{% endgeneration %}", "{%- endgeneration %}"]
            .iter()
            .fold(source, |s, tag| s.replace(tag, ""));
        env.add_template_owned(NAME, source)
            .map_err(|e| Error::bundle(file, format!("chat template does not compile: {e:#}")))?;
        let template = Self { env, special };
        // a template that writes nothing for the plainest conversation would have every input
        // scored as an empty sequence (one that refuses it raises on real inputs, with its own
        // message)
        if template.render(&[("user", "Hello."), ("assistant", "Hi.")], false).is_ok_and(|t| t.trim().is_empty()) {
            return Err(Error::bundle(
                file,
                "the chat template renders nothing for a user and an assistant message: every input would be empty",
            ));
        }
        Ok(template)
    }

    /// The text of `messages` (`(role, content)`, oldest first), with the assistant's turn
    /// opened when `add_generation_prompt`.
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<TemplateMessage> =
            messages.iter().map(|&(role, content)| TemplateMessage { role, content }).collect();
        let mut ctx: Vec<(String, Value)> =
            self.special.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        ctx.push(("messages".into(), Value::from(Serde(&messages))));
        ctx.push(("add_generation_prompt".into(), Value::from(add_generation_prompt)));
        let template = self.env.get_template(NAME).map_err(|e| Error::Input(format!("chat template: {e}")))?;
        template
            .render(Value::from_pairs(ctx))
            .map_err(|e| Error::Input(format!("the chat template refused the conversation: {e:#}")))
    }
}

/// A special token as `tokenizer_config.json` stores it: a string, or an `AddedToken` object
/// with its `content`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`, transformers' `tojson` (minijinja's
/// own escapes HTML characters and separates items differently).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Python's `json.dumps`: `", "` and `": "` separators (`","` at line ends with an indent),
/// keys in their order, non-ASCII text as it is.
fn dump(v: &Value, indent: Option<usize>, level: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => {
            out.push_str(&serde_json::Value::String(v.as_str().unwrap_or_default().to_string()).to_string())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                dump(item, indent, level + 1, out)?;
            }
            if !items.is_empty() {
                newline(out, level);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::Value::String(key.to_string()).to_string());
                out.push_str(": ");
                dump(&v.get_item(key)?, indent, level + 1, out)?;
            }
            if !keys.is_empty() {
                newline(out, level);
            }
            out.push('}');
        }
        _ => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: cannot serialise {v}"))),
    }
    Ok(())
}

/// `datetime.now().strftime(format)` in UTC, for the codes chat templates use (`%d %b %Y`,
/// `%B`, `%m`, `%y`, `%H`, `%M`, `%S`, `%%`).
#[cfg(not(target_family = "wasm"))]
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    strftime(&format, secs)
}

/// `format` at `secs` seconds after the Unix epoch (UTC).
#[cfg_attr(target_family = "wasm", allow(dead_code))]
fn strftime(format: &str, secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_pythons_strftime() {
        // 2024-07-26 13:05:09 UTC
        assert_eq!(strftime("%d %b %Y", 1_721_999_109), "26 Jul 2024");
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %B %y %%", 1_721_999_109), "2024-07-26 13:05:09 July 24 %");
        assert_eq!(strftime("%d %b %Y", 951_782_400), "29 Feb 2000");
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
    }

    #[test]
    fn python_methods_exceptions_and_json_render_as_in_transformers() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}\
            [{{ m['role'] | upper }}] {{ m.content.strip() }}{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}\
            {% if add_generation_prompt %}[ASSISTANT]{% endif %} {{ {'a': 1, 'b': ['é', 2]} | tojson }}"
            .to_string();
        let t = ChatTemplate::new("t", source, vec![("bos_token".into(), "<s>".into())]).unwrap();
        let text = t.render(&[("user", "  hi "), ("assistant", "yo")], true).unwrap();
        assert_eq!(text, "<s>[USER] hi\n[ASSISTANT] yo[ASSISTANT] {\"a\": 1, \"b\": [\"é\", 2]}");
        let err = t.render(&[("system", "s")], false).unwrap_err();
        assert!(err.to_string().contains("no system"), "{err}");
    }

    #[test]
    fn the_template_comes_from_the_jinja_file_first_then_the_tokenizer_config() {
        let config = r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}]}"#;
        let from_config = ChatTemplate::from_files(Some(("tokenizer_config.json", config)), None).unwrap().unwrap();
        assert_eq!(from_config.render(&[], false).unwrap(), "<s>D</s>");
        let jinja =
            ChatTemplate::from_files(Some(("tokenizer_config.json", config)), Some(("chat_template.jinja", "J")))
                .unwrap()
                .unwrap();
        assert_eq!(jinja.render(&[], false).unwrap(), "J");
        assert!(ChatTemplate::from_files(Some(("c", "{}")), None).unwrap().is_none());
        let broken = ChatTemplate::from_files(None, Some(("chat_template.jinja", "{% if %}")));
        assert!(matches!(broken, Err(Error::Bundle { .. })));
    }
}
