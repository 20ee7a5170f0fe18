//! What third-party agent SDKs send, at the HTTP level: the Responses API with the whole
//! conversation in `input` (client-managed history, stored or not), and structured output
//! (`response_format`, `text.format`) on `/v1/chat/completions`, `/v1/responses` and `/agent`,
//! against the fake model (which must receive the format) and the offline model (whose answer
//! must match the schema). The SDKs themselves run in `cargo xtask sdk`.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_with_model};

fn conversation() -> Value {
    // As the OpenAI Agents SDK's `to_input_list()` writes it: the assistant's output item kept
    // whole, with fields the server has no use for.
    json!([
        { "role": "user", "content": "My name is Ada." },
        { "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
          "content": [{ "type": "output_text", "text": "Hello, Ada.", "annotations": [], "logprobs": [] }] },
        { "role": "user", "content": [{ "type": "input_text", "text": "What is my name?" }] }
    ])
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// (role, content) of the messages the model got in its `index`-th request.
async fn sent(fake: &FakeOpenAi, index: usize) -> Vec<(String, String)> {
    fake.requests().await[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            (
                message["role"].as_str().unwrap().to_owned(),
                message["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(role, content)| ((*role).to_owned(), (*content).to_owned()))
        .collect()
}

/// OpenAI's conversation-state guide: the whole conversation in `input`, `store` left at its
/// default. The turn runs on it; the response is stored with it, so `previous_response_id`
/// continues from all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_conversation_in_input_runs_and_is_stored_with_the_response() {
    let fake = FakeOpenAi::start(vec![
        Scripted::text("Your name is Ada."),
        Scripted::text("Ada, with three letters."),
        Scripted::text("Yes."),
        Scripted::text("Unstored."),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let (status, first) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": conversation(), "instructions": "Be brief." }),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["store"], true);
    assert_eq!(
        sent(&fake, 0).await[1..],
        pairs(&[
            ("system", "Be brief."),
            ("user", "My name is Ada."),
            ("assistant", "Hello, Ada."),
            ("user", "What is my name?"),
        ])
    );

    let (status, second) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": "How long is it?", "previous_response_id": first["id"] }),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        sent(&fake, 1).await[1..],
        pairs(&[
            ("user", "My name is Ada."),
            ("assistant", "Hello, Ada."),
            ("user", "What is my name?"),
            ("assistant", "Your name is Ada."),
            ("user", "How long is it?"),
        ]),
        "the stored conversation holds the client's messages and the turn's"
    );
    // The session holds both turns' messages, the client's earlier ones first.
    let (_, sessions) = app.get_json("/sessions").await;
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        1,
        "{sessions}"
    );
    let session = sessions["sessions"][0]["session_id"].as_str().unwrap();
    let (_, history) = app.get_json(&format!("/sessions/{session}")).await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        contents,
        [
            "My name is Ada.",
            "Hello, Ada.",
            "What is my name?",
            "Your name is Ada.",
            "How long is it?",
            "Ada, with three letters."
        ]
    );

    // An earlier answer as a reference to a stored response's output message (the Vercel AI
    // SDK's `item_reference`); one that is nobody's is 404 naming it.
    let message_id = first["output"][0]["id"].as_str().unwrap();
    let (status, referenced) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": [
            { "role": "user", "content": "What is my name?" },
            { "type": "item_reference", "id": message_id },
            { "role": "user", "content": "Sure?" }
        ] }),
    )
    .await;
    assert_eq!(status, 200, "{referenced}");
    assert_eq!(
        sent(&fake, 2).await[1..],
        pairs(&[
            ("user", "What is my name?"),
            ("assistant", "Your name is Ada."),
            ("user", "Sure?"),
        ])
    );
    let (status, missing) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": [
            { "type": "item_reference", "id": "msg_00000000000000000000000000000000" },
            { "role": "user", "content": "Sure?" }
        ] }),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["param"], "input[0].id");

    // previous_response_id and more earlier messages: they follow the stored conversation.
    let (status, third) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "store": false, "previous_response_id": second["id"], "input": [
            { "role": "developer", "content": "Answer in French." },
            { "role": "assistant", "content": "Anything else?" },
            { "role": "user", "content": "No." }
        ] }),
    )
    .await;
    assert_eq!(status, 200, "{third}");
    let messages = sent(&fake, 3).await;
    assert_eq!(
        messages[messages.len() - 4..],
        pairs(&[
            ("assistant", "Ada, with three letters."),
            ("system", "Answer in French."),
            ("assistant", "Anything else?"),
            ("user", "No."),
        ])
    );
}

/// Still refused, as OpenAI refuses it or the turn cannot be: a conversation not ending with
/// the user's message, an empty one, an item type the server cannot take.
#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_the_agent_cannot_answer_is_a_400_naming_the_item() {
    let fake = FakeOpenAi::repeating(Scripted::text("unused")).await;
    let app = spawn_with_model(&fake, &[]).await;
    for (input, param) in [
        (
            json!([{ "role": "user", "content": "a" }, { "role": "assistant", "content": "b" }]),
            "input[1].role",
        ),
        (json!([]), "input"),
        (
            json!([{ "type": "reasoning", "role": "user", "content": "a" }]),
            "input[0].type",
        ),
        (
            json!([{ "role": "user", "content": [{ "type": "input_image", "image_url": "x" }] }]),
            "input[0].content[0].type",
        ),
        // A blank part is refused as Chat Completions refuse it, whatever the joined text.
        (
            json!([{ "role": "user", "content": [
                { "type": "input_text", "text": "hi" },
                { "type": "input_text", "text": "  " },
            ] }]),
            "input[0].content[1].text",
        ),
        (
            json!([
                { "role": "user", "content": [{ "type": "input_text", "text": "\u{0}" }] },
                { "role": "user", "content": "hi" },
            ]),
            "input[0].content[0].text",
        ),
    ] {
        let (status, body) = post(
            &app,
            "/v1/responses",
            json!({ "model": "agent", "input": input }),
        )
        .await;
        assert_eq!(status, 400, "{input}: {body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    assert!(fake.requests().await.is_empty());
}

fn city_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": { "type": "string", "minLength": 1 },
            "population": { "type": "integer", "minimum": 1 }
        },
        "required": ["city", "population"],
        "additionalProperties": false
    })
}

