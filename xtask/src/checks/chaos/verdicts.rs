//! The chaos verdicts: every attempt counted as acknowledged, expected or unexpected, the probes
//! checked against the documented policy, and the stored turns read back from Postgres.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;

use crate::checks::stack::TestStack;

use super::Row;
use super::faults::{Fault, docker_output};
use super::workload::{AttemptRecord, Decision, GIVE_UP, ProbeRecord, TurnRecord};

/// /health never fails while a dependency is down; /ready follows the documented policy (Redis
/// and the model are not readiness conditions, Postgres is) and is 200 at the end.
pub(super) fn check_probes(
    fault: Fault,
    probes: &[ProbeRecord],
    outage: (Duration, Duration),
    problems: &mut Vec<String>,
) {
    let health_failures: Vec<&ProbeRecord> = probes
        .iter()
        .filter(|probe| probe.path == "/health" && probe.label != "200")
        .collect();
    let ready: Vec<&ProbeRecord> = probes
        .iter()
        .filter(|probe| probe.path == "/ready")
        .collect();
    match fault {
        Fault::Redis | Fault::Postgres | Fault::Model | Fault::McpServer
            if !health_failures.is_empty() =>
        {
            problems.push(format!(
                "/health failed {} times, first {} at {:.1} s",
                health_failures.len(),
                health_failures[0].label,
                health_failures[0].at.as_secs_f64()
            ));
        }
        _ => {}
    }
    let ready_not_200 = ready.iter().filter(|probe| probe.label != "200").count();
    match fault {
        Fault::Redis | Fault::Model | Fault::McpServer if ready_not_200 > 0 => {
            problems.push(format!(
                "/ready was not 200 {ready_not_200} times (Redis and the MCP server are optional: degraded, still ready)"
            ));
        }
        Fault::Postgres
            if !ready.iter().any(|probe| {
                probe.label == "503" && probe.at >= outage.0 && probe.at <= outage.1
            }) =>
        {
            problems.push("/ready never answered 503 while Postgres was down".into());
        }
        _ => {}
    }
    if ready.last().is_none_or(|probe| probe.label != "200") {
        problems.push("/ready is not 200 at the end".into());
    }
}

/// Counts `attempts` into `row`: acknowledged, errors `allowed` inside `window`, and the rest as
/// unexpected; a problem when anything was unexpected, when no turn succeeded after
/// `recovered`, or when a turn was still failing when its client gave up.
pub(crate) fn count_attempts(
    attempts: &[AttemptRecord],
    turns: &[TurnRecord],
    window: (Duration, Duration),
    recovered: Duration,
    allowed: impl Fn(&AttemptRecord) -> bool,
    row: &mut Row,
    problems: &mut Vec<String>,
) {
    row.requests = attempts.len();
    let mut unexpected_examples = Vec::new();
    for attempt in attempts {
        if attempt.decision == Decision::Ack {
            row.ok += 1;
            continue;
        }
        let in_window = attempt.end >= window.0 && attempt.start <= window.1;
        if in_window && allowed(attempt) {
            row.expected += 1;
        } else {
            row.unexpected += 1;
            if unexpected_examples.len() < 8 {
                unexpected_examples.push(format!(
                    "{} at {:.1} s (took {:.1} s)",
                    attempt.label,
                    attempt.start.as_secs_f64(),
                    (attempt.end - attempt.start).as_secs_f64()
                ));
            }
        }
    }
    if row.unexpected > 0 {
        problems.push(format!(
            "{} unexpected errors (window {:.1}-{:.1} s), e.g. {}",
            row.unexpected,
            window.0.as_secs_f64(),
            window.1.as_secs_f64(),
            unexpected_examples.join("; ")
        ));
    }
    if !attempts
        .iter()
        .any(|attempt| attempt.decision == Decision::Ack && attempt.start > recovered)
    {
        problems.push("no turn succeeded after the fault ended".into());
    }
    let gave_up = turns.iter().filter(|turn| turn.gave_up).count();
    if gave_up > 0 {
        problems.push(format!(
            "{gave_up} turns still failing after {GIVE_UP:?} of retries"
        ));
    }
}

