//! The OpenAI-compatible `ChatModel`: any server speaking `/v1/chat/completions` (OpenAI, vLLM,
//! Ollama, llama.cpp). Requests go through async-openai's client on our retrying transport;
//! responses are read into lenient types, as local servers omit fields OpenAI always sends. A
//! streamed answer's events are read here, in the caller's task (see [`OpenAiModel::stream`]).

mod retry;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{Config, OpenAIConfig};
use async_openai::error::{OpenAIError, StreamError};
use async_openai::middleware::HttpRequestFactory;
use async_trait::async_trait;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};

pub use retry::RetryPolicy;
use retry::{RetryingTransport, TransportFailure};

use crate::error::ModelError;
use crate::metrics::{CallMode, ModelMetrics};
use crate::model::{ChatModel, ChatRequest, DeltaStream, ModelIdentity, ModelReply};

/// How to reach and call the model.
#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    /// Including `/v1`.
    pub base_url: String,
    pub api_key: Option<SecretString>,
    /// Sent with every call (a gateway's own headers); marked sensitive, never logged.
    pub headers: Vec<(String, SecretString)>,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Bound on one attempt until the response starts, and on any pause while it streams.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// How long an idle keep-alive connection to the model server is kept: under the 5 s after
/// which uvicorn (vLLM, most Python model servers) and actix-web close an idle connection, so the
/// client never sends a request on a connection the server is closing at that instant (it failed
/// as "connection closed before message completed", a 502 when retries are off: once in
/// 250,000 turns in `cargo xtask storm`, with this at 30 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A chat model behind an OpenAI-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    client: Client<OpenAIConfig>,
    /// The streaming call, made on the same transport without async-openai's stream reader.
    streaming: Arc<StreamingCall>,
    options: OpenAiOptions,
    metrics: ModelMetrics,
    identity: ModelIdentity,
}

impl OpenAiModel {
    /// Idle keep-alive connections one client (one per worker) keeps to the model server.
    /// Without a bound every connection of a burst stayed open, idle, for 90 s: after 6,000
    /// streaming clients (`cargo xtask storm --only descriptors`), about 1,200 sockets.
    pub const IDLE_CONNECTIONS: usize = 64;

