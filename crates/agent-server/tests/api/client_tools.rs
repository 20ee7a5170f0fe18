//! The client's own tools on `/v1/chat/completions`: offered to the model beside the agent's; a
//! call to one ends the answer with `finish_reason: tool_calls` (the agent's own calls of the
//! same step run at once), the run completes (a stateless request leaves nothing waiting), and
//! the client's `tool` messages carry the conversation on.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};
use test_support::sse;

use crate::helpers::spawn_with_model;

fn weather_tool() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_a_client_tool_is_answered_as_tool_calls_and_its_result_carries_the_turn_on() {
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            (
                "get_weather".to_owned(),
                json!({"city": "Paris"}).to_string(),
            ),
            (
                "calculator".to_owned(),
                json!({"expression": "6*7"}).to_string(),
            ),
        ]),
        Scripted::text("Sunny in Paris."),
        Scripted::ToolCalls(vec![(
            "get_weather".to_owned(),
            json!({"city": "Oslo"}).to_string(),
        )]),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let url = format!("{}/v1/chat/completions", app.address);
    let question = json!({"role": "user", "content": "Weather in Paris, and 6*7?"});
    let body = json!({"model": "agent", "messages": [question], "tools": [weather_tool()]});
    let (_, answer) = app.post_json("/v1/chat/completions", &body).await;
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert_eq!(choice["message"]["content"], Value::Null, "{answer}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "only the client's call goes back: {answer}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    // The model was offered the client's tool beside the agent's.
    let requests = fake.requests().await;
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"get_weather") && offered.contains(&"calculator"));

    // The client runs it and sends its result with the conversation.
    let call_id = calls[0]["id"].as_str().unwrap();
    let body = json!({
        "model": "agent",
        "tools": [weather_tool()],
        "messages": [
            question,
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 24 C"}
        ]
    });
    let (_, answer) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Sunny in Paris."
    );
    let requests = fake.requests().await;
    let sent = requests[1]["messages"].as_array().unwrap();
    let last = sent.last().unwrap();
    assert_eq!(
        (&last["role"], &last["content"]),
        (&json!("tool"), &json!("sunny, 24 C"))
    );
    assert_eq!(last["tool_call_id"], call_id);

    // Streamed: the calls come whole in one chunk, then finish_reason tool_calls.
    let streamed = app
        .client
        .post(&url)
        .json(
            &json!({"model": "agent", "stream": true, "tools": [weather_tool()],
                      "messages": [{"role": "user", "content": "And Oslo?"}]}),
        )
        .send()
        .await
        .unwrap();
    let events = sse::events(&streamed.text().await.unwrap());
    let chunks: Vec<Value> = events.iter().map(sse::SseEvent::json).collect();
    let with_calls = chunks
        .iter()
        .find(|chunk| !chunk["choices"][0]["delta"]["tool_calls"].is_null())
        .expect("a chunk with the tool calls");
    let call = &with_calls["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (&call["index"], &call["function"]["name"]),
        (&json!(0), &json!("get_weather"))
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|chunk| &chunk["choices"][0]["finish_reason"])
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

