//! Background runs: `POST /agent` with `background` answers `202` with a queued run that any
//! replica takes and runs to its end with nobody waiting; the queue's caps, cancelling a queued
//! run, a run whose replica is gone, and streaming a background run's events.

use std::time::{Duration, Instant};

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::{TestApp, error_code, spawn_replicas, spawn_with_model};

fn slow(seconds: u64, text: &str) -> Scripted {
    Scripted::Slow(Duration::from_secs(seconds), Box::new(Scripted::text(text)))
}

/// `POST /agent` as `key`'s caller (none: anonymous), with `Idempotency-Key` when given.
async fn post_agent(
    app: &TestApp,
    body: Value,
    key: Option<&str>,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/agent", app.address))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(idempotency) = idempotency {
        request = request.header("Idempotency-Key", idempotency);
    }
    request.send().await.unwrap()
}

/// The queued run a `202` answered, checked against its `Location`.
async fn accepted(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/runs/{}", run["run_id"].as_str().unwrap())
    );
    run
}

/// Polls `GET /runs/{id}` until the run is final (at most `within`).
async fn final_state(app: &TestApp, id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let (status, run) = app.get_json(&format!("/runs/{id}")).await;
        assert_eq!(status, 200, "{run}");
        if ["completed", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
            return run;
        }
        assert!(
            Instant::now() < until,
            "run {id} still {run} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_background_run_is_queued_at_once_and_runs_to_its_end_with_nobody_waiting() {
    let fake = FakeOpenAi::repeating(slow(1, "done later")).await;
    let app = spawn_with_model(&fake, &[("AGENT_API__LOCK_WAIT", "50ms")]).await;
    let started = Instant::now();
    let response = post_agent(
        &app,
        json!({"message": "take your time", "session_id": "bg", "background": true}),
        None,
        None,
    )
    .await;
    let run = accepted(response).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the 202 waited for the run"
    );
    assert_eq!(run["status"], "queued");
    assert_eq!(run["session_id"], "bg");
    assert_eq!(run["background"], true);
    let id = run["run_id"].as_str().unwrap();

    // While it runs, its session is busy, naming it.
    fake.received(1).await;
    let busy = app
        .agent(json!({"message": "me too", "session_id": "bg"}))
        .await;
    assert_eq!(busy.status(), 409);
    let body: Value = busy.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains(id),
        "{body}"
    );

    let done = final_state(&app, id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["response"], "done later");
    let stored = app.stored("bg").await;
    let texts: Vec<&str> = stored.iter().map(|m| m.message.content.as_str()).collect();
    assert_eq!(texts, ["take your time", "done later"]);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_run() {
    let fake = FakeOpenAi::repeating(Scripted::text("once")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let body = json!({"message": "only once", "background": true});
    let first = accepted(post_agent(&app, body.clone(), None, Some("bg-key")).await).await;
    let retry = post_agent(&app, body.clone(), None, Some("bg-key")).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let again = accepted(retry).await;
    assert_eq!(again["run_id"], first["run_id"]);
    // The same key on a blocking request is another request, not this run.
    let blocking = post_agent(&app, json!({"message": "only once"}), None, Some("bg-key")).await;
    assert_eq!(blocking.status(), 200);

    let id = first["run_id"].as_str().unwrap();
    let done = final_state(&app, id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(fake.requests().await.len(), 2, "one model call per run");
    // Another body with the key is refused.
    let reused = post_agent(
        &app,
        json!({"message": "another", "background": true}),
        None,
        Some("bg-key"),
    )
    .await;
    assert_eq!(reused.status(), 422);
}

#[tokio::test]
async fn the_queue_refuses_a_caller_past_its_cap_with_429_and_everyone_past_the_total_with_503() {
    let fake = FakeOpenAi::repeating(slow(1, "slowly")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_API_KEYS", "alice:key-a,bob:key-b,carol:key-c"),
            ("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", "1"),
            ("AGENT_RUNS__MAX_QUEUED_PER_CALLER", "1"),
            ("AGENT_RUNS__MAX_QUEUED", "2"),
        ],
    )
    .await;
    let queue = |key: &'static str| {
        post_agent(
            &app,
            json!({"message": "later", "background": true}),
            Some(key),
            None,
        )
    };
    // The one turn slot takes alice's first run; her second waits in the queue.
    let running = accepted(queue("key-a").await).await;
    fake.received(1).await;
    let waiting = accepted(queue("key-a").await).await;
    assert_eq!(waiting["status"], "queued");

    let refused = queue("key-a").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_code(&body), "too_many_queued_runs", "{body}");

    accepted(queue("key-b").await).await;
    let full = queue("key-c").await;
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    let body: Value = full.json().await.unwrap();
    assert_eq!(error_code(&body), "overloaded", "{body}");

    // A queued run cancelled is never run; the running one is unaffected.
    let id = waiting["run_id"].as_str().unwrap();
    let cancel = app
        .client
        .post(format!("{}/runs/{id}/cancel", app.address))
        .bearer_auth("key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let cancelled: Value = cancel.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let first = running["run_id"].as_str().unwrap();
    let run = |id: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(format!("{}/runs/{id}", app.address))
                .bearer_auth("key-a")
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let state = run(first.to_owned()).await;
        if state["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the first run did not complete: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bob's run then takes the slot; alice's cancelled one never reaches the model.
    fake.received(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().await.len(), 2);
    assert_eq!(run(id.to_owned()).await["status"], "cancelled");
}

#[tokio::test]
async fn a_background_run_cancelled_on_another_replica_stops_at_once_and_stores_nothing() {
    let fake = FakeOpenAi::repeating(slow(30, "never")).await;
    let replicas = spawn_replicas(&fake, &[("AGENT_RUNS__LEASE", "2s")], 2).await;
    let run = accepted(
        post_agent(
            &replicas[0],
            json!({"message": "long", "session_id": "far", "background": true}),
            None,
            None,
        )
        .await,
    )
    .await;
    fake.received(1).await;
    let id = run["run_id"].as_str().unwrap();
    // Whichever replica runs it, the other cancels; the runner learns at its next renewal.
    for replica in &replicas {
        let response = replica
            .client
            .post(format!("{}/runs/{id}/cancel", replica.address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 200 || status == 409, "{status}");
    }
    let cancelled = final_state(&replicas[1], id, Duration::from_secs(1)).await;
    assert_eq!(cancelled["status"], "cancelled");
    // The runner stopped it (its session is free again well before the model would answer).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let next = replicas[0]
            .agent(json!({"message": "again", "session_id": "far"}))
            .await;
        if next.status() != 409 {
            break;
        }
        assert!(Instant::now() < until, "the session stayed busy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replicas[0].stored("far").await.is_empty());
}

#[tokio::test]
async fn a_run_whose_replica_is_gone_is_failed_as_lost_within_the_bound() {
    let fake = FakeOpenAi::repeating(Scripted::text("unused")).await;
    let app = spawn_with_model(&fake, &[("AGENT_RUNS__LEASE", "2s")]).await;
    // A run another replica started and then died with: nobody renews its lease.
    let session = agent_core::SessionId::parse("orphaned")
        .unwrap()
        .owned_by("anonymous");
    let id = format!("run_{}", "d".repeat(32));
    app.backends
        .runs
        .start_run(agent_storage::NewRun {
            id: &id,
            owner: "anonymous",
            session: Some(&session),
            background: true,
            holder: "a-replica-that-died",
            lease: Duration::from_secs(2),
            started_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    // Two leases and a sweep period (±20 %) at most.
    let lost = final_state(&app, &id, Duration::from_secs(11)).await;
    assert_eq!(lost["status"], "failed");
    assert_eq!(lost["error"]["code"], "run_lost");
}

#[tokio::test]
async fn a_streamed_background_run_goes_on_when_its_client_goes_away() {
    let fake = FakeOpenAi::repeating(slow(1, "still here")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let response = app
        .stream(json!({"message": "stream it", "session_id": "away", "background": true}))
        .await;
    assert_eq!(response.status(), 200);
    let mut response = response;
    let first = response.chunk().await.unwrap().unwrap();
    let events = sse::events(std::str::from_utf8(&first).unwrap());
    assert_eq!(events[0].event, "run");
    let id = events[0].json()["run_id"].as_str().unwrap().to_owned();
    drop(response);

    let done = final_state(&app, &id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["response"], "still here");
    // Its events are still there to read from the start.
    let replay = app
        .client
        .get(format!("{}/runs/{id}/events", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names: Vec<String> = sse::events(&replay)
        .into_iter()
        .map(|event| event.event)
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("run"));
    assert_eq!(names.last().map(String::as_str), Some("done"));
    assert!(names.iter().any(|name| name == "delta"), "{names:?}");
}

async fn respond(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/responses", app.address))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn response_events(app: &TestApp, id: &str, starting_after: Option<u64>) -> Vec<Value> {
    let after = starting_after.map_or(String::new(), |n| format!("&starting_after={n}"));
    let response = app
        .client
        .get(format!(
            "{}/v1/responses/{id}?stream=true{after}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sse::events(&response.text().await.unwrap())
        .iter()
        .map(sse::SseEvent::json)
        .collect()
}

#[tokio::test]
async fn a_background_response_is_queued_polled_and_its_stream_resumed_after_any_event() {
    let fake = FakeOpenAi::repeating(slow(1, "answered in the background")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let created = respond(
        &app,
        json!({"model": "agent", "input": "work on it", "background": true, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(created.status(), 200);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["metadata"]["k"], "v");
    assert_eq!(created["output"], json!([]));
    let id = created["id"].as_str().unwrap().to_owned();

    // Polled: in progress while the model answers, then completed, as stored.
    fake.received(1).await;
    let (status, running) = app.get_json(&format!("/v1/responses/{id}")).await;
    assert_eq!(
        (status, running["status"].as_str()),
        (200, Some("in_progress"))
    );
    let until = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let (_, polled) = app.get_json(&format!("/v1/responses/{id}")).await;
        if polled["status"] == "completed" {
            break polled;
        }
        assert!(Instant::now() < until, "still {polled}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "answered in the background"
    );
    assert_eq!(done["metadata"]["k"], "v");

    // Its events, from the start and after each one: the same events, numbered alike.
    let all = response_events(&app, &id, None).await;
    let kinds: Vec<&str> = all
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let numbers: Vec<u64> = all
        .iter()
        .map(|event| event["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..all.len() as u64).collect::<Vec<_>>());
    for after in 0..all.len() as u64 {
        let rest = response_events(&app, &id, Some(after)).await;
        assert_eq!(rest, all[after as usize + 1..], "after {after}");
    }
}

#[tokio::test]
async fn a_background_response_can_be_cancelled_and_others_cannot() {
    let fake = FakeOpenAi::repeating(slow(30, "never")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let created: Value = respond(
        &app,
        json!({"model": "agent", "input": "long work", "background": true}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    fake.received(1).await;
    let cancel = |id: String| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/v1/responses/{id}/cancel", app.address))
                .send()
                .await
                .unwrap()
        }
    };
    let cancelled = cancel(id.to_owned()).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let (_, read) = app.get_json(&format!("/v1/responses/{id}")).await;
    assert_eq!(read["status"], "cancelled");
    // Again: answered as it is.
    let again: Value = cancel(id.to_owned()).await.json().await.unwrap();
    assert_eq!(again["status"], "cancelled");

    // A response that did not run in the background cannot be cancelled nor streamed again.
    let fake = FakeOpenAi::repeating(Scripted::text("at once")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let plain: Value = respond(&app, json!({"model": "agent", "input": "now"}))
        .await
        .json()
        .await
        .unwrap();
    let plain_id = plain["id"].as_str().unwrap();
    let refused = app
        .client
        .post(format!("{}/v1/responses/{plain_id}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let streamed = app
        .client
        .get(format!(
            "{}/v1/responses/{plain_id}?stream=true",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 400);
    let unknown = app
        .client
        .post(format!(
            "{}/v1/responses/resp_{}/cancel",
            app.address,
            "0".repeat(32)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Background needs store.
    let unstored = respond(
        &app,
        json!({"model": "agent", "input": "x", "background": true, "store": false}),
    )
    .await;
    assert_eq!(unstored.status(), 400);
    let body: Value = unstored.json().await.unwrap();
    assert_eq!(body["error"]["param"], "background", "{body}");
}
