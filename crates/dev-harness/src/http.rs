//! A minimal blocking HTTP/1.1 client (one connection per request, `Connection: close`) for the
//! end-to-end and chaos checks and the binaries' tests: it tells "could not connect" (nothing was
//! sent, safe to retry) apart from failures after the request may have reached the server.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub enum CallError {
    /// The connection was refused or could not be made: the server never saw the request.
    Connect(std::io::Error),
    /// The connection closed or broke before a single byte of answer: the server never began
    /// to answer (a proxy in front of a stopped server closes connections this way).
    NoAnswer(std::io::Error),
    /// The connection broke or timed out after the answer had begun.
    Io(std::io::Error),
}

impl CallError {
    /// A short label for reports: `connect`, `no answer`, `timeout` or `reset`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::NoAnswer(error)
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                "timeout"
            }
            Self::NoAnswer(_) => "no answer",
            Self::Io(error)
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                "timeout"
            }
            Self::Io(_) => "reset",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(error) => write!(formatter, "cannot connect: {error}"),
            Self::NoAnswer(error) => write!(formatter, "no answer: {error}"),
            Self::Io(error) => write!(formatter, "connection failed: {error}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one request to 127.0.0.1:`port`; answers the status and the decoded body. A body is
/// sent as JSON.
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), CallError> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(CallError::Connect)?;
    let mut response = Vec::new();
    let mut exchange = |stream: &mut TcpStream| -> std::io::Result<()> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = json.unwrap_or("");
        if json.is_some() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        stream.read_to_end(&mut response)?;
        Ok(())
    };
    if let Err(error) = exchange(&mut stream) {
        return Err(if response.is_empty() {
            CallError::NoAnswer(error)
        } else {
            CallError::Io(error)
        });
    }
    let Some(head_end) = response.windows(4).position(|window| window == b"\r\n\r\n") else {
        let error = std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the connection closed before a complete response head",
        );
        return Err(if response.is_empty() {
            CallError::NoAnswer(error)
        } else {
            CallError::Io(error)
        });
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let body = &response[head_end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    // De-chunked as bytes, then decoded: a chunk boundary may split a UTF-8 character.
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a chunked body (as far as it arrived).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    while let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok());
        let rest = &body[line_end + 2..];
        let Some(size) = size.filter(|size| *size > 0 && rest.len() >= *size) else {
            break;
        };
        decoded.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    fn check(body: &[u8], expected: &str) {
        assert_eq!(String::from_utf8_lossy(&dechunk(body)), expected);
    }

    #[test]
    fn chunks_are_joined_up_to_the_last_chunk_or_as_far_as_they_arrived() {
        check(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
        check(b"5\r\nhello\r\n6\r\n wo", "hello");
        check(b"A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
        check(b"", "");
        check(b"zz\r\nhello\r\n", "");
    }

    #[test]
    fn a_chunk_boundary_inside_a_utf8_character_neither_panics_nor_mangles_it() {
        // "é" is two bytes, split across two chunks; "→" is three, split 1 + 2.
        let body = b"2\r\na\xc3\r\n3\r\n\xa9 \xe2\r\n2\r\n\x86\x92\r\n0\r\n\r\n";
        check(body, "aé →");
    }
}
