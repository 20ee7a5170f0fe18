//! Runs that wait for the client: a call needing approval stops the run (`requires_action`,
//! nothing stored, the session busy) until `POST /runs/{id}/actions` answers it, on any replica;
//! the approved call runs once however many answers race, a rejected one becomes the tool message
//! the model reads, answers may come a few at a time, and a waiting run can be cancelled or
//! expires.

use std::time::{Duration, Instant};

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::{TestApp, config_file, error_code, spawn_replicas};

/// Calls to the calculator wait for approval; the clock's do not.
const CALCULATOR_NEEDS_APPROVAL: &str =
    "[builtin_tools]\nrequire_approval = { always = { tool_names = [\"calculator\"] } }\n";

async fn replicas(fake: &FakeOpenAi, count: usize, extra: &[(&str, &str)]) -> Vec<TestApp> {
    let file = config_file(CALCULATOR_NEEDS_APPROVAL);
    let mut vars = vec![("AGENT_CONFIG", file.as_str())];
    vars.extend_from_slice(extra);
    spawn_replicas(fake, &vars, count).await
}

fn calls(script: &[(&str, Value)]) -> Scripted {
    Scripted::ToolCalls(
        script
            .iter()
            .map(|(name, arguments)| ((*name).to_owned(), arguments.to_string()))
            .collect(),
    )
}

fn actions(run: &str) -> String {
    format!("/runs/{run}/actions")
}

