//! The harness's HTTP/1.1 client, on hyper: [`send`] makes one request on a connection of its own
//! (`Connection: close`) and tells "could not connect" (nothing was sent, safe to retry) apart from
//! failures after the request may have reached the server; [`call`] is the same for blocking code
//! (e2e, probes, one-off checks). The load generator (`crate::load`) drives the same hyper client
//! on kept-alive connections.

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::load::Request;

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

/// An answer: its status and its whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to 127.0.0.1:`port` on a new connection and reads the whole answer, all
/// within `timeout`.
pub async fn send(port: u16, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || std::io::Error::new(ErrorKind::TimedOut, "no answer in time");
    let connect = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let _ = stream.set_nodelay(true);
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)
    };
    let (mut sender, connection) =
        match tokio::time::timeout(Duration::from_secs(5).min(timeout), connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => return Err(CallError::Connect(error)),
            Err(_) => return Err(CallError::Connect(timed_out())),
        };
    tokio::spawn(connection);
    let request = request
        .to_hyper(true)
        .map_err(|error| CallError::Connect(std::io::Error::other(error)))?;
    let response = match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(CallError::NoAnswer(std::io::Error::other(error))),
        Err(_) => return Err(CallError::NoAnswer(timed_out())),
    };
    let status = response.status().as_u16();
    match tokio::time::timeout_at(deadline, response.into_body().collect()).await {
        Ok(Ok(body)) => Ok(Reply {
            status,
            body: body.to_bytes(),
        }),
        Ok(Err(error)) => Err(CallError::Io(std::io::Error::other(error))),
        Err(_) => Err(CallError::Io(timed_out())),
    }
}

/// [`send`] for blocking code: `method path` with `headers` and an optional JSON body; answers
/// the status and the body as text.
pub fn call(
    port: u16,
    method: &'static str,
    path: &str,
    headers: &[(&'static str, &str)],
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), CallError> {
    let request = Request {
        method,
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect(),
        json: json.map(str::to_owned),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CallError::Connect)?;
    let reply = runtime.block_on(send(port, &request, timeout))?;
    Ok((reply.status, reply.text()))
}

impl Request {
    /// The hyper request; `close` asks the server to close the connection after answering.
    pub(crate) fn to_hyper(&self, close: bool) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header("host", "127.0.0.1");
        if close {
            builder = builder.header("connection", "close");
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let body = match &self.json {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(json.clone()))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(builder.body(body)?)
    }
}

#[cfg(test)]
mod tests;
