//! `dmoerm label` against a local chat-completions server (127.0.0.1) with a deterministic
//! judge and injected faults: 429 with Retry-After, 500, hangs past the timeout, truncated
//! JSON, free-text answers, refusals, unparseable answers, position-biased ties.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "sk-test-7f3a9c1e-DO-NOT-LEAK";
const TEMPLATE: &str = "POINT={capability}\nA={response_a}\nB={response_b}\nEND";
const CATEGORIES: &str =
    r#"{"test": {"alpha": "count of a", "echo": "count of e", "refusal_point": "refused", "vague": "vague"}}"#;

/// What the judge thinks of a response on a point: occurrences of the point's first letter.
fn quality(response: &str, point: &str) -> usize {
    let c = point.chars().next().unwrap_or('x');
    response.chars().filter(|&x| x == c).count()
}

#[derive(Default)]
struct Judge {
    attempts: Mutex<HashMap<u64, u32>>,
    faults: Mutex<HashMap<&'static str, usize>>,
    requests: AtomicUsize,
}

fn hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Judge {
    /// Status, extra headers, body; `None` = hang.
    fn reply(&self, prompt: &str) -> Option<(u16, String, String)> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let h = hash(prompt);
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(h).or_insert(0);
            *n += 1;
            *n
        };
        let fault = |name: &'static str| *self.faults.lock().unwrap().entry(name).or_insert(0) += 1;
        if attempt == 1 {
            match h % 6 {
                0 => {
                    fault("429");
                    return Some((429, "Retry-After: 1\r\n".into(), r#"{"error":"slow down"}"#.into()));
                }
                1 => {
                    fault("500");
                    return Some((500, String::new(), "oops".into()));
                }
                2 => {
                    fault("hang");
                    return None;
                }
                3 => {
                    fault("truncated");
                    return Some((200, String::new(), r#"{"choices":[{"message":{"content":"1"#.into()));
                }
                _ => {}
            }
        }
        let field = |name: &str| {
            prompt.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
        };
        let (point, a, b) = (field("POINT"), field("A"), field("B"));
        let choice = match quality(&a, &point).cmp(&quality(&b, &point)) {
            std::cmp::Ordering::Less => 2,
            _ => 1, // ties: position bias, so the swapped question disagrees
        };
        let content = match point.as_str() {
            "refusal_point" => "I'm sorry, but I can't help with that.".to_string(),
            "vague" => "Both responses are fine.".to_string(),
            _ => match h % 3 {
                0 => format!("{choice}"),
                1 => format!("Response {choice} is better."),
                _ => format!("**{choice}**"),
            },
        };
        let body = json!({
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        });
        Some((200, String::new(), body.to_string()))
    }
}

fn handle(mut stream: TcpStream, judge: &Judge) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < header_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let respond = |mut stream: TcpStream, status: u16, extra: &str, body: &str| {
        let text = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(text.as_bytes());
    };
    if header("authorization").as_deref() != Some(&format!("Bearer {KEY}")) {
        return respond(stream, 401, "", r#"{"error":"bad key"}"#);
    }
    if !head.starts_with("POST /v1/chat/completions ") {
        return respond(stream, 404, "", "{}");
    }
    let body: Value = serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or_default();
    let prompt = body.pointer("/messages/0/content").and_then(Value::as_str).unwrap_or_default();
    match judge.reply(prompt) {
        Some((status, extra, body)) => respond(stream, status, &extra, &body),
        None => std::thread::sleep(Duration::from_secs(2)), // past the client's timeout
    }
}

/// Starts the server; returns its API base.
fn serve() -> (String, Arc<Judge>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let judge = Arc::new(Judge::default());
    let j = judge.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let j = j.clone();
            std::thread::spawn(move || handle(stream, &j));
        }
    });
    (base, judge)
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dmoerm-label-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lines = [
            json!({"src": ["Tell me about apples."], "tgt": [], "response": ["an apple a day", "eeee eel", "banana bread"], "rank": [1, 2, 3], "label": "test"}),
            json!({"src": ["hi", "tell me more"], "tgt": ["hello there"], "response": ["a cat sat", "the eve", "aaa eee", "zzz"], "rank": [2, 1, 3, 4], "label": "test"}),
            json!({"src": ["Pick one {response_a}"], "response": ["alpha", "beta"], "rank": [1, 2], "label": "test"}),
        ];
        let input: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(dir.join("in.jsonl"), input.join("\n") + "\n").unwrap();
        std::fs::write(dir.join("categories.json"), CATEGORIES).unwrap();
        std::fs::write(dir.join("template.txt"), TEMPLATE).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn command(&self, base: &str, out: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dmoerm"));
        c.args(["label", "--input", &self.path("in.jsonl"), "--output", &self.path(out), "--api-base", base])
            .args(["--model", "judge", "--categories", &self.path("categories.json")])
            .args(["--prompt-template", &self.path("template.txt"), "--timeout", "0.5", "--backoff-ms", "50"])
            .args(["--max-retries", "5"])
            .args(if extra.contains(&"--concurrency") { &[][..] } else { &["--concurrency", "4"][..] })
            .args(extra)
            .env_remove("OPENAI_API_KEY")
            .env("DMOERM_API_KEY", KEY);
        c
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// The labels the judge gives consistently: (id, outcome).
fn expected() -> BTreeSet<(String, String)> {
    let responses: [&[&str]; 3] = [
        &["an apple a day", "eeee eel", "banana bread"],
        &["a cat sat", "the eve", "aaa eee", "zzz"],
        &["alpha", "beta"],
    ];
    let mut out = BTreeSet::new();
    for (line, resp) in responses.iter().enumerate() {
        for i in 0..resp.len() {
            for j in i + 1..resp.len() {
                for point in ["alpha", "echo", "refusal_point", "vague"] {
                    let id = format!("{}:{i}:{j}:{point}", line + 1);
                    let outcome = match point {
                        "refusal_point" => "refused".to_string(),
                        "vague" => "unparseable".to_string(),
                        _ => match quality(resp[i], point).cmp(&quality(resp[j], point)) {
                            std::cmp::Ordering::Greater => "[1,2]".into(),
                            std::cmp::Ordering::Less => "[2,1]".into(),
                            std::cmp::Ordering::Equal => "inconsistent".into(),
                        },
                    };
                    out.insert((id, outcome));
                }
            }
        }
    }
    out
}

fn outcomes(files: &Files, out: &str) -> BTreeSet<(String, String)> {
    let mut got = BTreeSet::new();
    for line in files.read(out).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["responses"].as_array().unwrap().len(), 2);
        // the conversation stays messages (rendered by the bundle's template when training)
        let messages = v["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(messages.len() % 2, 1, "user and assistant turns alternate, ending with the user");
        got.insert((v["id"].as_str().unwrap().to_string(), v["rank"].to_string()));
    }
    for line in files.read(&format!("{out}.dropped.jsonl")).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        got.insert((v["id"].as_str().unwrap().to_string(), v["reason"].as_str().unwrap().to_string()));
    }
    got
}

