//! `cargo xtask chaos`: breaks the running Compose stack on purpose (Redis stopped, Postgres
//! stopped, model faults, SIGTERM and SIGKILL of the agent, the MCP server stopped) while 32
//! clients hold multi-turn
//! conversations, records every request, then reads Postgres: no acknowledged turn lost or
//! stored twice, no half-stored turn, no gap, and no error the documented behaviour does not
//! allow.
//!
//! The parts: `faults` (what a scenario breaks, and the docker actions that break it),
//! `workload` (the clients' conversations and the probe monitor), `verdicts` (counting the
//! attempts, checking the probes and the stored turns). This module runs the scenarios.

mod faults;
mod verdicts;
mod workload;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use dev_harness::http;
use xshell::Shell;

use crate::checks::stack::TestStack;

pub(crate) use faults::{
    Fault, LOCK_TTL, docker_output, inspect, signal_agent, unix_seconds, wait_healthy,
    wait_restarted,
};

pub(crate) use verdicts::{check_database, count_attempts, lock_ttls_ms, tool_outcomes};
pub(crate) use workload::LoadRun;

use faults::{AFTER, BEFORE, ERROR_DEADLINE, OUTAGE, docker, exit_codes};
use verdicts::check_probes;
use workload::{AttemptRecord, Decision, monitor};

const PROJECT: &str = "agent-chaos";

/// One row of the final table, with what went wrong.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) requests: usize,
    pub(crate) ok: usize,
    pub(crate) expected: usize,
    pub(crate) unexpected: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) broken_sessions: usize,
    pub(crate) problems: Vec<String>,
}

pub(crate) fn run(shell: &Shell, only: Option<String>) -> anyhow::Result<()> {
    let fake_port = dev_harness::free_port()?;
    let stack = TestStack::start(
        shell,
        PROJECT,
        &["docker/compose.mcp.yaml", "docker/compose.chaos.yaml"],
        vec![("FAKE_MODEL_PORT".into(), fake_port.to_string())],
        &["up", "-d"],
    )?;
    let directory = crate::project_root().join("target").join(PROJECT);
    std::fs::create_dir_all(&directory)?;
    let log_path = directory.join("requests.jsonl");
    let log = Arc::new(Mutex::new(BufWriter::new(File::create(&log_path)?)));
    let mut rows = Vec::new();
    for fault in Fault::ALL {
        if only
            .as_deref()
            .is_some_and(|only| !fault.name().contains(only))
        {
            continue;
        }
        println!("xtask: chaos scenario {}", fault.name());
        let row = scenario(&stack, fault, fake_port, &log)?;
        for problem in &row.problems {
            println!("xtask:   problem: {problem}");
        }
        rows.push(row);
    }
    log.lock().expect("log").flush()?;
    print_table(&rows);
    println!("xtask: every request is recorded in {}", log_path.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| !row.problems.is_empty())
        .map(|row| row.scenario)
        .collect();
    if !failed.is_empty() {
        bail!("chaos failed in: {}", failed.join(", "));
    }
    println!("xtask: chaos passed");
    Ok(())
}

/// Waits until the agent lists the MCP server connected again (it retries with backoff).
fn wait_for_mcp_tools(stack: &TestStack, timeout: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let authorization = format!("Bearer {}", stack.api_key);
    while started.elapsed() < timeout {
        let (status, body) = http::call(
            stack.port,
            "GET",
            "/tools",
            &[("Authorization", &authorization)],
            None,
            Duration::from_secs(5),
        )?;
        if status == 200 && body.contains(r#""state":"connected""#) {
            println!(
                "xtask:   the MCP server's tools were back after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the agent did not reconnect to the MCP server within {timeout:?}")
}

/// The results as a Markdown table.
pub(crate) fn print_table(rows: &[Row]) {
    println!("\n{}", table(rows));
}

fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| scenario | requests | ok | expected errors | unexpected errors | turns lost | duplicated | broken sessions |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.requests,
            row.ok,
            row.expected,
            row.unexpected,
            row.lost,
            row.duplicated,
            row.broken_sessions
        ));
    }
    text
}

