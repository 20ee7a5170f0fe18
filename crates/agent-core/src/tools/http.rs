//! Operator-declared HTTP tools: the model's arguments go out as JSON to one configured URL.
//! Only that URL is ever called; the response is capped in size and time.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::{Tool, ToolSource};
use crate::error::ToolError;

/// An HTTP tool as declared in the configuration.
#[derive(Debug, Clone)]
pub struct HttpToolOptions {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub url: Url,
    pub method: HttpToolMethod,
    /// Header values may be secrets (read from `_FILE` by the configuration).
    pub headers: Vec<(String, SecretString)>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// How an HTTP tool sends the model's arguments. Our own type: the HTTP client is an
/// implementation detail of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpToolMethod {
    /// The arguments as query parameters.
    Get,
    /// The arguments as a JSON body.
    Post,
}

/// Calls one configured URL with the model's arguments.
#[derive(Debug, Clone)]
pub struct HttpTool {
    options: HttpToolOptions,
    http: reqwest::Client,
}

impl HttpTool {
    pub fn new(options: HttpToolOptions) -> Result<Self, ToolError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            // Redirects could lead anywhere; only the configured URL is called.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ToolError::InvalidSchema {
                name: options.name.clone(),
                problem: error.to_string(),
            })?;
        Ok(Self { options, http })
    }
}

#[async_trait]
impl Tool for HttpTool {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn description(&self) -> &str {
        &self.options.description
    }

    fn parameters(&self) -> Value {
        self.options.parameters.clone()
    }

    fn source(&self) -> ToolSource {
        ToolSource::Http
    }

    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let method = match self.options.method {
            HttpToolMethod::Get => reqwest::Method::GET,
            HttpToolMethod::Post => reqwest::Method::POST,
        };
        let mut request = self.http.request(method, self.options.url.clone());
        request = if self.options.method == HttpToolMethod::Get {
            let pairs: Vec<(String, String)> = arguments
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned),
                    )
                })
                .collect();
            request.query(&pairs)
        } else {
            request.json(&arguments)
        };
        for (name, value) in &self.options.headers {
            request = request.header(name, value.expose_secret());
        }
        let mut trace_headers = reqwest::header::HeaderMap::new();
        crate::trace_context::add_headers(&mut trace_headers);
        let response = request
            .headers(trace_headers)
            .send()
            .await
            .map_err(|error| ToolError::Failed(format!("the request failed: {error}")))?;
        let status = response.status();
        let (body, whole) = read_at_most(response, self.options.max_response_bytes)
            .await
            .map_err(|error| ToolError::Failed(format!("reading the response failed: {error}")))?;
        if !whole {
            return Err(ToolError::Failed(format!(
                "the response is larger than {} bytes",
                self.options.max_response_bytes
            )));
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(text)
        } else {
            Err(ToolError::Failed(format!(
                "the service answered {status}: {}",
                text.chars().take(500).collect::<String>()
            )))
        }
    }
}

/// At most `max` bytes of `response`'s body, and whether that is all of it (reading stops at
/// the cap: a large answer costs no more than `max`).
pub async fn read_at_most(
    response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > max {
            let room = max - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}