/// `response_format` on Chat Completions and `/agent`, `text.format` on Responses: the model
/// receives it in Chat Completions' shape on every call of the turn, tool steps included; the
/// response object echoes the format.
#[tokio::test(flavor = "multi_thread")]
async fn the_model_receives_the_format_on_every_call_of_the_turn() {
    let answer = r#"{"city":"Paris","population":2100000}"#;
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({"expression": "2+2"})),
        Scripted::text(answer),
        Scripted::text(answer),
        Scripted::text(answer),
        Scripted::text("free text"),
    ])
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let expected = json!({ "type": "json_schema", "json_schema": {
        "name": "city", "schema": city_schema(), "strict": true
    } });

    let (status, body) = post(
        &app,
        "/v1/chat/completions",
        json!({ "model": "agent", "messages": [{ "role": "user", "content": "largest city?" }],
                "response_format": expected.clone() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], answer);
    let requests = fake.requests().await;
    assert_eq!(requests[0]["response_format"], expected, "the tool step");
    assert_eq!(requests[1]["response_format"], expected, "the final answer");

    let (status, body) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": "largest city?", "text": { "format": {
            "type": "json_schema", "name": "city", "schema": city_schema(), "strict": true
        }, "verbosity": "medium" } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests().await[2]["response_format"], expected);
    assert_eq!(body["text"]["format"]["type"], "json_schema");
    assert_eq!(body["text"]["format"]["schema"], city_schema());

    let (status, body) = post(
        &app,
        "/agent",
        json!({ "message": "largest city?", "response_format": { "type": "json_object" } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.requests().await[3]["response_format"],
        json!({ "type": "json_object" })
    );
    // Without a format nothing is sent: free text is the model server's default.
    let (status, _) = post(&app, "/agent", json!({ "message": "hi" })).await;
    assert_eq!(status, 200);
    assert!(fake.requests().await[4].get("response_format").is_none());
}

/// The offline model answers a schema with the simplest JSON it accepts, so the path works
/// with no model server.
#[tokio::test(flavor = "multi_thread")]
async fn the_offline_model_answers_json_matching_the_schema() {
    let app = spawn_app().await;
    let validator = jsonschema::validator_for(&city_schema()).unwrap();
    let (status, body) = post(
        &app,
        "/v1/chat/completions",
        json!({ "model": "agent", "messages": [{ "role": "user", "content": "a city" }],
                "response_format": { "type": "json_schema", "json_schema": { "name": "city", "schema": city_schema() } } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(validator.is_valid(&content), "{content}");

    let (status, body) = post(
        &app,
        "/v1/responses",
        json!({ "model": "agent", "input": "what is 6*7", "text": { "format": {
            "type": "json_schema", "name": "city", "schema": city_schema(), "strict": true } } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        validator.is_valid(&serde_json::from_str(text).unwrap()),
        "{text}"
    );

    let (status, body) = post(
        &app,
        "/agent",
        json!({ "message": "hello", "response_format": { "type": "json_object" } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let object: Value = serde_json::from_str(body["response"].as_str().unwrap()).unwrap();
    assert!(object.is_object(), "{object}");
}

/// A model server that refuses the format: a 400 saying so, and nothing stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_server_refusing_the_format_is_a_400_and_stores_nothing() {
    let fake = FakeOpenAi::repeating(Scripted::Status {
        status: 400,
        retry_after: None,
        body: json!({ "error": { "message": "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.", "type": "invalid_request_error", "param": "response_format", "code": null } }).to_string(),
    })
    .await;
    let app = spawn_with_model(&fake, &[]).await;
    let format = json!({ "type": "json_schema", "json_schema": { "name": "city", "schema": city_schema() } });
    let (status, body) = post(
        &app,
        "/agent",
        json!({ "message": "a city", "session_id": "refused", "response_format": format }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("response_format_unsupported")),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/v1/chat/completions",
        json!({ "model": "agent", "messages": [{ "role": "user", "content": "a city" }], "response_format": format }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("response_format_unsupported")),
        "{body}"
    );
    assert!(app.stored("refused").await.is_empty());
}

/// An unknown format type names the field and the values it takes, in each route's shape.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_format_names_the_field_and_the_accepted_values() {
    let fake = FakeOpenAi::repeating(Scripted::text("unused")).await;
    let app = spawn_with_model(&fake, &[]).await;
    for (path, body, status, param) in [
        (
            "/v1/chat/completions",
            json!({ "model": "agent", "messages": [{ "role": "user", "content": "hi" }], "response_format": { "type": "yaml" } }),
            400,
            "response_format.type",
        ),
        (
            "/v1/responses",
            json!({ "model": "agent", "input": "hi", "text": { "format": { "type": "yaml" } } }),
            400,
            "text.format.type",
        ),
        (
            "/agent",
            json!({ "message": "hi", "response_format": { "type": "yaml" } }),
            422,
            "response_format.type",
        ),
    ] {
        let (got, answer) = post(&app, path, body).await;
        assert_eq!(got, status, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(param)
                && ["yaml", "text", "json_object", "json_schema"]
                    .iter()
                    .all(|value| message.contains(value)),
            "{path}: {message}"
        );
    }
    assert!(fake.requests().await.is_empty());
}
