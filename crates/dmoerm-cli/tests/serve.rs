//! `dmoerm serve` as a process: it prints the address it listens on, serves, and on SIGTERM
//! finishes the request in flight before it exits.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use dmoerm_testkit::fixtures::{expected, fixture_dir};
use dmoerm_testkit::http::{send, wait_for_queue};
use serde_json::json;

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits() {
    let model = fixture_dir("bert");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmoerm"))
        .args(["serve", "--device", "cpu", "--addr", "127.0.0.1:0", "--batch-window-ms", "3000", "--model"])
        .arg(&model)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dmoerm serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the serving line");
    let addr: SocketAddr = line.trim().rsplit("http://").next().and_then(|a| a.parse().ok()).expect(&line);

    let input = &expected("bert").inputs[0];
    let body = json!({"inputs": [{"messages": input.messages, "response": input.response}]}).to_string();
    let client = std::thread::spawn(move || send(addr, "POST", "/v1/score", &[], &body));
    // the worker holds the request in its 3 s batch window while SIGTERM arrives
    wait_for_queue(addr, 1);
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());

    let reply = client.join().expect("client");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reward = reply.json()["scores"][0]["reward"].as_f64().expect("reward") as f32;
    assert!((reward - input.expected.reward).abs() <= 1e-4, "{reward} vs {}", input.expected.reward);
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
    assert!(TcpStream::connect(addr).is_err(), "the port is closed after shutdown");
}
