//! Trace context on outbound calls, without a tracing backend here: the server installs a
//! function that writes the current span's context (W3C `traceparent`, `tracestate`) as
//! name/value pairs, and the model client, the HTTP tools and the MCP client ask it for them on
//! every call. Nothing installed (traces off): nothing is added and nothing is computed.

use std::sync::OnceLock;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Writes the current context's propagation fields through the given function.
pub type Injector = fn(&mut dyn FnMut(&str, String));

static INJECTOR: OnceLock<Injector> = OnceLock::new();

/// Installs the process's injector; `false` if one was installed already (it stays).
pub fn install(injector: Injector) -> bool {
    INJECTOR.set(injector).is_ok()
}

/// Calls `put` with each propagation field of the current span, if an injector is installed.
pub fn fields(put: &mut dyn FnMut(&str, String)) {
    if let Some(inject) = INJECTOR.get() {
        inject(put);
    }
}

/// Adds the current span's propagation headers to an outbound request's headers.
pub(crate) fn add_headers(headers: &mut HeaderMap) {
    fields(&mut |name, value| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    });
}