/// `POST /v1/responses` with `body`: the response object.
async fn respond(app: &crate::helpers::TestApp, body: Value) -> (u16, Value) {
    app.post_json("/v1/responses", &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_responses_api_ends_with_function_call_items_answered_by_function_call_outputs() {
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![(
            "get_weather".to_owned(),
            json!({"city": "Paris"}).to_string(),
        )]),
        Scripted::text("Sunny in Paris."),
        Scripted::ToolCalls(vec![(
            "get_weather".to_owned(),
            json!({"city": "Oslo"}).to_string(),
        )]),
        Scripted::text("Snowing in Oslo."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let tool = json!({"type": "function", "name": "get_weather", "description": "The weather",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});

    // Stored: the call is an output item; previous_response_id and its output go on.
    let (status, first) = respond(
        &app,
        json!({"model": "agent", "input": "Weather in Paris?", "tools": [tool]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "completed");
    let output = first["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "no empty message beside the call: {first}");
    let call = &output[0];
    assert_eq!(
        (&call["type"], &call["name"]),
        (&json!("function_call"), &json!("get_weather"))
    );
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    // Without the output it waits for: 400, as OpenAI answers.
    let (status, refused) = respond(
        &app,
        json!({"model": "agent", "previous_response_id": first["id"], "input": "and?", "tools": [tool]}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&call_id),
        "{refused}"
    );
    let (status, second) = respond(
        &app,
        json!({"model": "agent", "previous_response_id": first["id"], "tools": [tool],
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["output"][0]["content"][0]["text"], "Sunny in Paris.");
    let sent = &fake.requests().await[1]["messages"];
    let last = sent.as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["role"], &last["content"]),
        (&json!("tool"), &json!("sunny"))
    );

    // Stateless: the whole conversation, the call item sent back as it came.
    let (_, third) = respond(
        &app,
        json!({"model": "agent", "store": false, "input": "Weather in Oslo?", "tools": [tool]}),
    )
    .await;
    let call = third["output"][0].clone();
    assert_eq!(call["type"], "function_call", "{third}");
    let (status, fourth) = respond(
        &app,
        json!({"model": "agent", "store": false, "tools": [tool], "input": [
            {"role": "user", "content": "Weather in Oslo?"},
            call,
            {"type": "function_call_output", "call_id": call["call_id"], "output": "snow"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{fourth}");
    assert_eq!(
        fourth["output"][0]["content"][0]["text"],
        "Snowing in Oslo."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_responses_api_asks_approval_with_mcp_approval_requests_and_runs_what_is_approved() {
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![
            (
                "calculator".to_owned(),
                json!({"expression": "6*7"}).to_string(),
            ),
            ("current_time".to_owned(), "{}".to_owned()),
        ]),
        Scripted::text("It is 42."),
        Scripted::ToolCalls(vec![(
            "calculator".to_owned(),
            json!({"expression": "1/0"}).to_string(),
        )]),
        Scripted::text("Not computed."),
    ])
    .await;
    let file = crate::helpers::config_file(
        "[builtin_tools]\nrequire_approval = { always = { tool_names = [\"calculator\"] } }\n",
    );
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let (status, first) =
        respond(&app, json!({"model": "agent", "input": "6*7 and the time"})).await;
    assert_eq!(status, 200, "{first}");
    let request = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "mcp_approval_request")
        .unwrap_or_else(|| panic!("an approval request: {first}"))
        .clone();
    assert_eq!(
        (&request["name"], &request["server_label"]),
        (&json!("calculator"), &json!("agent"))
    );
    assert_eq!(
        first["output"].as_array().unwrap().len(),
        1,
        "the clock ran: {first}"
    );
    let approve = |id: &Value, approve: bool| json!([{"type": "mcp_approval_response", "approval_request_id": id, "approve": approve, "reason": "not now"}]);
    let (status, second) = respond(
        &app,
        json!({"model": "agent", "previous_response_id": first["id"], "input": approve(&request["id"], true)}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["output"][0]["content"][0]["text"], "It is 42.");
    let results: Vec<String> = fake.requests().await[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| message["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].contains("unix") && results[1] == "42",
        "{results:?}"
    );
    // The same approval again: the conversation went on, so it runs nothing twice.
    let (status, again) = respond(
        &app,
        json!({"model": "agent", "previous_response_id": first["id"], "input": approve(&request["id"], true)}),
    )
    .await;
    assert_eq!(status, 409, "{again}");

    // Rejected, statelessly: the model reads why.
    let (_, third) = respond(
        &app,
        json!({"model": "agent", "store": false, "input": "divide"}),
    )
    .await;
    let request = third["output"][0].clone();
    assert_eq!(request["type"], "mcp_approval_request", "{third}");
    let (status, fourth) = respond(
        &app,
        json!({"model": "agent", "store": false, "input": [
            {"role": "user", "content": "divide"}, request, approve(&request["id"], false)[0]
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{fourth}");
    assert_eq!(fourth["output"][0]["content"][0]["text"], "Not computed.");
    let sent = &fake.requests().await[3]["messages"];
    let last = sent.as_array().unwrap().last().unwrap();
    assert_eq!(last["content"], "rejected by the user: not now");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_session_the_calls_are_stored_and_the_tool_messages_carry_the_session_on() {
    let fake = FakeOpenAi::start(vec![
        Scripted::ToolCalls(vec![(
            "get_weather".to_owned(),
            json!({"city": "Rome"}).to_string(),
        )]),
        Scripted::text("Warm in Rome."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let chat = |body: Value| {
        app.client
            .post(format!("{}/v1/chat/completions", app.address))
            .header("X-Session-Id", "weather-chat")
            .json(&body)
            .send()
    };
    let question = json!({"role": "user", "content": "Weather in Rome?"});
    let first: Value =
        chat(json!({"model": "agent", "tools": [weather_tool()], "messages": [question]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let calls = first["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(calls[0]["function"]["name"], "get_weather", "{first}");
    let call_id = calls[0]["id"].as_str().unwrap();

    // A new question before the call is answered: refused, as OpenAI refuses it.
    let refused = chat(json!({"model": "agent", "tools": [weather_tool()],
                              "messages": [question, {"role": "user", "content": "and Oslo?"}]}))
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(call_id),
        "{refused}"
    );

    // The whole conversation, or only its end: the session holds the rest.
    let answer: Value = chat(
        json!({"model": "agent", "tools": [weather_tool()], "messages": [
            {"role": "tool", "tool_call_id": call_id, "content": "28 C"}
        ]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "Warm in Rome.",
        "{answer}"
    );
    let stored = app.stored("weather-chat").await;
    let roles: Vec<&str> = stored
        .iter()
        .map(|stored| stored.message.role.as_str())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(stored[2].message.content, "28 C");
}
