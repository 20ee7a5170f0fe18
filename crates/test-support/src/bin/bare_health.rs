//! The benchmark baseline: a bare actix-web server answering `GET /health` with
//! `{"status":"healthy"}` and nothing else, with the same number of workers as agent-server.
//!
//! Usage: `bare-health --port P --workers W`.

use actix_web::{App, HttpResponse, HttpServer, web};

/// A bare actix-web server answering `GET /health`.
#[derive(Debug, clap::Parser)]
struct Arguments {
    #[arg(long, default_value_t = 8081)]
    port: u16,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let Arguments { port, workers } = clap::Parser::parse();
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
