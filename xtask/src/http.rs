//! A minimal blocking HTTP/1.1 client (one connection per request, `Connection: close`) for the
//! end-to-end and chaos checks: it tells "could not connect" (nothing was sent, safe to retry)
//! apart from failures after the request may have reached the server.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub(crate) enum CallError {
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
    pub(crate) fn label(&self) -> &'static str {
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
pub(crate) fn call(
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
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
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
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// The payload of a chunked body (as far as it arrived).
fn dechunk(mut body: &str) -> String {
    let mut decoded = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        decoded.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    decoded
}

/// The free TCP port the kernel hands out next on 127.0.0.1.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