/// The tool messages the model was sent in its `index`-th request.
async fn tool_results(fake: &FakeOpenAi, index: usize) -> Vec<String> {
    fake.requests().await[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_call_runs_once_on_whichever_replica_takes_the_answer() {
    let fake = FakeOpenAi::start(vec![
        calls(&[
            ("calculator", json!({"expression": "2+3"})),
            ("current_time", json!({})),
        ]),
        Scripted::text("2+3 is 5."),
    ])
    .await;
    let apps = replicas(&fake, 2, &[]).await;
    let (first, second) = (&apps[0], &apps[1]);

    let response = first
        .agent(json!({"session_id": "waits-1", "message": "add 2 and 3"}))
        .await;
    assert_eq!(response.status(), 200);
    let waiting: Value = response.json().await.unwrap();
    assert_eq!(waiting["status"], "requires_action", "{waiting}");
    assert_eq!(waiting["session_id"], "waits-1");
    let run = waiting["run_id"].as_str().unwrap().to_owned();
    let action = &waiting["required_action"];
    assert_eq!(action["type"], "approve_tool_calls", "{waiting}");
    let tool_calls = action["tool_calls"].as_array().unwrap();
    assert_eq!(tool_calls.len(), 1, "the clock ran at once: {waiting}");
    assert_eq!(tool_calls[0]["name"], "calculator");
    assert_eq!(
        serde_json::from_str::<Value>(tool_calls[0]["arguments"].as_str().unwrap()).unwrap(),
        json!({"expression": "2+3"})
    );
    let call = tool_calls[0]["id"].as_str().unwrap().to_owned();

    // Nothing stored; the session is busy, naming the run; the other replica shows it waiting.
    assert!(first.stored("waits-1").await.is_empty());
    let busy = first
        .agent(json!({"session_id": "waits-1", "message": "meanwhile"}))
        .await;
    assert_eq!(busy.status(), 409);
    let busy: Value = busy.json().await.unwrap();
    assert_eq!(error_code(&busy), "session_busy");
    assert!(busy["error"]["message"].as_str().unwrap().contains(&run));
    let (status, shown) = second.get_json(&format!("/runs/{run}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "requires_action");
    assert_eq!(shown["required_action"], *action);
    assert_eq!(shown["background"], true, "it outlived its request");
    assert!(shown["expires_at"].is_string(), "{shown}");

    // The same approval sent to both replicas at once: one runs it, the other is refused.
    let approve = json!({"approvals": [{"tool_call_id": call, "approve": true}]});
    let path = actions(&run);
    let (one, other) = tokio::join!(
        first.post_json(&path, &approve),
        second.post_json(&path, &approve)
    );
    let (done, refused) = if one.0 == 200 {
        (one, other)
    } else {
        (other, one)
    };
    assert_eq!(done.0, 200, "{done:?} / {refused:?}");
    assert_eq!(
        done.1,
        json!({
            "response": "2+3 is 5.",
            "session_id": "waits-1",
            "tokens_used": done.1["tokens_used"],
            "run_id": run,
            "agent": "agent",
            "model": done.1["model"],
        })
    );
    assert_eq!(refused.0, 409, "{refused:?}");
    assert_eq!(error_code(&refused.1), "run_not_waiting");
    // The model was asked twice in all: the calculator ran once, its result beside the clock's.
    assert_eq!(fake.requests().await.len(), 2);
    let results = tool_results(&fake, 1).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].contains("unix"), "{results:?}");
    assert_eq!(results[1], "5");

    // The stored turn holds every call and its result; the run is completed.
    let stored = first.stored("waits-1").await;
    let roles: Vec<&str> = stored
        .iter()
        .map(|stored| stored.message.role.as_str())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
    assert_eq!(stored[3].message.content, "5");
    let (_, shown) = second.get_json(&format!("/runs/{run}")).await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert!(shown.get("required_action").is_none(), "{shown}");
    // An answer to a finished run.
    let (status, late) = second.post_json(&path, &approve).await;
    assert_eq!((status, error_code(&late)), (409, "run_not_waiting"));
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_come_a_few_at_a_time_a_rejection_is_read_and_bad_answers_are_refused() {
    let fake = FakeOpenAi::start(vec![
        calls(&[
            ("calculator", json!({"expression": "1+1"})),
            ("calculator", json!({"expression": "2+2"})),
        ]),
        Scripted::text("One of them, then."),
    ])
    .await;
    let apps = replicas(&fake, 1, &[]).await;
    let app = &apps[0];
    let waiting: Value = app
        .agent(json!({"session_id": "waits-2", "message": "two sums"}))
        .await
        .json()
        .await
        .unwrap();
    let run = waiting["run_id"].as_str().unwrap().to_owned();
    let ids: Vec<String> = waiting["required_action"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{waiting}");
    let path = actions(&run);

    for (body, field) in [
        (json!({}), "approvals"),
        (
            json!({"approvals": [{"tool_call_id": "call_nope", "approve": true}]}),
            "approvals[0].tool_call_id",
        ),
        (
            json!({"tool_outputs": [{"tool_call_id": ids[0], "output": "2"}]}),
            "tool_outputs[0].tool_call_id",
        ),
        (
            json!({"approvals": [{"tool_call_id": ids[0], "approve": true, "extra": 1}]}),
            "approvals[0].extra",
        ),
    ] {
        let (status, refused) = app.post_json(&path, &body).await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert_eq!(error_code(&refused), "invalid_request", "{refused}");
        let said = refused["error"].to_string();
        assert!(
            said.contains(field.split('.').next().unwrap()),
            "{body}: {refused}"
        );
    }

    // One rejected: the run waits on for the other.
    let reject = json!({"approvals": [{"tool_call_id": ids[0], "approve": false, "reason": "  not this one "}]});
    let (status, still) = app.post_json(&path, &reject).await;
    assert_eq!(status, 200, "{still}");
    assert_eq!(still["status"], "requires_action");
    let left: Vec<&str> = still["required_action"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str()]);
    let (status, again) = app.post_json(&path, &reject).await;
    assert_eq!(status, 422, "already answered: {again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already answered")
    );

    // The other approved, streamed: the run goes on and its events end with `done`.
    let streamed = app
        .client
        .post(format!("{}{path}", app.address))
        .json(&json!({"approvals": [{"tool_call_id": ids[1], "approve": true}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let events = sse::events(&streamed.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(
        names.contains(&"tool_result"),
        "the approved call ran: {names:?}"
    );
    assert_eq!(
        events.last().unwrap().json()["response"],
        "One of them, then."
    );
    let results = tool_results(&fake, 1).await;
    assert_eq!(results, ["rejected by the user: not this one", "4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_run_streams_its_wait_is_cancelled_or_expires_and_frees_its_session() {
    let fake = FakeOpenAi::start(vec![
        calls(&[("calculator", json!({"expression": "3*3"}))]),
        calls(&[("calculator", json!({"expression": "4*4"}))]),
        Scripted::text("free again"),
        calls(&[("calculator", json!({"expression": "5*5"}))]),
        Scripted::text("25"),
    ])
    .await;
    let apps = replicas(
        &fake,
        1,
        &[
            ("AGENT_RUNS__ACTION_TIMEOUT", "1s"),
            ("AGENT_RUNS__LEASE", "2s"),
        ],
    )
    .await;
    let app = &apps[0];

    // Streamed: the wait is the stream's last event.
    let streamed = app
        .stream(json!({"session_id": "waits-3", "message": "square 3"}))
        .await;
    let events = sse::events(&streamed.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event, "requires_action", "{events:?}");
    let run = last.json()["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        last.json()["required_action"]["tool_calls"][0]["name"],
        "calculator"
    );

    // Cancelled while waiting: its answer is refused, and the session is free.
    let cancelled = app
        .client
        .post(format!("{}/runs/{run}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let approve = json!({"approvals": [{"tool_call_id": "call_0_0", "approve": true}]});
    let (status, refused) = app.post_json(&actions(&run), &approve).await;
    assert_eq!((status, error_code(&refused)), (409, "run_not_waiting"));

    // Never answered: it expires, nothing stored, and the session takes turns again.
    let waiting: Value = app
        .agent(json!({"session_id": "waits-3", "message": "square 4"}))
        .await
        .json()
        .await
        .unwrap();
    let expiring = waiting["run_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let expired = loop {
        let (_, shown) = app.get_json(&format!("/runs/{expiring}")).await;
        if shown["status"] == "failed" {
            break shown;
        }
        assert!(Instant::now() < deadline, "never expired: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expired["error"]["code"], "action_expired", "{expired}");
    assert!(app.stored("waits-3").await.is_empty());
    let free: Value = app
        .agent(json!({"session_id": "waits-3", "message": "hello"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(free["response"], "free again", "{free}");

    // Answered in the background: 202 at once, then completed.
    let waiting: Value = app
        .agent(json!({"session_id": "waits-3", "message": "square 5"}))
        .await
        .json()
        .await
        .unwrap();
    let run = waiting["run_id"].as_str().unwrap().to_owned();
    let call = waiting["required_action"]["tool_calls"][0]["id"].clone();
    let (status, accepted) = app
        .post_json(
            &actions(&run),
            &json!({"approvals": [{"tool_call_id": call, "approve": true}], "background": true}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["run_id"], run.as_str());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, shown) = app.get_json(&format!("/runs/{run}")).await;
        if shown["status"] == "completed" {
            assert_eq!(shown["response"], "25", "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_a_client_tool_on_agent_waits_for_its_output() {
    let fake = FakeOpenAi::start(vec![
        calls(&[
            ("lookup", json!({"word": "agent"})),
            ("current_time", json!({})),
        ]),
        Scripted::text("An agent acts for someone."),
    ])
    .await;
    let apps = replicas(&fake, 1, &[]).await;
    let app = &apps[0];
    let tools = json!([{"name": "lookup", "description": "The client's dictionary",
                        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}]);
    let (status, refused) = app
        .post_json(
            "/agent",
            &json!({"message": "hi", "tools": [{"name": "calculator"}]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (422, "invalid_request"),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'calculator' is the name of one of the agent's own tools"),
        "{refused}"
    );

    let (status, waiting) = app
        .post_json(
            "/agent",
            &json!({"session_id": "waits-5", "message": "define agent", "tools": tools}),
        )
        .await;
    assert_eq!(status, 200, "{waiting}");
    assert_eq!(
        waiting["required_action"]["type"], "submit_tool_outputs",
        "{waiting}"
    );
    let call = &waiting["required_action"]["tool_calls"][0];
    assert_eq!(call["name"], "lookup");
    let run = waiting["run_id"].as_str().unwrap();
    let (status, refused) = app
        .post_json(
            &actions(run),
            &json!({"approvals": [{"tool_call_id": call["id"], "approve": true}]}),
        )
        .await;
    assert_eq!(status, 422, "an approval for a client's call: {refused}");
    let (status, done) = app
        .post_json(
            &actions(run),
            &json!({"tool_outputs": [{"tool_call_id": call["id"], "output": "one who acts for another"}]}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["response"], "An agent acts for someone.");
    // The clock ran at once; the client's output followed; the model saw both, and the
    // resumed step offered the client's tool again.
    let results = tool_results(&fake, 1).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].contains("unix") && results[1] == "one who acts for another");
    let offered: Vec<String> = fake.requests().await[1]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tool| tool["function"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(offered.contains(&"lookup".to_owned()), "{offered:?}");
}