/// Every acknowledged turn is stored exactly once; no turn twice; every session is whole: no
/// gap in the sequence, turns (a user message, tool calls and their results, the answer) whose
/// answer matches, counters that agree.
pub(crate) fn check_database(
    stack: &TestStack,
    prefix: &str,
    turns: &[TurnRecord],
    row: &mut Row,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let postgres = stack.container("postgres")?;
    // The load's sessions: named with the prefix (stored as `caller:id` for a caller with an API
    // key), or named by the server and holding a message that carries the prefix.
    let ours = format!(
        "(SELECT id FROM sessions WHERE id LIKE '{prefix}-%' OR id LIKE '%:{prefix}-%' \
         UNION SELECT session_id FROM messages WHERE role = 'user' AND content LIKE '%{prefix}-%')"
    );
    let messages = psql(
        &postgres,
        &format!(
            "SELECT session_id, sequence, role, content FROM messages \
             WHERE session_id IN {ours} ORDER BY session_id, sequence"
        ),
    )?;
    let sessions = psql(
        &postgres,
        &format!("SELECT id, next_sequence, turn_count FROM sessions WHERE id IN {ours}"),
    )?;
    let mut by_session: HashMap<&str, Vec<(i64, &str, &str)>> = HashMap::new();
    for fields in &messages {
        let [session, sequence, role, content] = fields.as_slice() else {
            bail!("unexpected psql row {fields:?}");
        };
        by_session.entry(session).or_default().push((
            sequence.parse()?,
            role.as_str(),
            content.as_str(),
        ));
    }
    let mut stored: HashMap<&str, usize> = HashMap::new();
    let mut broken = Vec::new();
    for fields in &sessions {
        let [id, next_sequence, turn_count] = fields.as_slice() else {
            bail!("unexpected psql row {fields:?}");
        };
        let rows = by_session.remove(id.as_str()).unwrap_or_default();
        let contiguous = rows
            .iter()
            .enumerate()
            .all(|(index, (sequence, _, _))| *sequence == index as i64);
        // Each turn begins at a user message.
        let turns: Vec<_> = rows.chunk_by(|_, next| next.1 != "user").collect();
        let whole = turns.iter().all(|turn| {
            let (first, last) = (&turn[0], &turn[turn.len() - 1]);
            turn.len() >= 2
                && first.1 == "user"
                && last.1 == "assistant"
                && last.2 == format!("echo: {}", first.2)
                && turn[1..turn.len() - 1]
                    .iter()
                    .all(|message| matches!(message.1, "assistant" | "tool"))
        });
        let counters = next_sequence.parse::<usize>().ok() == Some(rows.len())
            && turn_count.parse::<usize>().ok() == Some(turns.len());
        if !(contiguous && whole && counters) {
            broken.push(id.clone());
        }
        for turn in turns {
            *stored.entry(turn[0].2).or_default() += 1;
        }
    }
    if !by_session.is_empty() {
        broken.extend(
            by_session
                .keys()
                .map(|id| format!("{id} (messages without a session row)")),
        );
    }
    for turn in turns {
        let count = stored.remove(turn.message.as_str()).unwrap_or(0);
        if turn.acked && count == 0 {
            row.lost += 1;
        }
        if count > 1 {
            row.duplicated += 1;
        }
    }
    if !stored.is_empty() {
        problems.push(format!(
            "{} stored turns no client sent, e.g. {:?}",
            stored.len(),
            stored.keys().next()
        ));
    }
    row.broken_sessions = broken.len();
    if row.lost > 0 {
        problems.push(format!("{} acknowledged turns are not stored", row.lost));
    }
    if row.duplicated > 0 {
        problems.push(format!(
            "{} turns are stored more than once",
            row.duplicated
        ));
    }
    if !broken.is_empty() {
        problems.push(format!(
            "{} sessions have a gap, a half-stored turn or wrong counters, e.g. {}",
            broken.len(),
            broken[0]
        ));
    }
    let acked = turns.iter().filter(|turn| turn.acked).count();
    println!(
        "xtask:   {} turns acknowledged, {} sessions checked in Postgres ({} named by the server)",
        acked,
        sessions.len(),
        sessions
            .iter()
            .filter(|fields| {
                let local = fields[0].rsplit(':').next().unwrap_or_default();
                !local.starts_with(&format!("{prefix}-"))
            })
            .count()
    );
    Ok(())
}

/// Rows of a query run with psql inside the Postgres container, fields split.
/// The stored tool messages of the load's sessions: (errors, answers of the MCP server's echo).
pub(crate) fn tool_outcomes(stack: &TestStack, prefix: &str) -> anyhow::Result<(u64, u64)> {
    let postgres = stack.container("postgres")?;
    let rows = psql(
        &postgres,
        &format!(
            "SELECT count(*) FILTER (WHERE content LIKE 'error:%'), \
                    count(*) FILTER (WHERE content LIKE 'Echo:%') \
             FROM messages WHERE role = 'tool' AND session_id IN \
             (SELECT id FROM sessions WHERE id LIKE '%{prefix}-%')"
        ),
    )?;
    match rows.first().map(Vec::as_slice) {
        Some([errors, answers]) => Ok((errors.parse()?, answers.parse()?)),
        _ => bail!("unexpected psql rows {rows:?}"),
    }
}

pub(super) fn psql(container: &str, query: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let output = docker_output(&[
        "exec", container, "psql", "-U", "agent", "-d", "agent", "-X", "-A", "-t", "-F", "\x1f",
        "-c", query,
    ])?;
    Ok(output
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.split('\x1f').map(str::to_owned).collect())
        .collect())
}

/// The time to live of every session lock in Redis, in milliseconds.
pub(crate) fn lock_ttls_ms(stack: &TestStack) -> anyhow::Result<Vec<u64>> {
    let redis = stack.container("redis")?;
    let keys = docker_output(&[
        "exec",
        &redis,
        "redis-cli",
        "--scan",
        "--pattern",
        "agent:lock:*",
    ])?;
    keys.lines()
        .filter(|key| !key.is_empty())
        .map(|key| {
            let ttl = docker_output(&["exec", &redis, "redis-cli", "pttl", key])?;
            // -2: expired meanwhile; -1 would be a lock without a TTL, which must fail the check.
            Ok(match ttl.trim().parse::<i64>()? {
                -2 => 0,
                -1 => u64::MAX,
                ttl => ttl as u64,
            })
        })
        .collect()
}
