//! A minimal OTLP/HTTP trace receiver for the system checks: `POST /v1/traces` bodies are decoded
//! with the protocol's published protobuf definitions (`opentelemetry-proto`), and
//! `GET /spans` answers what arrived as JSON: each span with its ids, parent, kind, status,
//! attributes and resource attributes, and the headers of each export request.
//!
//! Usage: `otlp-receiver --port P [--count-only]`; with `--count-only` (benchmarks) spans are
//! decoded and counted, not kept.

use std::sync::Mutex;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Received {
    keep: bool,
    counted: usize,
    spans: Vec<Value>,
    /// The headers of each export request, names in lower case.
    exports: Vec<Map<String, Value>>,
}

fn any_value(value: Option<&AnyValue>) -> Value {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => json!(text),
        Some(any_value::Value::BoolValue(flag)) => json!(flag),
        Some(any_value::Value::IntValue(number)) => json!(number),
        Some(any_value::Value::DoubleValue(number)) => json!(number),
        Some(any_value::Value::ArrayValue(array)) => Value::Array(
            array
                .values
                .iter()
                .map(|value| any_value(Some(value)))
                .collect(),
        ),
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(&list.values)),
        Some(any_value::Value::BytesValue(bytes)) => json!(hex(bytes)),
        _ => Value::Null,
    }
}

fn attributes(pairs: &[KeyValue]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), any_value(pair.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn export(
    request: HttpRequest,
    body: web::Bytes,
    received: web::Data<Mutex<Received>>,
) -> HttpResponse {
    let decoded = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(decoded) => decoded,
        Err(error) => return HttpResponse::BadRequest().body(format!("not OTLP: {error}")),
    };
    let headers: Map<String, Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                json!(value.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let mut spans = Vec::new();
    for resource_spans in &decoded.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                spans.push(json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "name": span.name,
                    "kind": span.kind,
                    "status": span.status.as_ref().map(|status| json!({
                        "code": status.code,
                        "message": status.message,
                    })),
                    "attributes": attributes(&span.attributes),
                    "events": span.events.iter().map(|event| event.name.clone()).collect::<Vec<_>>(),
                    "resource": resource,
                }));
            }
        }
    }
    if let Ok(mut received) = received.lock() {
        received.counted += spans.len();
        if received.keep {
            received.spans.extend(spans);
            received.exports.push(headers);
        }
    }
    // An empty ExportTraceServiceResponse: full success.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::new())
}

async fn spans(received: web::Data<Mutex<Received>>) -> HttpResponse {
    match received.lock() {
        Ok(received) => HttpResponse::Ok().json(json!({
            "counted": received.counted,
            "spans": received.spans,
            "exports": received.exports,
        })),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// An OTLP/HTTP trace receiver.
#[derive(Debug, clap::Parser)]
struct Arguments {
    #[arg(long, default_value_t = 4318)]
    port: u16,
    /// Count the spans without keeping them (benchmarks).
    #[arg(long)]
    count_only: bool,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let Arguments { port, count_only } = clap::Parser::parse();
    let received = web::Data::new(Mutex::new(Received {
        keep: !count_only,
        ..Received::default()
    }));
    HttpServer::new(move || {
        App::new()
            .app_data(received.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/v1/traces", web::post().to(export))
            .route("/spans", web::get().to(spans))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
