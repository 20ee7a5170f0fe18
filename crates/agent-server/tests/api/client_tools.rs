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
    let answer: Value = app
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let answer: Value = app
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
