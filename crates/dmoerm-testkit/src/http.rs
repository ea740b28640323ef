//! A minimal HTTP/1.1 client for the server tests: one request per connection, on the
//! loopback interface, nothing between the test and the socket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// A reply: status, headers (names lowercased) and body.
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// An error reply: its status and the message of the JSON error body.
    pub fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v["error"]["code"], self.status, "{}", self.body);
        v["error"]["message"].as_str().expect("an error message").to_string()
    }
}

/// One HTTP/1.1 request on its own connection.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    let raw = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full reply");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

/// Waits (up to a minute) until the server's `/metrics` show `queued` conversations in its
/// queue: a request sent from another thread has arrived.
pub fn wait_for_queue(addr: SocketAddr, queued: usize) {
    let line = format!("dmoerm_queue_inputs {queued}");
    for _ in 0..600 {
        if send(addr, "GET", "/metrics", &[], "").body.lines().any(|l| l == line) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the queue never held {queued} conversations");
}
