//! One judge call: `POST {api-base}/chat/completions` (OpenAI, vLLM, llama.cpp server,
//! Ollama...), with a request timeout, a requests-per-second limit shared by all workers,
//! and retries with exponential backoff and jitter on 429, 5xx, timeouts, broken connections
//! and malformed bodies, honouring `Retry-After`.
//!
//! The API key is sent as a bearer token and kept out of every error, log and `Debug` output.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Settings of the client.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub api_base: String,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer token; `None` sends no `Authorization` header.
    pub api_key: Option<String>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry (capped at 60 s), with +-50% jitter.
    pub backoff: Duration,
    /// Requests per second over all workers (`None`: unlimited).
    pub rps: Option<f64>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_base", &self.api_base)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// A judge's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The message text (a refusal field, when the API sets one, counts as text).
    pub content: String,
    /// Whether the API flagged a refusal.
    pub refusal: bool,
    /// `usage.total_tokens`, when reported.
    pub tokens: u64,
}

/// Why a call failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError(pub String);

/// The shared HTTP client.
pub struct Client {
    config: ClientConfig,
    agent: ureq::Agent,
    next_slot: Mutex<Instant>,
    seed: Mutex<u64>,
}

impl Client {
    /// A client; the agent is shared by all worker threads.
    pub fn new(config: ClientConfig) -> Self {
        let builder = ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false);
        // the system's TLS on macOS and Windows (see Cargo.toml)
        #[cfg(any(target_os = "macos", windows))]
        let builder =
            builder.tls_config(ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::NativeTls).build());
        let agent: ureq::Agent = builder.build().into();
        let seed = Instant::now().elapsed().subsec_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
        Self { config, agent, next_slot: Mutex::new(Instant::now()), seed: Mutex::new(seed | 1) }
    }

    /// Waits for this request's slot under the rate limit.
    fn throttle(&self) {
        let Some(rps) = self.config.rps.filter(|r| *r > 0.0) else { return };
        let wait = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / rps);
            slot - now
        };
        std::thread::sleep(wait);
    }

    /// A factor in [0.5, 1.5).
    fn jitter(&self) -> f64 {
        let mut s = self.seed.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        0.5 + (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Asks the judge, retrying transient failures. `retried` is called before each retry
    /// with the reason (never containing the key).
    pub fn ask(&self, prompt: &str, mut retried: impl FnMut(&str)) -> Result<Reply, CallError> {
        let mut attempt = 0;
        loop {
            self.throttle();
            let (err, retry_after) = match self.once(prompt) {
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(e)) => return Err(CallError(e)),
                Err(Failure::Transient(e, after)) => (e, after),
            };
            if attempt >= self.config.max_retries {
                return Err(CallError(format!("{err} (after {} attempts)", attempt + 1)));
            }
            retried(&err);
            let backoff = self.config.backoff.as_secs_f64() * 2f64.powi(attempt as i32);
            let wait = retry_after.unwrap_or_else(|| backoff.min(60.0) * self.jitter());
            std::thread::sleep(Duration::from_secs_f64(wait.max(0.0)));
            attempt += 1;
        }
    }

    fn once(&self, prompt: &str) -> Result<Reply, Failure> {
        let url = format!("{}/chat/completions", self.config.api_base.trim_end_matches('/'));
        let body = json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 16,
        });
        let mut request = self.agent.post(&url).header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body.to_string()).map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s.min(300.0));
        let text = response.body_mut().read_to_string().map_err(transport)?;
        match status {
            200..=299 => parse_reply(&text),
            429 => Err(Failure::Transient("HTTP 429 (rate limited)".into(), retry_after)),
            500..=599 => Err(Failure::Transient(format!("HTTP {status}"), retry_after)),
            _ => Err(Failure::Final(format!("HTTP {status}: {}", snippet(&text)))),
        }
    }
}

enum Failure {
    Transient(String, Option<f64>),
    Final(String),
}

fn transport(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(_) | ureq::Error::Io(_) | ureq::Error::Protocol(_) | ureq::Error::HostNotFound => {
            Failure::Transient(format!("transport: {e}"), None)
        }
        other => Failure::Final(format!("request: {other}")),
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The chat-completions response: `choices[0].message.{content, refusal}`, `usage.total_tokens`.
fn parse_reply(text: &str) -> Result<Reply, Failure> {
    let bad = || Failure::Transient(format!("malformed response body: {}", snippet(text)), None);
    let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
    let message = v.pointer("/choices/0/message").ok_or_else(bad)?;
    let refusal = message.get("refusal").and_then(Value::as_str).filter(|s| !s.is_empty());
    let content = message.get("content").and_then(Value::as_str);
    if content.is_none() && refusal.is_none() {
        return Err(bad());
    }
    Ok(Reply {
        content: content.or(refusal).unwrap_or_default().to_string(),
        refusal: refusal.is_some(),
        tokens: v.pointer("/usage/total_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}
