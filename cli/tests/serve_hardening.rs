//! `keel serve` bounds what a slow or stalled client can hold: a request
//! head that never completes, a body that stops short of its
//! Content-Length and a silent keep-alive connection are each closed after
//! their timeout, and none of them keeps the server from exiting within
//! `--shutdown-timeout` of SIGTERM; requests in flight when SIGTERM arrives
//! are still answered and every answered increment is durable. A port in
//! use is refused with the address and the flag to change it, before any
//! database file is created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Dir, Server, keel, try_request};

/// Connect to `server` and send `bytes`, leaving the connection open.
fn send_raw(server: &Server, bytes: &str) -> TcpStream {
    let addr = server.url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes.as_bytes()).unwrap();
    stream
}

/// Read until the server closes the connection (at most 20 s): what it sent
/// and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!(
                "the connection was still open after {:?} ({err}); received {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_port_in_use_is_named_with_the_flag_to_change_it_and_no_database_is_created() {
    let dir = Dir::new();
    let occupied = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupied.local_addr().unwrap().to_string();
    let db = dir.path().join("new.redb");
    let stderr = keel(&["serve", "--addr", &addr, "--db", db.to_str().unwrap()]).fails();
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(stderr.contains("--addr"), "suggests --addr: {stderr}");
    assert!(!db.exists(), "created {} anyway", db.display());
    drop(occupied);
}

#[test]
fn a_stalled_request_head_or_body_does_not_delay_exit_past_the_shutdown_deadline() {
    let dir = Dir::new();
    let db = dir.db();
    // Header and body timeouts stay at their defaults (60 s): the deadline
    // alone must end these connections.
    let server = Server::start_with(
        &dir,
        &["--db", db.to_str().unwrap(), "--shutdown-timeout", "2"],
    );
    let _head = send_raw(&server, "GET /api/count HTTP/1.1\r\nHost: keel\r\n");
    let _body = send_raw(
        &server,
        "POST /api/count HTTP/1.1\r\nHost: keel\r\nContent-Length: 100\r\n\r\n0123456789",
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    // Asserts a successful exit within 10 s of SIGTERM.
    let logs = server.stop();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "exited after {:?}, before the deadline: were the stalled requests cut at once?",
        started.elapsed()
    );
    assert!(
        logs.contains("closing the connections still open"),
        "{logs}"
    );
}

#[test]
fn a_stalled_request_head_is_closed_after_the_header_timeout() {
    let dir = Dir::new();
    let db = dir.db();
    let server = Server::start_with(
        &dir,
        &["--db", db.to_str().unwrap(), "--header-timeout", "1"],
    );
    let mut stream = send_raw(&server, "GET /api/count HTTP/1.1\r\nHost: keel\r\n");
    let (_, took) = read_until_closed(&mut stream);
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
}

#[test]
fn a_request_body_shorter_than_its_length_is_refused_after_the_body_timeout() {
    let dir = Dir::new();
    let db = dir.db();
    let server = Server::start_with(&dir, &["--db", db.to_str().unwrap(), "--body-timeout", "1"]);
    let mut stream = send_raw(
        &server,
        "POST /api/count HTTP/1.1\r\nHost: keel\r\nContent-Length: 100\r\n\r\n0123456789",
    );
    let (response, took) = read_until_closed(&mut stream);
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    let status = response.split(' ').nth(1).unwrap_or_default();
    assert!(
        status == "400" || status == "408",
        "a client error: {response:?}"
    );
    // Nothing of the refused request was committed.
    let (status, body) =
        try_request("GET", &format!("{}/api/count", server.url), "not-a-session").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"count":0}"#));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = Dir::new();
    let db = dir.db();
    let server = Server::start_with(&dir, &["--db", db.to_str().unwrap(), "--idle-timeout", "1"]);
    let mut stream = send_raw(&server, "GET /api/count HTTP/1.1\r\nHost: keel\r\n\r\n");
    let (response, took) = read_until_closed(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        !response.to_ascii_lowercase().contains("connection: close"),
        "the answer itself keeps the connection: {response:?}"
    );
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
}

#[test]
fn requests_in_flight_when_sigterm_arrives_are_answered_and_durable() {
    let dir = Dir::new();
    let db = dir.db();
    let args = ["--db", db.to_str().unwrap(), "--shutdown-timeout", "3"];
    let server = Server::start_with(&dir, &args);
    let url = format!("{}/api/count", server.url);
    // A stalled client, so that shutdown does meet its deadline.
    let _stalled = send_raw(&server, "GET /api/count HTTP/1.1\r\nHost: keel\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let first = server.request("POST", "/api/count", None, None);
            assert_eq!(first.status, 200, "{first:?}");
            let cookie = first.session_cookie().unwrap();
            let url = url.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Increments answered 200, and whether one more was sent
                // whose answer never came.
                let mut answered = 1u64;
                let mut unanswered = false;
                while !stop.load(Ordering::SeqCst) {
                    match try_request("POST", &url, &cookie) {
                        Some((200, body)) => {
                            answered += 1;
                            let count: serde_json::Value = serde_json::from_str(&body).unwrap();
                            assert_eq!(count["count"], answered, "answers count up");
                        }
                        Some(_) => break,
                        None => {
                            unanswered = true;
                            break;
                        }
                    }
                }
                (cookie, answered, unanswered)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM while the clients keep sending; asserts a successful exit
    // within 10 s.
    let logs = server.stop();
    stop.store(true, Ordering::SeqCst);
    assert!(
        logs.contains("closing the connections still open"),
        "the stalled client met the deadline: {logs}"
    );
    let server = Server::start_with(&dir, &args);
    for client in clients {
        let (cookie, answered, unanswered) = client.join().unwrap();
        let stored = server
            .request("GET", "/api/count", None, Some(&cookie))
            .json()["count"]
            .as_u64()
            .unwrap();
        // Every answered increment is durable; one cut off by the shutdown
        // may or may not be, never more.
        assert!(
            stored == answered || (unanswered && stored == answered + 1),
            "stored {stored}, answered {answered}, one unanswered: {unanswered}"
        );
    }
}