fn assert_no_key(files: &Files, outputs: &[&Output]) {
    for entry in std::fs::read_dir(&files.dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!text.contains(KEY), "the API key leaked into a file");
    }
    for o in outputs {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(KEY) && !String::from_utf8_lossy(&o.stderr).contains(KEY));
    }
}

#[test]
fn labels_survive_every_fault() {
    let (base, judge) = serve();
    let files = Files::new("faults");
    let out = files.command(&base, "points.jsonl", &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(outcomes(&files, "points.jsonl"), expected());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = expected().len() as u64;
    assert_eq!(summary["items"], items);
    assert!(summary["retried"].as_u64().unwrap() > 0);
    assert_eq!(summary["tokens"].as_u64().unwrap(), 11 * (2 * items));
    assert_eq!(summary["requests"].as_u64().unwrap(), judge.requests.load(Ordering::SeqCst) as u64);
    let faults = judge.faults.lock().unwrap().clone();
    for kind in ["429", "500", "hang", "truncated"] {
        assert!(faults.get(kind).copied().unwrap_or(0) > 0, "fault {kind} was never injected: {faults:?}");
    }
    assert_no_key(&files, &[&out]);

    // a second run has nothing left to do
    let again = files.command(&base, "points.jsonl", &["--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.contains(&format!("{items} items")) && text.contains(&format!("{items} already done, 0 requests")),
        "{text}"
    );
}

#[test]
fn kill_9_then_resume_gives_the_same_files() {
    let (base, _judge) = serve();
    let files = Files::new("kill");
    let full = files.command(&base, "full.jsonl", &[]).output().unwrap();
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stderr));

    let total = files.read("full.jsonl").lines().count() + files.read("full.jsonl.dropped.jsonl").lines().count();
    let mut child = files
        .command(&base, "resumed.jsonl", &["--rps", "8", "--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let written =
        |f: &Files| f.read("resumed.jsonl").lines().count() + f.read("resumed.jsonl.dropped.jsonl").lines().count();
    while written(&files) < 3 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = written(&files);
    assert!(partial >= 3 && partial < total, "the kill must land mid-run: {partial} of {total}");

    let resumed = files.command(&base, "resumed.jsonl", &[]).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let summary: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(summary["already_done"].as_u64().unwrap() as usize, partial);
    assert_eq!(files.read("resumed.jsonl"), files.read("full.jsonl"));
    assert_eq!(files.read("resumed.jsonl.dropped.jsonl"), files.read("full.jsonl.dropped.jsonl"));
    assert_no_key(&files, &[&full, &resumed]);
}

#[test]
fn a_torn_last_line_is_repaired() {
    let (base, _judge) = serve();
    let files = Files::new("torn");
    let full = files.command(&base, "full.jsonl", &[]).output().unwrap();
    assert!(full.status.success());
    // keep two whole lines and half of the third, as a kill inside write() could leave
    let text = files.read("full.jsonl");
    let cut: usize = text.lines().take(2).map(|l| l.len() + 1).sum::<usize>() + 10;
    std::fs::write(files.path("torn.jsonl"), &text[..cut]).unwrap();
    let resumed = files.command(&base, "torn.jsonl", &[]).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(files.read("torn.jsonl"), text);
}

#[test]
fn a_wrong_key_fails_without_printing_it() {
    let (base, _judge) = serve();
    let files = Files::new("badkey");
    let out = files.command(&base, "x.jsonl", &[]).env("DMOERM_API_KEY", "wrong-key-123").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 401") && !err.contains("wrong-key-123"), "{err}");
    assert!(files.read("x.jsonl").is_empty());
}

#[test]
fn bad_input_names_file_and_line() {
    let files = Files::new("badinput");
    std::fs::write(
        files.path("in.jsonl"),
        "{\"src\": [\"q\"], \"response\": [\"a\", \"b\"], \"label\": \"test\"}\n{\"src\": []}\n",
    )
    .unwrap();
    let out = files.command("http://127.0.0.1:9/v1", "x.jsonl", &["--dry-run"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2:"), "{err}");
}
