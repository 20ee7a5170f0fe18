//! One MCP connection: the official SDK's Streamable HTTP client over our reqwest, the configured
//! headers (secrets, marked sensitive), and a handler that reports `tools/list_changed`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::ClientHandler;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RoleClient, RunningService, serve_client_with_ct};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::McpServerOptions;
use crate::error::error_chain;

/// Requests in progress at once on one server's session (calls beyond wait for a slot, within
/// their timeout).
pub(super) const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Our side of a connection: who we are, and a nudge when the server's tool list changed.
#[derive(Debug, Clone)]
pub(super) struct Handler {
    pub(super) list_changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.list_changed.notify_one();
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agent-server", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// What went wrong, readably: the SDK's transport errors repeat their whole cause in each layer's
/// message, so the full chain says the same thing three times; its last link is the cause.
pub(super) fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

pub(super) type Connection = RunningService<RoleClient, Handler>;

/// Connects to the server and runs the `initialize` handshake. The connection's background work
/// (its SSE stream, session re-initialisation after a server restart) stops with `stop`.
pub(super) async fn connect(
    options: &McpServerOptions,
    handler: Handler,
    stop: CancellationToken,
) -> Result<Connection, String> {
    // A request never waits on a dead peer longer than a call may take: the SDK's requests have
    // no deadline of their own, and one stuck on a connection to a server that vanished (a
    // replaced container keeps no RST for its old connections) would hold its slot for good.
    let stalled = options.timeout + options.connect_timeout;
    let http = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(stalled)
        .tcp_user_timeout(stalled)
        .tcp_keepalive(Duration::from_secs(15))
        // Redirects could lead anywhere; only the configured URL is contacted.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| error_chain(&error))?;
    let mut headers = HashMap::with_capacity(options.headers.len());
    for (name, value) in &options.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("the header name {name:?} is not valid"))?;
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("the value of header {name} is not valid"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(options.url.as_str())
        .custom_headers(headers)
        // Every worker's turns share this one session: let their calls run side by side (the
        // SDK's default is 16 requests in progress) rather than queue behind a slow tool.
        .max_concurrent_requests(MAX_CONCURRENT_REQUESTS)
        // Results larger than this are refused by the transport; the tool message is capped
        // far lower anyway.
        .max_json_response_size(options.max_result_bytes.saturating_mul(16).max(1 << 20));
    let transport = StreamableHttpClientTransport::with_client(http, config);
    serve_client_with_ct(handler, transport, stop)
        .await
        .map_err(|error| {
            if error.is_authorization_required() {
                format!(
                    "the server refused our credentials (check the headers of this [[mcp_servers]] entry): {}",
                    cause(&error)
                )
            } else {
                cause(&error)
            }
        })
}
