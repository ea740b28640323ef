//! The server over real sockets on 127.0.0.1: every route against the PyTorch reference
//! scores of the `bert` fixture (a router over two tasks, LoRA experts, aggregators), each
//! documented shape, each error, batching, the queue bound and the timeout.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use dmoerm::{Conversation, DeviceChoice, RewardModel};
use dmoerm_serve::ServeConfig;
use dmoerm_testkit::fixtures::{assert_score, expected, fixture_dir};
use dmoerm_testkit::http::{send, wait_for_queue, Reply};
use serde_json::{json, Value};

const FIXTURE: &str = "bert";

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

fn model() -> RewardModel {
    RewardModel::load(fixture_dir(FIXTURE), DeviceChoice::Cpu).expect("fixture loads")
}

fn start(config: ServeConfig) -> Server {
    let model = model();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addr_tx.send(listener.local_addr()?).expect("test waits for the address");
            dmoerm_serve::serve(listener, model, config, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("server starts");
    Server { addr, stop: Some(stop), thread: Some(thread) }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("server thread");
            if !std::thread::panicking() {
                result.expect("server ends cleanly");
            }
        }
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    send(addr, "POST", path, &[], &body.to_string())
}

fn ok(reply: Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn inputs_json() -> Vec<Value> {
    expected(FIXTURE).inputs.iter().map(|i| json!({"messages": i.messages, "response": i.response})).collect()
}

/// What the CLI prints for `score` (f32s written shortest, as the server writes them).
fn as_json(score: &dmoerm::Score) -> Value {
    serde_json::from_str(&serde_json::to_string(score).expect("json")).expect("json")
}

#[test]
fn score_matches_the_pytorch_reference_and_the_cli_shape() {
    let server = start(ServeConfig::default());
    let exp = expected(FIXTURE);
    let got = ok(post(server.addr, "/v1/score", &json!({"inputs": inputs_json()})));
    let scores = got["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), exp.inputs.len());
    let model = model();
    let convs: Vec<Conversation> = exp.inputs.iter().map(|i| i.conversation()).collect();
    let lib = model.score_batch(&convs).expect("score_batch");
    for (i, ((value, lib), input)) in scores.iter().zip(&lib).zip(&exp.inputs).enumerate() {
        // each result is the object `score --json` prints: the library's Score of the same batch
        assert_eq!(value, &as_json(lib), "input {i}: server vs library");
        assert_score(&format!("input {i}"), lib, &input.expected, exp.tolerance);
    }
    // a single-turn prompt is accepted too
    let one = ok(post(server.addr, "/v1/score", &json!({"inputs": [{"prompt": "Hi", "response": "Hello."}]})));
    let lib = model.score(&Conversation::new("Hi", "Hello.")).expect("score");
    assert_eq!(one["scores"][0], as_json(&lib));
}

#[test]
fn rank_is_best_first_as_the_reference() {
    let server = start(ServeConfig::default());
    let exp = expected(FIXTURE).rank;
    let got = ok(post(server.addr, "/v1/rank", &json!({"prompt": exp.prompt, "candidates": exp.candidates})));
    let ranked = got["ranked"].as_array().expect("ranked");
    let order: Vec<usize> = ranked.iter().map(|r| r["index"].as_u64().expect("index") as usize).collect();
    assert_eq!(order, exp.order);
    for r in ranked {
        let index = r["index"].as_u64().expect("index") as usize;
        assert_eq!(r["task"], exp.task);
        assert_eq!(r["response"], exp.candidates[index]);
        let reward = r["reward"].as_f64().expect("reward") as f32;
        assert!((reward - exp.rewards[index]).abs() <= 1e-4, "candidate {index}: {reward} vs {}", exp.rewards[index]);
    }
}

#[test]
fn openrlhf_get_reward() {
    let server = start(ServeConfig::default());
    let prompts =
        ["User: What is the capital of France?\nAssistant:", "User: Pretend you are a pirate captain.\nAssistant:"];
    let responses = [" The capital of France is Paris.</s>", " Arr, welcome aboard!</s>"];
    // as OpenRLHF sends them: decoded sequences (left padding included) and their prompts
    let queries: Vec<String> = prompts.iter().zip(responses).map(|(p, r)| format!("<pad><pad>{p}{r}")).collect();
    let body = json!({"query": queries, "prompts": prompts, "labels": ["", ""]});
    let got = ok(post(server.addr, "/get_reward", &body));
    let model = model();
    let want: Vec<_> =
        prompts.iter().zip(responses).map(|(p, r)| model.score(&Conversation::new(*p, r)).expect("score")).collect();
    let rewards: Vec<f32> = want.iter().map(|s| s.reward).collect();
    let as_f32 = |v: &Value| -> Vec<f32> {
        v.as_array().expect("list").iter().map(|x| x.as_f64().expect("number") as f32).collect()
    };
    assert_eq!(as_f32(&got["rewards"]), rewards);
    assert_eq!(as_f32(&got["scores"]), rewards);
    let logs = got["extra_logs"].as_object().expect("extra_logs");
    for task in model.tasks() {
        let routed: Vec<f32> = want.iter().map(|s| f32::from(u8::from(s.task == task))).collect();
        assert_eq!(as_f32(&logs[&format!("{task}/routed")]), routed, "{task}/routed");
        for cap in model.capabilities(task).expect("task") {
            let values: Vec<f32> =
                want.iter()
                    .map(|s| {
                        if s.task == task {
                            s.capabilities.iter().find(|(n, _)| n == cap).expect("cap").1
                        } else {
                            0.0
                        }
                    })
                    .collect();
            assert_eq!(as_f32(&logs[&format!("{task}/{cap}")]), values, "{task}/{cap}");
        }
    }
    // every list is one value per query, as OpenRLHF turns each into a tensor
    assert!(logs.values().all(|v| v.as_array().is_some_and(|a| a.len() == 2)));

    let err = post(server.addr, "/get_reward", &json!({"query": ["abc"]}));
    assert_eq!(err.status, 400);
    assert!(err.error().contains("`prompts` is required"));
    let err = post(server.addr, "/get_reward", &json!({"query": ["abc"], "prompts": ["xyz"]}));
    assert_eq!(err.status, 400);
    assert!(err.error().contains("query[0] does not contain prompts[0]"));
}

#[test]
fn vllm_classify_and_pooling() {
    let server = start(ServeConfig { model_name: "rm".into(), ..ServeConfig::default() });
    let exp = expected(FIXTURE);
    let model = model();
    let input = &exp.inputs[1]; // three turns of history
    let mut messages = serde_json::to_value(&input.messages).expect("json");
    messages.as_array_mut().expect("list").push(json!({"role": "assistant", "content": input.response}));
    let tokens = model.encode(&input.conversation()).expect("encode").expert.ids.len();

    let got = ok(post(server.addr, "/classify", &json!({"model": "rm", "messages": messages})));
    assert_eq!(got["object"], "list");
    assert_eq!(got["model"], "rm");
    assert!(got["id"].as_str().is_some_and(|id| id.starts_with("classify-")));
    assert!(got["created"].as_u64().is_some());
    assert_eq!(
        got["usage"],
        json!({"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0, "prompt_tokens_details": null})
    );
    let item = &got["data"][0];
    assert_eq!(item["index"], 0);
    assert_eq!(item["label"], input.expected.task);
    assert_eq!(item["num_classes"], 2);
    let probs: Vec<f32> =
        item["probs"].as_array().expect("probs").iter().map(|p| p.as_f64().expect("p") as f32).collect();
    for (name, p) in model.tasks().iter().zip(&probs) {
        assert!((p - input.expected.task_probs[*name]).abs() <= exp.tolerance, "P({name})");
    }

    let body = json!({"model": "rm", "input": inputs_json()});
    let got = ok(post(server.addr, "/pooling", &body));
    assert!(got["id"].as_str().is_some_and(|id| id.starts_with("pool-")));
    for (i, (item, input)) in got["data"].as_array().expect("data").iter().zip(&exp.inputs).enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["object"], "pooling");
        let reward = item["data"][0].as_f64().expect("reward") as f32;
        assert!((reward - input.expected.reward).abs() <= exp.tolerance, "input {i}: {reward}");
    }

    let err = post(server.addr, "/classify", &json!({"model": "rm", "input": ["already rendered text"]}));
    assert_eq!(err.status, 400);
    assert!(err.error().contains("input[0] is a string"));
    let err = post(server.addr, "/pooling", &json!({"model": "rm", "messages": messages, "truncate_prompt_tokens": 8}));
    assert_eq!(err.status, 400);
    assert!(err.error().contains("truncate_prompt_tokens is not supported"));
    let err = post(server.addr, "/pooling", &json!({"model": "rm", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(err.status, 400);
    assert!(err.error().contains("the last message must be the assistant's response"));
}

#[test]
fn errors_are_json_with_the_right_status() {
    let config = ServeConfig { max_inputs: 3, max_input_bytes: 200, max_body_bytes: 4096, ..ServeConfig::default() };
    let server = start(config);
    let a = server.addr;
    let bad = send(a, "POST", "/v1/score", &[], "{not json");
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("invalid request body"));
    let empty = post(a, "/v1/score", &json!({"inputs": []}));
    assert_eq!(empty.status, 400);
    assert!(empty.error().contains("no inputs"));
    let many = post(a, "/v1/score", &json!({"inputs": vec![json!({"prompt": "q", "response": "r"}); 4]}));
    assert_eq!(many.status, 400);
    assert!(many.error().contains("4 inputs in one request; the limit is 3"));
    let long = post(a, "/v1/score", &json!({"inputs": [{"prompt": "q", "response": "x".repeat(300)}]}));
    assert_eq!(long.status, 400);
    assert!(long.error().contains("301 bytes of text; the limit is 200"));
    let both = post(a, "/v1/score", &json!({"inputs": [{"prompt": "q", "messages": [], "response": "r"}]}));
    assert_eq!(both.status, 400);
    assert!(both.error().contains("exactly one of `prompt` and `messages`"));
    let no_user = post(a, "/v1/rank", &json!({"messages": [{"role": "system", "content": "s"}], "candidates": ["a"]}));
    assert_eq!(no_user.status, 400);
    assert!(no_user.error().contains("at least one user message"));
    let no_candidates = post(a, "/v1/rank", &json!({"prompt": "q", "candidates": []}));
    assert_eq!(no_candidates.status, 400);
    let big = send(a, "POST", "/v1/score", &[], &format!("{{\"inputs\": [], \"pad\": \"{}\"}}", "x".repeat(5000)));
    assert_eq!(big.status, 413);
    assert!(big.error().contains("over the limit of 4096 bytes"));
    let missing = send(a, "GET", "/nowhere", &[], "");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error(), "no such route");
    let health = send(a, "GET", "/health", &[], "");
    assert_eq!(health.json(), json!({"status": "ok"}));
}

#[test]
fn api_key_is_required_except_for_health() {
    let server = start(ServeConfig { api_key: Some("s3cret".into()), ..ServeConfig::default() });
    let body = json!({"inputs": [{"prompt": "Hi", "response": "Hello."}]}).to_string();
    for headers in [vec![], vec![("Authorization", "Bearer wrong")], vec![("Authorization", "s3cret")]] {
        let r = send(server.addr, "POST", "/v1/score", &headers, &body);
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
        assert!(!r.body.contains("s3cret"));
    }
    let r = send(server.addr, "GET", "/metrics", &[], "");
    assert_eq!(r.status, 401);
    let r = send(server.addr, "POST", "/v1/score", &[("Authorization", "Bearer s3cret")], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(send(server.addr, "GET", "/health", &[], "").status, 200);
}

/// Requests within the window are scored as one batch, and each caller gets its own scores.
#[test]
fn concurrent_requests_share_batches() {
    let config = ServeConfig { batch_window: Duration::from_millis(2000), ..ServeConfig::default() };
    let server = start(config);
    let exp = expected(FIXTURE);
    let addr = server.addr;
    let threads: Vec<_> = exp
        .inputs
        .iter()
        .map(|input| {
            let body = json!({"inputs": [{"messages": input.messages, "response": input.response}]});
            std::thread::spawn(move || ok(post(addr, "/v1/score", &body)))
        })
        .collect();
    for (i, (t, input)) in threads.into_iter().zip(&exp.inputs).enumerate() {
        let got = t.join().expect("client");
        let reward = got["scores"][0]["reward"].as_f64().expect("reward") as f32;
        assert_eq!(got["scores"][0]["task"], input.expected.task, "input {i}");
        assert!((reward - input.expected.reward).abs() <= exp.tolerance, "input {i}: {reward}");
    }
    let metrics = send(addr, "GET", "/metrics", &[], "");
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"].starts_with("application/openmetrics-text"));
    let text = metrics.body;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    // 5 conversations in fewer than 5 batches
    assert_eq!(value("dmoerm_batch_inputs_sum"), 5.0);
    assert!(value("dmoerm_batch_inputs_count") < 5.0, "{text}");
    assert_eq!(value("dmoerm_requests_total{route=\"/v1/score\",status=\"200\"}"), 5.0);
    assert_eq!(value("dmoerm_queue_inputs"), 0.0);
    assert!(text.contains("dmoerm_request_duration_seconds_bucket{le=\"0.001\",route=\"/v1/score\"}"), "{text}");
}

/// A full queue answers 429 with Retry-After at once; a request over its time answers 504.
#[test]
fn full_queue_and_timeout() {
    let config = ServeConfig {
        batch_window: Duration::from_millis(1500),
        queue_inputs: 2,
        max_inputs: 2,
        ..ServeConfig::default()
    };
    let server = start(config);
    let addr = server.addr;
    let two = json!({"inputs": [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]});
    let first = std::thread::spawn(move || post(addr, "/v1/score", &two));
    wait_for_queue(addr, 2); // the worker holds the first in its window
    let busy = post(addr, "/v1/score", &json!({"inputs": [{"prompt": "a", "response": "b"}]}));
    assert_eq!(busy.status, 429);
    assert_eq!(busy.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(busy.error().contains("queue is full"));
    assert_eq!(first.join().expect("client").status, 200);
    drop(server);

    let config = ServeConfig {
        batch_window: Duration::from_millis(1000),
        timeout: Duration::from_millis(100),
        ..ServeConfig::default()
    };
    let server = start(config);
    let late = post(server.addr, "/v1/score", &json!({"inputs": [{"prompt": "a", "response": "b"}]}));
    assert_eq!(late.status, 504);
    assert!(late.error().contains("took longer than 100ms"));
}
