//! The context policy through the API, with the fake model over HTTP: a long session's requests
//! hold the newest whole turns within `AGENT_CONTEXT__MAX_INPUT_TOKENS` while every message stays
//! stored with its count, `fail` refuses with `400 context_length_exceeded` and stores nothing,
//! and a model's context-length refusal is healed once by sending less history.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_full, spawn_replicas, spawn_with_model};

/// A message of about `words` tokens.
fn long_message(turn: usize, words: usize) -> String {
    format!("question {turn}: {}", "word ".repeat(words))
}

/// The roles of the messages of the fake model's request `index`.
async fn roles_sent(fake: &FakeOpenAi, index: usize) -> Vec<String> {
    fake.requests().await[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap().to_owned())
        .collect()
}

/// The OpenAI error body of a context-length refusal.
fn too_long() -> Scripted {
    Scripted::Status {
        status: 400,
        retry_after: None,
        body: json!({ "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded"
        }})
        .to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_session_sends_the_newest_whole_turns_within_the_budget_and_stores_everything() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let app = spawn_with_model(&fake, &[("AGENT_CONTEXT__MAX_INPUT_TOKENS", "1500")]).await;
    let session = "context-truncated";
    for turn in 0..6 {
        let body = json!({ "message": long_message(turn, 300), "session_id": session });
        let response = app.agent(body).await;
        let status = response.status();
        assert_eq!(
            status,
            200,
            "turn {turn}: {}",
            response.text().await.unwrap()
        );
    }
    // Each turn is about 310 tokens: the sixth request holds only the newest few, whole.
    let roles = roles_sent(&fake, 5).await;
    assert_eq!(roles[0], "system");
    assert_eq!(roles[1], "user", "a whole turn first: {roles:?}");
    let users = roles.iter().filter(|role| *role == "user").count();
    assert!((2..6).contains(&users), "{users} user messages sent");
    let sent: Vec<Value> = fake.requests().await[5]["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        sent.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .starts_with("question 5:"),
        "the new message is sent"
    );
    // Everything is stored, each message with its count (made once, as the turn made it).
    let stored = app.stored(session).await;
    assert_eq!(stored.len(), 12);
    assert!(
        stored.iter().all(|stored| stored.context_tokens.is_some()),
        "{:?}",
        stored.iter().map(|s| s.context_tokens).collect::<Vec<_>>()
    );
    let user = stored[0].context_tokens.unwrap();
    assert!(
        (300..330).contains(&user),
        "a 300-word message counted {user}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_refuses_an_over_budget_turn_with_400_and_stores_nothing() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let settings = [
        ("AGENT_CONTEXT__MAX_INPUT_TOKENS", "1000"),
        ("AGENT_CONTEXT__STRATEGY", "fail"),
    ];
    let app = spawn_with_model(&fake, &settings).await;
    let session = "context-fail";
    for turn in 0..2 {
        let body = json!({ "message": long_message(turn, 300), "session_id": session });
        assert_eq!(app.agent(body).await.status(), 200);
    }
    let body = json!({ "message": long_message(2, 300), "session_id": session });
    let response = app.agent(body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "context_length_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget of 1000"),
        "{body}"
    );
    assert_eq!(fake.requests().await.len(), 2, "the model was not called");
    assert_eq!(app.stored(session).await.len(), 4, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_length_refusal_is_healed_once_then_answered_400() {
    let (app, fake) = spawn_full(
        vec![
            Scripted::text("one"),
            Scripted::text("two"),
            too_long(),
            Scripted::text("three"),
            too_long(),
            too_long(),
        ],
        &[],
    )
    .await;
    let session = "context-heal";
    for turn in 0..3 {
        let body = json!({ "message": long_message(turn, 100), "session_id": session });
        let response = app.agent(body).await;
        assert_eq!(response.status(), 200, "turn {turn}");
    }
    // The third turn was refused once, then sent again with less history.
    let refused = roles_sent(&fake, 2).await;
    let retried = roles_sent(&fake, 3).await;
    assert_eq!(refused.len(), 6);
    assert!(retried.len() < refused.len(), "{retried:?}");
    assert_eq!(retried[1], "user");
    // A refusal of the retry too fails the turn, in the API's own shape.
    let body = json!({ "message": long_message(3, 100), "session_id": session });
    let response = app.agent(body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "context_length_exceeded");
    assert_eq!(fake.requests().await.len(), 6);
    assert_eq!(
        app.stored(session).await.len(),
        6,
        "the failed turn stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_summarises_old_turns_once_and_every_replica_sends_the_summary_after() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let settings = [
        ("AGENT_CONTEXT__MAX_INPUT_TOKENS", "1500"),
        ("AGENT_CONTEXT__STRATEGY", "compact"),
        ("AGENT_CONTEXT__KEEP_RECENT_TURNS", "1"),
        ("AGENT_CONTEXT__SUMMARIZER", "summary-model"),
    ];
    let replicas = spawn_replicas(&fake, &settings, 2).await;
    let session = "context-compacted";
    let mut compactions = Vec::new();
    for turn in 0..8 {
        // Alternating replicas: the summary must come from the store, not a process's cache.
        let app = &replicas[turn % 2];
        let body = json!({ "message": long_message(turn, 300), "session_id": session });
        let (status, answer) = app.post_json("/agent", &body).await;
        assert_eq!(status, 200, "turn {turn}: {answer}");
        if let Some(compaction) = answer["context"]["compaction"].as_object() {
            assert!(compaction["turns"].as_u64().unwrap() >= 1, "{answer}");
            assert_eq!(compaction["tokens_used"], 15, "{answer}");
            assert_eq!(
                answer["tokens_used"], 30,
                "the summary's call counts: {answer}"
            );
            compactions.push(turn);
        }
    }
    // About 310 tokens a turn: the history outgrows 1500 twice in eight turns.
    assert!(compactions.len() >= 2, "compacted at turns {compactions:?}");
    let requests = fake.requests().await;
    let summaries: Vec<&Value> = requests
        .iter()
        .filter(|request| request["model"] == "summary-model")
        .collect();
    assert_eq!(
        summaries.len(),
        compactions.len(),
        "one summary call per compaction"
    );
    let prompt = &summaries[0]["messages"][0]["content"];
    assert_eq!(prompt, agent_core::compaction::SUMMARY_PROMPT);
    let transcript = summaries[0]["messages"][1]["content"].as_str().unwrap();
    assert!(transcript.starts_with("user: question 0:"), "{transcript}");
    let transcript = summaries[1]["messages"][1]["content"].as_str().unwrap();
    assert!(
        transcript.starts_with("(summary so far) noted\nuser: question"),
        "{transcript}"
    );
    // Every request to the agent's model after the first compaction sends the summary in place
    // of the turns it covers, then whole turns.
    let heading = agent_core::compaction::SUMMARY_HEADING;
    let turns: Vec<&Value> = requests
        .iter()
        .filter(|request| request["model"] != "summary-model")
        .collect();
    for request in &turns[compactions[0]..] {
        let messages = request["messages"].as_array().unwrap();
        let summary = messages[1]["content"].as_str().unwrap();
        assert_eq!(summary, format!("{heading}\nnoted"));
        assert_eq!(messages[2]["role"], "user");
        let text = request["messages"].to_string();
        assert!(
            !text.contains("question 0:"),
            "a covered turn was sent again"
        );
    }
    // Every message stays stored and readable.
    let (status, view) = replicas[0].get_json(&format!("/sessions/{session}")).await;
    assert_eq!(status, 200);
    let messages = view["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 16, "{view}");
    assert_eq!(view["compaction"]["summary"], "noted");
    let covered = view["compaction"]["covers_until_sequence"]
        .as_u64()
        .unwrap();
    assert!(covered > 0 && covered % 2 == 0, "whole turns: {view}");
    for message in messages {
        let sequence = message["sequence"].as_u64().unwrap();
        assert_eq!(
            message["compacted"] == true,
            sequence < covered,
            "{message}"
        );
        assert!(message["context_tokens"].as_u64().unwrap() > 0, "{message}");
    }
    let metrics = replicas[0].metrics().await;
    assert!(
        metrics.contains("agent_context_compactions_total{outcome=\"completed\"}"),
        "{metrics}"
    );
}

/// `POST /v1/responses` continuing `previous` (when given) with a 300-word message and `extra`
/// fields: the status and the answer.
async fn respond(
    app: &crate::helpers::TestApp,
    previous: Option<&str>,
    turn: usize,
    extra: Value,
) -> (u16, Value) {
    let mut body = json!({ "model": "agent", "input": long_message(turn, 300) });
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.post_json("/v1/responses", &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_responses_api_chooses_truncation_or_compaction_per_request() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let settings = [
        ("AGENT_CONTEXT__MAX_INPUT_TOKENS", "1000"),
        ("AGENT_CONTEXT__KEEP_RECENT_TURNS", "1"),
    ];
    let app = spawn_with_model(&fake, &settings).await;
    let (status, first) = respond(&app, None, 0, json!({})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["truncation"], "auto");
    let mut previous = first["id"].as_str().unwrap().to_owned();
    let (status, second) = respond(&app, Some(&previous), 1, json!({})).await;
    assert_eq!(status, 200, "{second}");
    previous = second["id"].as_str().unwrap().to_owned();
    // Disabled: over the budget is OpenAI's 400, and nothing is stored.
    let disabled = json!({ "truncation": "disabled" });
    let (status, refused) = respond(&app, Some(&previous), 2, disabled).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["code"], "context_length_exceeded",
        "{refused}"
    );
    assert_eq!(
        refused["error"]["type"], "invalid_request_error",
        "{refused}"
    );
    // Auto: the oldest turn is left out, and the response says so.
    let (status, third) = respond(&app, Some(&previous), 2, json!({ "truncation": "auto" })).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["truncation"], "auto");
    previous = third["id"].as_str().unwrap().to_owned();
    // Compaction past a threshold of the request's own: a summary call, then the summary sent.
    let compaction =
        json!({ "context_management": [{ "type": "compaction", "compact_threshold": 900 }] });
    let before = fake.requests().await.len();
    let (status, fourth) = respond(&app, Some(&previous), 3, compaction).await;
    assert_eq!(status, 200, "{fourth}");
    let requests = fake.requests().await;
    let summary_call = &requests[before];
    assert_eq!(
        summary_call["messages"][0]["content"],
        agent_core::compaction::SUMMARY_PROMPT
    );
    let heading = agent_core::compaction::SUMMARY_HEADING;
    assert_eq!(
        requests[before + 1]["messages"][1]["content"],
        format!("{heading}\nnoted")
    );
    assert_eq!(
        fourth["usage"]["total_tokens"], 30,
        "the summary's call counts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_context_controls_are_refused_with_the_field_named() {
    let (app, fake) = spawn_full(vec![Scripted::text("unused")], &[]).await;
    let cases = [
        (json!({ "truncation": "sometimes" }), "truncation"),
        (
            json!({ "context_management": [{ "type": "forget" }] }),
            "context_management",
        ),
        (
            json!({ "context_management": [{ "type": "compaction", "compact_threshold": 10 }] }),
            "context_management",
        ),
        (
            json!({ "context_management": [{ "type": "compaction" }, { "type": "compaction" }] }),
            "context_management",
        ),
        (
            json!({ "truncation": "disabled", "context_management": [{ "type": "compaction" }] }),
            "truncation",
        ),
    ];
    for (extra, param) in cases {
        let (status, refused) = respond(&app, None, 0, extra.clone()).await;
        assert_eq!(status, 400, "{extra}: {refused}");
        let named = refused["error"]["param"].as_str().unwrap_or_default();
        assert!(named.starts_with(param), "{extra}: {refused}");
    }
    assert!(
        fake.requests().await.is_empty(),
        "the model was never called"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_sent_whole_is_truncated_but_keeps_its_system_messages() {
    let fake = FakeOpenAi::repeating(Scripted::text("noted")).await;
    let app = spawn_with_model(&fake, &[("AGENT_CONTEXT__MAX_INPUT_TOKENS", "1000")]).await;
    let mut messages = vec![json!({ "role": "system", "content": "Answer in French." })];
    for turn in 0..5 {
        messages.push(json!({ "role": "user", "content": long_message(turn, 300) }));
        messages.push(json!({ "role": "assistant", "content": "noted" }));
    }
    messages.push(json!({ "role": "user", "content": "and now?" }));
    let body = json!({ "model": "agent", "messages": messages });
    let (status, answer) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = fake.requests().await[0]["messages"].clone();
    let sent = sent.as_array().unwrap();
    assert_eq!(
        sent[1]["content"], "Answer in French.",
        "the client's instructions stay"
    );
    assert_eq!(sent[2]["role"], "user");
    assert!(sent.len() < 1 + messages.len(), "older turns were left out");
    assert_eq!(sent.last().unwrap()["content"], "and now?");
}

/// The tokens of a chat request as the agent counts it: its messages (content, tool calls, the
/// call ids of tool results), its tools and the reply's priming, with `model`'s tokenizer.
fn tokens_of_request(request: &Value, model: &str) -> u64 {
    let counter = agent_core::TokenCounter::for_model(model);
    let messages: Vec<agent_core::Message> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| agent_core::Message {
            role: agent_core::Role::parse(message["role"].as_str().unwrap()).unwrap(),
            content: message["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls: message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|call| agent_core::ToolCall {
                    id: call["id"].as_str().unwrap().to_owned(),
                    name: call["function"]["name"].as_str().unwrap().to_owned(),
                    arguments: call["function"]["arguments"].as_str().unwrap().to_owned(),
                })
                .collect(),
            tool_call_id: message["tool_call_id"].as_str().map(str::to_owned),
        })
        .collect();
    let tools: Vec<agent_core::ToolSpec> = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tool| agent_core::ToolSpec {
            name: tool["function"]["name"].as_str().unwrap().to_owned(),
            description: tool["function"]["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            parameters: tool["function"]["parameters"].clone(),
        })
        .collect();
    counter.request(&messages, &tools)
}

/// A model that calls the `lookup` tool once per turn, answers "done" once its result is in, and
/// answers a summary request (a compaction) with a short summary.
async fn looking_up_model() -> FakeOpenAi {
    FakeOpenAi::answering(|request| {
        let messages = request["messages"].as_array().unwrap();
        let system = messages[0]["content"].as_str().unwrap_or_default();
        if system == agent_core::compaction::SUMMARY_PROMPT {
            Scripted::text("The user asked for lookups.")
        } else if messages.last().unwrap()["role"] == "tool" {
            Scripted::text("done")
        } else {
            Scripted::tool_call("lookup", json!({}))
        }
    })
    .await
}

/// An HTTP tool `lookup` answering 5 kB of text (about 1000 tokens).
async fn lookup_tool() -> (wiremock::MockServer, String) {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_string("record ".repeat(5_000 / 7)),
        )
        .mount(&server)
        .await;
    let toml = format!(
        "[[http_tools]]\nname = \"lookup\"\ndescription = \"Looks a record up.\"\n\
         url = \"{}/lookup\"\nparameters = {{ type = \"object\" }}\n",
        server.uri()
    );
    (server, crate::helpers::config_file(&toml))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_turn_session_with_5_kb_tool_results_keeps_every_request_within_the_budget() {
    let fake = looking_up_model().await;
    let (_tool, config) = lookup_tool().await;
    let settings = [
        ("AGENT_CONFIG", config.as_str()),
        ("AGENT_CONTEXT__MAX_INPUT_TOKENS", "6000"),
        ("AGENT_CONTEXT__STRATEGY", "compact"),
        ("AGENT_CONTEXT__KEEP_RECENT_TURNS", "2"),
        // 200 turns in a few seconds, from one address.
        ("AGENT_RATE_LIMIT__REQUESTS", "1000"),
    ];
    let app = spawn_with_model(&fake, &settings).await;
    let session = "context-200-turns";
    for turn in 0..200 {
        let body = json!({ "message": format!("look up record {turn}"), "session_id": session });
        let (status, answer) = app.post_json("/agent", &body).await;
        assert_eq!(status, 200, "turn {turn}: {answer}");
        assert_eq!(answer["response"], "done");
    }
    let requests = fake.requests().await;
    let summaries = requests
        .iter()
        .filter(|request| {
            request["messages"][0]["content"] == agent_core::compaction::SUMMARY_PROMPT
        })
        .count();
    assert!(summaries >= 10, "{summaries} compactions in 200 turns");
    for (index, request) in requests.iter().enumerate() {
        let tokens = tokens_of_request(request, "gpt-4o-mini");
        assert!(tokens <= 6000, "request {index} holds {tokens} tokens");
    }
    // The last request: the summary, then the turns since it verbatim as stored (at least the
    // two recent ones), then the new turn's messages so far.
    let last = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    let heading = agent_core::compaction::SUMMARY_HEADING;
    assert_eq!(
        last[1]["content"],
        format!("{heading}\nThe user asked for lookups.")
    );
    let stored = app.stored(session).await;
    assert_eq!(stored.len(), 800, "every message stays stored");
    let sent: Vec<&str> = last[2..]
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default())
        .collect();
    assert!(
        sent.len() >= 3 * 4 - 1,
        "{} messages after the summary",
        sent.len()
    );
    let recent: Vec<&str> = stored[stored.len() - 1 - sent.len()..stored.len() - 1]
        .iter()
        .map(|stored| stored.message.content.as_str())
        .collect();
    assert!(
        sent == recent,
        "the turns after the summary are sent verbatim"
    );
    assert!(sent[0].starts_with("look up record"), "a whole turn first");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncation_with_large_tool_results_sends_the_newest_whole_turns() {
    let fake = looking_up_model().await;
    let (_tool, config) = lookup_tool().await;
    let settings = [
        ("AGENT_CONFIG", config.as_str()),
        ("AGENT_CONTEXT__MAX_INPUT_TOKENS", "4000"),
    ];
    let app = spawn_with_model(&fake, &settings).await;
    let session = "context-truncated-tools";
    for turn in 0..20 {
        let body = json!({ "message": format!("look up record {turn}"), "session_id": session });
        let (status, answer) = app.post_json("/agent", &body).await;
        assert_eq!(status, 200, "turn {turn}: {answer}");
    }
    let requests = fake.requests().await;
    for (index, request) in requests.iter().enumerate() {
        let tokens = tokens_of_request(request, "gpt-4o-mini");
        assert!(tokens <= 4000, "request {index} holds {tokens} tokens");
        let messages = request["messages"].as_array().unwrap();
        assert_eq!(
            messages[1]["role"], "user",
            "request {index} starts with a whole turn"
        );
    }
    // The last turn's first request: the newest whole turns that fit, then the new message.
    let first_of_last = &requests[requests.len() - 2]["messages"];
    let users: Vec<&str> = first_of_last
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "user")
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert!(users.len() >= 2 && users.len() < 20, "{users:?}");
    let newest: Vec<String> = (20 - users.len()..20)
        .map(|turn| format!("look up record {turn}"))
        .collect();
    assert_eq!(users, newest, "the newest turns, in order");
}