/// Runs the load, breaks the stack during it, lets it recover, then checks everything.
fn scenario(
    stack: &TestStack,
    fault: Fault,
    fake_port: u16,
    log: &Arc<Mutex<BufWriter<File>>>,
) -> anyhow::Result<Row> {
    let agent = stack.container("agent")?;
    let restarts_before = inspect(&agent, "{{.RestartCount}}")?;
    let load = LoadRun::start(
        stack.port,
        &stack.api_key,
        &fault.prefix(),
        fault.name(),
        log,
    )?;
    let probes_stop = Arc::new(AtomicBool::new(false));
    let monitor_thread = {
        let (stop, began, port) = (Arc::clone(&probes_stop), load.began(), stack.port);
        std::thread::spawn(move || monitor(port, began, &stop))
    };

    std::thread::sleep(BEFORE);
    let mut problems = Vec::new();
    let fault_start = load.elapsed();
    let mut lock_ttls = Vec::new();
    match fault {
        Fault::Redis | Fault::Postgres => {
            let service = if fault == Fault::Redis {
                "redis"
            } else {
                "postgres"
            };
            let container = stack.container(service)?;
            docker(&["stop", &container])?;
            std::thread::sleep(OUTAGE);
            docker(&["start", &container])?;
            wait_healthy(&container, Duration::from_secs(60))?;
        }
        Fault::McpServer => {
            let container = stack.container("mcp")?;
            docker(&["stop", &container])?;
            std::thread::sleep(OUTAGE);
            docker(&["start", &container])?;
            wait_for_mcp_tools(stack, Duration::from_secs(60))?;
        }
        Fault::Model => {
            for (mode, seconds) in [("429", 4), ("500", 3), ("timeout", 4), ("none", 0)] {
                let (status, _) = http::call(
                    fake_port,
                    "PUT",
                    &format!("/fault/{mode}"),
                    &[],
                    None,
                    Duration::from_secs(5),
                )?;
                ensure!(
                    status == 204,
                    "the fake model refused fault {mode}: {status}"
                );
                std::thread::sleep(Duration::from_secs(seconds));
            }
        }
        Fault::Term | Fault::Kill => {
            let signal = if fault == Fault::Term { "TERM" } else { "KILL" };
            let since = unix_seconds();
            signal_agent(&agent, signal)?;
            let restarted = wait_restarted(&agent, &restarts_before, Duration::from_secs(60))?;
            wait_healthy(&agent, Duration::from_secs(60))?;
            println!(
                "xtask:   SIG{signal}: the agent was restarted and healthy again after {:.1} s",
                restarted.as_secs_f64()
            );
            let exit = exit_codes(&agent, since)?;
            if fault == Fault::Term && exit.first().map(String::as_str) != Some("0") {
                problems.push(format!(
                    "after SIGTERM the agent exited with {exit:?}, not 0"
                ));
            }
            if fault == Fault::Term {
                let logs = docker_output(&["logs", &agent])?;
                if !(logs.contains("shutdown began") && logs.contains("stopped")) {
                    problems.push("the agent's log does not show the drain".into());
                }
            }
            if fault == Fault::Kill {
                lock_ttls = lock_ttls_ms(stack)?;
            }
        }
    }
    let recovered = load.elapsed();
    let window = (fault_start, recovered + fault.grace());
    let settle = if fault == Fault::Kill {
        AFTER + LOCK_TTL
    } else {
        AFTER
    };
    std::thread::sleep(settle);
    let (attempts, turns) = load.finish()?;
    probes_stop.store(true, Ordering::SeqCst);
    let probes = monitor_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the probe monitor panicked"))?;

    // Requests: every error must be one the fault allows, inside the fault's window.
    let mut row = Row {
        scenario: fault.name(),
        ..Row::default()
    };
    let slow_errors_matter = matches!(fault, Fault::Redis | Fault::Postgres);
    count_attempts(
        &attempts,
        &turns,
        window,
        recovered,
        |attempt| {
            fault.allows(&attempt.label)
                && !(slow_errors_matter && attempt.end - attempt.start > ERROR_DEADLINE)
        },
        &mut row,
        &mut problems,
    );
    if fault == Fault::McpServer {
        // The turns went on; their tool calls failed while the server was down, and worked
        // before and after.
        let (errors, answers) = tool_outcomes(stack, &fault.prefix())?;
        println!("xtask:   tool messages: {answers} answers, {errors} errors");
        if errors == 0 || answers == 0 {
            problems.push(format!(
                "expected tool errors during the outage and answers around it: {errors} errors, {answers} answers"
            ));
        }
    } else if row.expected == 0 && fault != Fault::Term {
        problems.push("the fault caused no error at all: did it happen?".into());
    }
    if fault == Fault::Term {
        // Requests in flight when the signal arrived must complete (the drain).
        let in_flight: Vec<&AttemptRecord> = attempts
            .iter()
            .filter(|attempt| attempt.start < fault_start && attempt.end > fault_start)
            .collect();
        let streams = in_flight
            .iter()
            .filter(|attempt| attempt.label.starts_with("stream"))
            .count();
        let unfinished = in_flight
            .iter()
            .filter(|attempt| attempt.decision != Decision::Ack)
            .count();
        println!(
            "xtask:   in flight at SIGTERM: {} requests ({streams} streams), {unfinished} not completed",
            in_flight.len()
        );
        if streams == 0 || unfinished > 0 {
            problems.push(format!(
                "{} requests in flight at SIGTERM ({streams} streams), {unfinished} not completed",
                in_flight.len()
            ));
        }
    }

    check_probes(fault, &probes, (fault_start, recovered), &mut problems);
    let restarts_after = inspect(&agent, "{{.RestartCount}}")?;
    match fault {
        Fault::Term | Fault::Kill if restarts_after == restarts_before => {
            problems.push("the agent was not restarted".into());
        }
        Fault::Redis | Fault::Postgres | Fault::Model | Fault::McpServer
            if restarts_after != restarts_before =>
        {
            problems.push("the agent restarted: it should have resumed on its own".into());
        }
        _ => {}
    }
    if fault == Fault::Kill {
        let too_long: Vec<&u64> = lock_ttls
            .iter()
            .filter(|ttl| **ttl > LOCK_TTL.as_millis() as u64)
            .collect();
        if !too_long.is_empty() {
            problems.push(format!(
                "session locks outlive the TTL: {too_long:?} ms left"
            ));
        }
        println!(
            "xtask:   right after the restart: {} session locks in Redis (the dead process's and new ones), longest {} ms to live (TTL {} ms)",
            lock_ttls.len(),
            lock_ttls.iter().max().unwrap_or(&0),
            LOCK_TTL.as_millis()
        );
    }
    let leftover = lock_ttls_ms(stack)?;
    if !leftover.is_empty() {
        problems.push(format!(
            "{} session locks still held after the load ended",
            leftover.len()
        ));
    }

    // Postgres: the stored conversations against what the clients were told.
    check_database(stack, &fault.prefix(), &turns, &mut row, &mut problems)?;
    row.problems = problems;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::{Row, table};

    #[test]
    fn the_table_has_a_row_per_scenario() {
        let rows = [Row {
            scenario: "redis-stopped-10s",
            requests: 10,
            ok: 8,
            expected: 2,
            ..Row::default()
        }];
        assert_eq!(
            table(&rows).lines().last(),
            Some("| redis-stopped-10s | 10 | 8 | 2 | 0 | 0 | 0 | 0 |")
        );
    }
}
