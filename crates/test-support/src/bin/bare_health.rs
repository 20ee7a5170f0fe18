//! The benchmark baseline: a bare actix-web server answering `GET /health` with
//! `{"status":"healthy"}` and nothing else, with the same number of workers as agent-server.
//!
//! Usage: `bare-health --port P --workers W`.

use actix_web::{App, HttpResponse, HttpServer, web};

fn argument(name: &str, default: usize) -> usize {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1)?.parse().ok())
        .unwrap_or(default)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port = argument("--port", 8081) as u16;
    let workers = argument("--workers", 2);
    HttpServer::new(|| {
        App::new().route(
            "/health",
            web::get().to(|| async {
                HttpResponse::Ok().json(serde_json::json!({ "status": "healthy" }))
            }),
        )
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
