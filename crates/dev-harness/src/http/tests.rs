//! The client against raw TCP servers that answer exactly as each case needs: a chunk boundary
//! inside a UTF-8 character, no answer, a cut answer, a refused connection.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::{CallError, call};

/// Serves one connection on a free port: reads the request head, then writes `answer` and, if
/// `hang`, keeps the connection open a while before closing it.
fn serve_once(answer: &'static [u8], hang: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(answer);
        std::thread::sleep(hang);
    });
    port
}

fn get(port: u16, timeout: Duration) -> Result<(u16, String), CallError> {
    call(port, "GET", "/", &[("accept", "*/*")], None, timeout)
}

#[test]
fn a_chunk_boundary_inside_a_utf8_character_neither_panics_nor_mangles_it() {
    // "é" is two bytes, split across two chunks; "→" is three, split 1 + 2.
    let port = serve_once(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\na\xc3\r\n3\r\n\xa9 \xe2\r\n2\r\n\x86\x92\r\n0\r\n\r\n",
        Duration::ZERO,
    );
    assert_eq!(
        get(port, Duration::from_secs(5)).unwrap(),
        (200, "aé →".to_owned())
    );
}

#[test]
fn a_content_length_answer_is_read_whole() {
    let port = serve_once(
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!",
        Duration::ZERO,
    );
    assert_eq!(
        get(port, Duration::from_secs(5)).unwrap(),
        (404, "nope!".to_owned())
    );
}

#[test]
fn failures_say_whether_the_request_can_have_reached_the_server() {
    let refused = crate::free_port().unwrap();
    let error = get(refused, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(error, CallError::Connect(_)), "{error}");
    assert_eq!(error.label(), "connect");

    let closed = serve_once(b"", Duration::ZERO);
    let error = get(closed, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(error, CallError::NoAnswer(_)), "{error}");

    let silent = serve_once(b"", Duration::from_secs(3));
    let error = get(silent, Duration::from_millis(300)).unwrap_err();
    assert_eq!(
        (error.label(), matches!(error, CallError::NoAnswer(_))),
        ("timeout", true)
    );

    let cut = serve_once(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        Duration::ZERO,
    );
    let error = get(cut, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(error, CallError::Io(_)), "{error}");
    assert_eq!(error.label(), "reset");
}
