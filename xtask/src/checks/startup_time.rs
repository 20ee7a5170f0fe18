//! `cargo xtask startup-time`: how long the server takes from process start to its first 200 on
//! `GET /health`, as the median of several runs of the built binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

pub(crate) fn run(shell: &Shell, runs: usize, release: bool) -> anyhow::Result<()> {
    let profile_flag = release.then_some("--release");
    cmd!(
        shell,
        "cargo build --package agent-server {profile_flag...}"
    )
    .run()?;
    let binary = crate::project_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("agent-server");
    let port = dev_harness::free_port()?;
    let mut samples = Vec::new();
    for run in 1..=runs {
        let elapsed = measure_once(&binary, port)?;
        println!("run {run}: {:.1} ms", elapsed.as_secs_f64() * 1000.0);
        samples.push(elapsed);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "median of {runs} runs, process start to first 200 on /health: {:.1} ms ({})",
        median.as_secs_f64() * 1000.0,
        if release { "release" } else { "debug" }
    );
    Ok(())
}

fn measure_once(binary: &std::path::Path, port: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PORT", port.to_string())
        .env("AGENT_SERVER__SHUTDOWN_DELAY", "0s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to start agent-server")?;
    let result = loop {
        if health_is_ok(port) {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            break Err(anyhow::anyhow!("no 200 on /health within 10 s"));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    if !status.success() {
        bail!("agent-server exited with {status} after SIGTERM");
    }
    result
}

fn health_is_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}
