//! Runs: every turn is one, visible at `GET /runs/{id}` and in its session's list; a run can be
//! cancelled (nothing stored); a session has one active run at a time, which a refusal names.

use std::time::Duration;

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::{TestApp, error_code, spawn_replicas, spawn_with_model};

/// A model answer that takes `seconds`: long enough for a test to look at the run meanwhile.
fn slow(seconds: u64, text: &str) -> Scripted {
    Scripted::Slow(Duration::from_secs(seconds), Box::new(Scripted::text(text)))
}

/// The stream's events up to and including the first one (the `run` event), and the response
/// to read the rest from.
async fn first_event(mut response: reqwest::Response) -> (sse::SseEvent, reqwest::Response) {
    let mut body = String::new();
    while !body.contains("\n\n") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended before its first event");
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    (sse::events(&body).remove(0), response)
}

async fn rest(response: reqwest::Response) -> Vec<sse::SseEvent> {
    sse::events(&response.text().await.unwrap())
}

async fn run_of(app: &TestApp, id: &str) -> Value {
    let (status, run) = app.get_json(&format!("/runs/{id}")).await;
    assert_eq!(status, 200, "{run}");
    run
}

async fn post(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_turn_is_a_run_that_completes_with_its_answer_and_is_listed_with_its_session() {
    let fake = FakeOpenAi::repeating(Scripted::text("four")).await;
    let app = spawn_with_model(&fake, &[]).await;
    let answer: Value = app
        .agent(json!({"message": "2+2?", "session_id": "maths"}))
        .await
        .json()
        .await
        .unwrap();
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    assert!(run_id.starts_with("run_"), "{answer}");

    let run = run_of(&app, &run_id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["session_id"], "maths");
    assert_eq!(run["response"], "four");
    assert_eq!(run["tokens_used"], answer["tokens_used"]);
    assert_eq!(run["background"], false);
    assert!(
        run["started_at"].is_string() && run["finished_at"].is_string(),
        "{run}"
    );
    assert!(run.get("error").is_none(), "{run}");

    // A stream is a run too: its first event names it, and every event is numbered.
    let streamed = app
        .stream(json!({"message": "again", "session_id": "maths"}))
        .await;
    let events = sse::events(&streamed.text().await.unwrap());
    assert_eq!(events[0].event, "run");
    let streamed_run = events[0].json()["run_id"].as_str().unwrap().to_owned();
    assert_eq!(events[0].json()["session_id"], "maths");
    let ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
    let expected: Vec<String> = (0..events.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(events.last().unwrap().json()["run_id"], streamed_run);

    let (status, listed) = app.get_json("/sessions/maths/runs?limit=1").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["runs"][0]["run_id"], streamed_run.as_str());
    let cursor = listed["next_cursor"].as_str().unwrap();
    let (_, next) = app
        .get_json(&format!("/sessions/maths/runs?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(next["next_cursor"], Value::Null);

    for path in [
        "/runs/run_00000000000000000000000000000000".to_owned(),
        "/runs/not-a-run".to_owned(),
    ] {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(
            (status, error_code(&body)),
            (404, "run_not_found"),
            "{path}"
        );
    }
    let (status, body) = app.get_json("/sessions/nobody/runs").await;
    assert_eq!((status, error_code(&body)), (404, "session_not_found"));
}

#[tokio::test]
async fn another_callers_run_is_not_found_and_cannot_be_cancelled() {
    let fake = FakeOpenAi::repeating(Scripted::text("mine")).await;
    let app = spawn_with_model(&fake, &[("AGENT_API_KEYS", "alice:key-a,bob:key-b")]).await;
    let answer: Value = app
        .client
        .post(format!("{}/agent", app.address))
        .bearer_auth("key-a")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = format!("/runs/{}", answer["run_id"].as_str().unwrap());
    for (key, expected) in [("key-a", 200), ("key-b", 404)] {
        let response = app
            .client
            .get(format!("{}{run}", app.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{key}");
    }
    let cancel = app
        .client
        .post(format!("{}{run}/cancel", app.address))
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
}

#[tokio::test]
async fn a_running_run_holds_its_session_and_a_cancel_stops_it_with_nothing_stored() {
    let fake = FakeOpenAi::start(vec![slow(30, "never seen"), Scripted::text("free")]).await;
    let app = spawn_with_model(&fake, &[("AGENT_API__LOCK_WAIT", "50ms")]).await;
    let stream = app
        .stream(json!({"message": "take long", "session_id": "held"}))
        .await;
    let (run_event, stream) = first_event(stream).await;
    let run_id = run_event.json()["run_id"].as_str().unwrap().to_owned();
    fake.received(1).await;
    assert_eq!(run_of(&app, &run_id).await["status"], "in_progress");

    let busy = app
        .agent(json!({"message": "me too", "session_id": "held"}))
        .await;
    assert_eq!(busy.status(), 409);
    let body: Value = busy.json().await.unwrap();
    assert_eq!(error_code(&body), "session_busy");
    let names_it = |body: &Value| body["error"]["message"].as_str().unwrap().contains(&run_id);
    assert!(names_it(&body), "{body}");
    // Nor can a background run be queued on it.
    let queued = app
        .agent(json!({"message": "later", "session_id": "held", "background": true}))
        .await;
    assert_eq!(queued.status(), 409);
    let body: Value = queued.json().await.unwrap();
    assert_eq!(error_code(&body), "session_busy");
    assert!(names_it(&body), "{body}");
    let deleted = app
        .client
        .delete(format!("{}/sessions/held", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 409);

    let cancelled = post(&app, &format!("/runs/{run_id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"]["code"], "run_cancelled");
    let events = rest(stream).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(error_code(&last.json()), "run_cancelled");
    assert!(app.stored("held").await.is_empty(), "nothing stored");

    let again = post(&app, &format!("/runs/{run_id}/cancel")).await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(error_code(&body), "run_finished");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );

    // The session is free again.
    let next = app
        .agent(json!({"message": "now", "session_id": "held"}))
        .await;
    assert_eq!(next.status(), 200);
}

#[tokio::test]
async fn a_blocking_request_whose_run_is_cancelled_answers_409_run_cancelled() {
    let fake = FakeOpenAi::start(vec![slow(30, "never seen")]).await;
    let app = spawn_with_model(&fake, &[]).await;
    let waiting = {
        let (client, address) = (app.client.clone(), app.address.clone());
        tokio::spawn(async move {
            client
                .post(format!("{address}/agent"))
                .json(&json!({"message": "take long", "session_id": "blocking"}))
                .send()
                .await
                .unwrap()
        })
    };
    fake.received(1).await;
    let (_, listed) = app.get_json("/sessions/blocking/runs").await;
    assert_eq!(listed["runs"][0]["status"], "in_progress", "{listed}");
    let run_id = listed["runs"][0]["run_id"].as_str().unwrap();
    assert_eq!(
        post(&app, &format!("/runs/{run_id}/cancel")).await.status(),
        200
    );
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), 409);
    assert_eq!(error_code(&answer.json().await.unwrap()), "run_cancelled");
    assert!(app.stored("blocking").await.is_empty());
}

#[tokio::test]
async fn a_failed_run_records_its_error_and_stores_nothing() {
    let fake = FakeOpenAi::repeating(Scripted::status(500)).await;
    let app = spawn_with_model(&fake, &[("AGENT_MODEL__MAX_RETRIES", "0")]).await;
    let failed = app
        .agent(json!({"message": "hi", "session_id": "broken"}))
        .await;
    assert_eq!(failed.status(), 502);
    let (status, listed) = app.get_json("/sessions/broken/runs").await;
    assert_eq!(status, 200, "{listed}");
    let run = &listed["runs"][0];
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "model_unavailable");
    assert!(run.get("response").is_none(), "{run}");
    assert!(app.stored("broken").await.is_empty());
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_run() {
    let fake = FakeOpenAi::start(vec![slow(30, "never seen")]).await;
    let app = spawn_with_model(&fake, &[]).await;
    let stream = app
        .stream(json!({"message": "bye", "session_id": "gone"}))
        .await;
    let (run_event, stream) = first_event(stream).await;
    let run_id = run_event.json()["run_id"].as_str().unwrap().to_owned();
    fake.received(1).await;
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = run_of(&app, &run_id).await;
        if run["status"] == "cancelled" {
            assert_eq!(run["error"]["code"], "client_disconnected");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A run not in the background is recorded once it has run a second (or when it ends): from
/// then on every replica reads and cancels it; until then, its own replica answers for it.
#[tokio::test]
async fn a_run_cancelled_on_another_replica_stores_nothing() {
    let fake = FakeOpenAi::start(vec![slow(20, "too late")]).await;
    let replicas = spawn_replicas(&fake, &[("AGENT_MODEL__REQUEST_TIMEOUT", "30s")], 2).await;
    let stream = replicas[0]
        .stream(json!({"message": "race", "session_id": "shared"}))
        .await;
    let (run_event, stream) = first_event(stream).await;
    let run_id = run_event.json()["run_id"].as_str().unwrap().to_owned();
    let here = run_of(&replicas[0], &run_id).await;
    assert_eq!(here["status"], "in_progress", "{here}");
    let (status, listed) = replicas[0].get_json("/sessions/shared/runs").await;
    assert_eq!(
        (status, &listed["runs"][0]["run_id"]),
        (200, &json!(run_id))
    );
    let path = format!("/runs/{run_id}");
    // Recorded after a second, at the next upkeep tick: two seconds here, more on a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while replicas[1].get(&path).await.status() == 404 {
        assert!(std::time::Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run_of(&replicas[1], &run_id).await["status"], "in_progress");
    let cancelled = post(&replicas[1], &format!("/runs/{run_id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    // The executing replica finds its run ended when it stores its turn.
    let events = rest(stream).await;
    let last = events.last().unwrap();
    assert_eq!(error_code(&last.json()), "run_cancelled", "{events:?}");
    assert!(replicas[0].stored("shared").await.is_empty());
    assert_eq!(run_of(&replicas[0], &run_id).await["status"], "cancelled");
}

async fn events_of(app: &TestApp, run: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}/runs/{run}/events", app.address));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.unwrap()
}

fn numbered(events: &[sse::SseEvent]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .map(|event| (event.id.clone(), event.event.clone(), event.json()))
        .collect()
}

#[tokio::test]
async fn a_background_run_is_read_live_from_another_replica_after_any_event_with_the_same_numbers()
{
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({"expression": "6*7"})),
        slow(1, "6*7 is 42, as the calculator says."),
    ])
    .await;
    let replicas = spawn_replicas(&fake, &[], 2).await;
    // A background run: its steps go to the shared log (a foreground stream's run ends with
    // its request, so only the replica running it has its steps).
    let stream = replicas[0]
        .stream(json!({"message": "6*7?", "session_id": "watched", "background": true}))
        .await;
    let (run_event, stream) = first_event(stream).await;
    let run_id = run_event.json()["run_id"].as_str().unwrap().to_owned();
    // The first model call answered (the tool ran) while the second is slow: read from the other
    // replica after event 1 (the tool call), live.
    fake.received(2).await;
    let elsewhere = events_of(&replicas[1], &run_id, Some("1")).await;
    assert_eq!(elsewhere.status(), 200);
    assert_eq!(elsewhere.headers()["content-type"], "text/event-stream");
    let here = rest(stream).await;
    let elsewhere = sse::events(&elsewhere.text().await.unwrap());
    let after_one: Vec<_> = numbered(&here)
        .into_iter()
        .filter(|(id, _, _)| id.parse::<u64>().unwrap() > 1)
        .collect();
    assert_eq!(numbered(&elsewhere), after_one);
    assert_eq!(elsewhere.first().unwrap().event, "tool_result");
    assert_eq!(elsewhere.last().unwrap().event, "done");

    // Once it ended, every replica replays it whole, with the same numbers.
    for replica in &replicas {
        let replay = events_of(replica, &run_id, None).await;
        let replay = sse::events(&replay.text().await.unwrap());
        assert_eq!(replay[0].event, "run");
        assert_eq!(numbered(&replay[1..]), numbered(&here));
        let after_last = events_of(replica, &run_id, Some(&here.last().unwrap().id)).await;
        assert!(sse::events(&after_last.text().await.unwrap()).is_empty());
    }
}

#[tokio::test]
async fn a_failed_runs_events_end_with_its_error_and_expire_into_410() {
    let fake = FakeOpenAi::repeating(Scripted::status(500)).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_MODEL__MAX_ATTEMPTS", "1"),
            ("AGENT_RUNS__EVENT_RETENTION", "1s"),
        ],
    )
    .await;
    let failed = app
        .agent(json!({"message": "hi", "session_id": "doomed"}))
        .await;
    assert_eq!(failed.status(), 502);
    let (_, listed) = app.get_json("/sessions/doomed/runs").await;
    let run_id = listed["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let events = sse::events(&events_of(&app, &run_id, None).await.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(names, ["run", "error"]);
    assert_eq!(error_code(&events[1].json()), "model_unavailable");
    assert_eq!(events[1].id, "1");

    let bad = events_of(&app, &run_id, Some("soon")).await;
    assert_eq!(bad.status(), 422);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = events_of(&app, &run_id, None).await;
        if response.status() == 410 {
            assert_eq!(
                error_code(&response.json().await.unwrap()),
                "run_events_expired"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_run_failed_while_postgres_was_down_does_not_hold_its_session_once_it_is_back() {
    let fake = FakeOpenAi::start(vec![slow(1, "never stored"), Scripted::text("stored")]).await;
    let database = test_support::fresh_database_url().await;
    let (postgres, through_proxy) = test_support::LossyProxy::in_front_of(&database);
    let app = spawn_with_model(&fake, &[("DATABASE_URL", &through_proxy)]).await;
    let first = tokio::spawn(
        app.client
            .post(format!("{}/agent", app.address))
            .json(&json!({"message": "one", "session_id": "outage"}))
            .send(),
    );
    fake.received(1).await;
    // Postgres stops while the model answers: the turn cannot be stored, nor its run ended.
    postgres.set_down(true);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 503);
    let body: Value = first.json().await.unwrap();
    assert_eq!(error_code(&body), "storage_unavailable", "{body}");
    postgres.set_down(false);

    // Back at once: the session is not busy with the run this server already gave up on.
    let second = app
        .agent(json!({"message": "two", "session_id": "outage"}))
        .await;
    assert_eq!(second.status(), 200, "{}", second.text().await.unwrap());
    // The failed run's end, missed by the store, is recorded again within a second or so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, runs) = app.get_json("/sessions/outage/runs").await;
        assert_eq!(status, 200, "{runs}");
        let states: Vec<(String, String)> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| {
                let code = run["error"]["code"].as_str().unwrap_or("-");
                (run["status"].as_str().unwrap().to_owned(), code.to_owned())
            })
            .collect();
        let expected = [("completed", "-"), ("failed", "storage_unavailable")];
        if states
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .eq(expected)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{runs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