    /// A client recording into `metrics` (see [`ModelMetrics::register`]).
    pub fn new(options: OpenAiOptions, metrics: ModelMetrics) -> Result<Self, ModelError> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &options.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|error| ModelError::Rejected(format!("header {name}: {error}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose_secret())
                .map_err(|error| ModelError::Rejected(format!("header {name}: {error}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(10)))
            // A read timeout, not a total one: a long stream must not be cut, a stalled one must.
            .read_timeout(options.request_timeout)
            .pool_max_idle_per_host(Self::IDLE_CONNECTIONS)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build()
            .map_err(|error| {
                ModelError::Rejected(format!("cannot build the HTTP client: {error}"))
            })?;
        // Key and base URL are always set explicitly: OpenAIConfig::new() reads OPENAI_* itself.
        let api_key = options
            .api_key
            .as_ref()
            .map(|key| key.expose_secret().to_owned())
            .unwrap_or_default();
        let config = OpenAIConfig::new()
            .with_api_base(options.base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        let transport = RetryingTransport {
            http: http.clone(),
            policy: options.retry,
            attempt_timeout: options.request_timeout,
            retries: metrics.retries.clone(),
        };
        let streaming = Arc::new(StreamingCall {
            url: config.url("/chat/completions"),
            headers: config.headers(),
            query: config
                .query()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            transport: transport.clone(),
        });
        let client = Client::build(http, config).with_http_service(transport);
        let base = reqwest::Url::parse(&options.base_url).ok();
        let identity = ModelIdentity {
            // The API spoken; the server's address tells OpenAI from vLLM or Ollama.
            provider: "openai",
            model: options.model.clone(),
            server_address: base
                .as_ref()
                .and_then(|url| url.host_str().map(str::to_owned)),
            server_port: base.as_ref().and_then(reqwest::Url::port_or_known_default),
        };
        Ok(Self {
            client,
            streaming,
            options,
            metrics,
            identity,
        })
    }

    fn classify(&self, error: OpenAIError) -> ModelError {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<TransportFailure>() {
                Ok(failure) => match *failure {
                    TransportFailure::Status {
                        status: 429,
                        retry_after,
                        ..
                    } => ModelError::RateLimited { retry_after },
                    TransportFailure::Status {
                        status: 401 | 403,
                        body,
                        ..
                    } => ModelError::Authentication(body),
                    TransportFailure::Status { status, body, .. }
                        if status < 500 && status != 408 =>
                    {
                        ModelError::rejected(status, &body)
                    }
                    TransportFailure::Timeout(limit) => ModelError::Timeout(limit),
                    TransportFailure::Status { retry_after, .. } => ModelError::Upstream {
                        source: failure,
                        retry_after,
                    },
                    failure => ModelError::upstream(failure),
                },
                Err(other) => ModelError::upstream(other),
            },
            OpenAIError::ApiError(api) => {
                let message = api.api_error.message.clone();
                match api.status_code.as_u16() {
                    401 | 403 => ModelError::Authentication(message),
                    429 => ModelError::RateLimited { retry_after: None },
                    status if status >= 500 || status == 408 => ModelError::upstream(message),
                    status => {
                        let said =
                            format!("{} {message}", api.api_error.code.as_deref().unwrap_or(""));
                        match ModelError::rejected(status, &said) {
                            ModelError::ContextLength(_) => ModelError::ContextLength(message),
                            ModelError::FormatRefused(_) => ModelError::FormatRefused(message),
                            _ => ModelError::Rejected(format!("{status}: {message}")),
                        }
                    }
                }
            }
            OpenAIError::Reqwest(error) if error.is_timeout() => {
                ModelError::Timeout(self.options.request_timeout)
            }
            OpenAIError::Reqwest(error) if error.is_decode() || error.is_body() => {
                ModelError::Unusable(format!("the response could not be read: {error}"))
            }
            OpenAIError::Reqwest(error) => ModelError::upstream(error),
            OpenAIError::JSONDeserialize(error, _) => {
                ModelError::Unusable(format!("malformed JSON: {error}"))
            }
            OpenAIError::StreamError(error) => {
                ModelError::Unusable(format!("broken stream: {error}"))
            }
            other => ModelError::Rejected(other.to_string()),
        }
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn identity(&self) -> ModelIdentity {
        self.identity.clone()
    }

    // The span of each call is the agent's (`chat {model}`), around the whole stream too.
    /// `GET {base}/models` with the model's key and headers: free on every OpenAI-compatible
    /// server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM). Any answer but a refusal of the key or
    /// a 5xx is up (a server without the route still answers); one attempt, no retry.
    async fn check(&self) -> Result<(), ModelError> {
        let url = format!("{}/models", self.options.base_url.trim_end_matches('/'));
        let answer = self
            .streaming
            .transport
            .http
            .get(url)
            .headers(self.streaming.headers.clone())
            .timeout(self.options.request_timeout)
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(ModelError::Timeout(self.options.request_timeout));
            }
            Err(error) => return Err(ModelError::upstream(error)),
        };
        match response.status().as_u16() {
            401 | 403 => Err(ModelError::Authentication(format!(
                "GET /models answered {}",
                response.status()
            ))),
            status if status >= 500 => Err(ModelError::upstream(format!(
                "GET /models answered {}",
                response.status()
            ))),
            _ => Ok(()),
        }
    }

    async fn complete(&self, request: ChatRequest<'_>) -> Result<ModelReply, ModelError> {
        let started = std::time::Instant::now();
        let body = wire::request_body(&self.options, request, false);
        let reply = self
            .client
            .chat()
            .create_byot::<_, wire::CompletionResponse>(body)
            .await
            .map_err(|error| self.classify(error))
            .and_then(wire::CompletionResponse::into_reply);
        self.metrics
            .record_call(CallMode::Complete, started, reply.as_ref().err());
        reply
    }

    /// The answer's server-sent events are parsed as the caller polls the stream, in its task.
    /// async-openai's own stream reader spawned a task per stream and relayed the events through
    /// an unbounded channel: a task, a channel block (3 KiB) and a wake-up per chunk for each open
    /// stream (issue 20). The request, its retries and its errors are the same transport's.
    async fn stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, ModelError> {
        let started = std::time::Instant::now();
        let response = match serde_json::to_vec(&wire::request_body(&self.options, request, true)) {
            Ok(body) => self
                .streaming
                .send(body.into())
                .await
                .map_err(|error| self.classify(error)),
            Err(error) => Err(ModelError::Rejected(format!(
                "cannot encode the request: {error}"
            ))),
        };
        // For a stream, the duration is until it starts.
        self.metrics
            .record_call(CallMode::Stream, started, response.as_ref().err());
        let events = eventsource_stream::EventStream::new(response?.bytes_stream());
        let model = self.clone();
        let chunks = futures_util::stream::unfold(Some(events), |events| async move {
            let mut events = events?;
            loop {
                let chunk = match events.next().await? {
                    // An unreadable stream ends with its error.
                    Err(error) => {
                        let error = StreamError::EventStream(error.to_string());
                        return Some((Err(OpenAIError::StreamError(Box::new(error))), None));
                    }
                    Ok(event) if event.data == "[DONE]" => return None,
                    Ok(event) if event.event == "keepalive" => continue,
                    Ok(event) => serde_json::from_str::<wire::CompletionChunk>(&event.data)
                        .map_err(|error| OpenAIError::JSONDeserialize(error, event.data)),
                };
                return Some((chunk, Some(events)));
            }
        });
        let deltas = chunks.flat_map(move |chunk| {
            let deltas = match chunk {
                Ok(chunk) => chunk.into_deltas().into_iter().map(Ok).collect(),
                Err(error) => vec![Err(model.classify(error))],
            };
            futures_util::stream::iter(deltas)
        });
        Ok(Box::pin(deltas))
    }
}

/// What a streaming call sends: async-openai's URL, headers and query for the chat completions
/// path, posted on the retrying transport.
struct StreamingCall {
    url: String,
    headers: reqwest::header::HeaderMap,
    query: Vec<(String, String)>,
    transport: RetryingTransport,
}

/// Without the headers: they carry the API key.
impl std::fmt::Debug for StreamingCall {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StreamingCall")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl StreamingCall {
    async fn send(self: &Arc<Self>, body: bytes::Bytes) -> Result<reqwest::Response, OpenAIError> {
        let call = Arc::clone(self);
        let factory = HttpRequestFactory::new(move || {
            let call = Arc::clone(&call);
            let body = body.clone();
            async move {
                Ok(call
                    .transport
                    .http
                    .post(&call.url)
                    .query(&call.query)
                    .headers(call.headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .build()?)
            }
        });
        self.transport.execute(factory).await
    }
}
