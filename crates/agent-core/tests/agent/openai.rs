//! The OpenAI-compatible model through the real async-openai client against the fake server:
//! a multi-step tool conversation, retries (counted by the requests the server received), and
//! typed errors for every way a server can fail.

use std::sync::Arc;
use std::time::Duration;

use agent_core::metrics::ModelMetrics;
use agent_core::{
    AgentError, AgentEvent, ChatModel, ChatRequest, Message, ModelError, OpenAiModel,
    OpenAiOptions, RetryPolicy, Role, TurnRequest,
};
use fake_openai::{COMPLETION_TOKENS, FakeOpenAi, PROMPT_TOKENS, Scripted};
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;

use crate::scripted::{LIMITS, agent};

const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(10),
    max_delay: Duration::from_millis(50),
    budget: Duration::from_secs(10),
};

fn model(fake: &FakeOpenAi, retry: RetryPolicy) -> OpenAiModel {
    model_recording(fake, retry, ModelMetrics::disabled())
}

fn model_recording(fake: &FakeOpenAi, retry: RetryPolicy, metrics: ModelMetrics) -> OpenAiModel {
    OpenAiModel::new(
        OpenAiOptions {
            headers: Vec::new(),
            base_url: fake.base_url(),
            api_key: Some("sk-test".to_owned().into()),
            model: "fake-model".into(),
            temperature: 0.2,
            max_tokens: 256,
            request_timeout: Duration::from_secs(2),
            retry,
        },
        metrics,
    )
    .unwrap()
}

fn request(text: &str) -> TurnRequest {
    TurnRequest {
        history: vec![Message::user("earlier"), Message::assistant("noted")],
        user_message: text.into(),
        session_tokens_used: 0,
        sampling: Default::default(),
        waits: Default::default(),
        resume: None,
        context: Default::default(),
    }
}

async fn complete(model: &OpenAiModel) -> Result<agent_core::ModelReply, ModelError> {
    model
        .complete(ChatRequest {
            messages: &[Message::user("hi")],
            tools: &[],
            sampling: &Default::default(),
        })
        .await
}

#[tokio::test]
async fn a_three_step_tool_conversation_gives_the_final_text_order_and_summed_tokens() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "2+3*4" })),
        Scripted::tool_call("current_time", json!({})),
        Scripted::text("2+3*4 is 14."),
    ])
    .await;
    let agent = agent(Arc::new(model(&fake, RETRY)), Vec::new(), LIMITS);
    let result = agent
        .run_turn(request("compute and tell the time"))
        .await
        .unwrap();

    assert_eq!(result.response, "2+3*4 is 14.");
    let roles: Vec<Role> = result
        .turn
        .messages
        .iter()
        .map(|message| message.role)
        .collect();
    use Role::{Assistant, Tool, User};
    assert_eq!(roles, [User, Assistant, Tool, Assistant, Tool, Assistant]);
    assert_eq!(result.turn.messages[1].tool_calls[0].name, "calculator");
    assert_eq!(result.turn.messages[2].content, "14");
    assert_eq!(result.turn.usage.prompt_tokens, 3 * PROMPT_TOKENS);
    assert_eq!(result.turn.usage.completion_tokens, 3 * COMPLETION_TOKENS);

    let requests = fake.requests().await;
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(first["model"], "fake-model");
    assert_eq!(first["tools"][0]["type"], "function");
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["current_time", "calculator"]);
    let history: Vec<&str> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["system", "user", "assistant", "user"],
        "the history reaches the model"
    );
    let third = requests[2]["messages"].as_array().unwrap();
    assert_eq!(third[4]["tool_calls"][0]["function"]["name"], "calculator");
    assert_eq!(third[5]["role"], "tool");
    assert_eq!(third[5]["content"], "14");
    assert_eq!(third[5]["tool_call_id"], third[4]["tool_calls"][0]["id"]);
}

#[tokio::test]
async fn a_429_then_200_succeeds_after_one_retry_that_honoured_retry_after() {
    let fake =
        FakeOpenAi::start(vec![Scripted::rate_limited("0.2"), Scripted::text("hello")]).await;
    // Backoff alone would wait 30 s or more, past the 5 s budget: only Retry-After fits.
    let policy = RetryPolicy {
        base_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        budget: Duration::from_secs(5),
        ..RETRY
    };
    let reply = complete(&model(&fake, policy)).await.unwrap();
    assert_eq!(reply.message.content, "hello");
    assert_eq!(fake.requests().await.len(), 2);
}

#[tokio::test]
async fn persistent_500s_give_up_after_the_configured_attempts() {
    for attempts in [1, 3, 5] {
        let fake = FakeOpenAi::repeating(Scripted::status(500)).await;
        let error = complete(&model(
            &fake,
            RetryPolicy {
                max_attempts: attempts,
                ..RETRY
            },
        ))
        .await
        .unwrap_err();
        assert!(matches!(error, ModelError::Upstream { .. }), "{error:?}");
        assert_eq!(fake.requests().await.len(), attempts as usize);
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_gives_up_at_once_as_rate_limited() {
    let fake = FakeOpenAi::repeating(Scripted::rate_limited("120")).await;
    let error = complete(&model(&fake, RETRY)).await.unwrap_err();
    assert!(
        matches!(error, ModelError::RateLimited { retry_after: Some(wait) } if wait == Duration::from_secs(120)),
        "{error:?}"
    );
    assert_eq!(fake.requests().await.len(), 1);
}

#[tokio::test]
async fn each_failure_gets_its_typed_error() {
    struct Case {
        answer: Scripted,
        requests: usize,
        check: fn(&ModelError) -> bool,
    }
    let cases = [
        Case {
            answer: Scripted::Malformed,
            requests: 1,
            check: |error| matches!(error, ModelError::Unusable(_)),
        },
        Case {
            answer: Scripted::status(401),
            requests: 1,
            check: |error| matches!(error, ModelError::Authentication(_)),
        },
        Case {
            answer: Scripted::status(400),
            requests: 1,
            check: |error| matches!(error, ModelError::Rejected(_)),
        },
        Case {
            answer: Scripted::Slow(Duration::from_secs(5), Box::new(Scripted::text("late"))),
            requests: 1,
            check: |error| matches!(error, ModelError::Timeout(limit) if *limit == Duration::from_secs(2)),
        },
        Case {
            answer: Scripted::Raw(json!({ "choices": [] })),
            requests: 1,
            check: |error| matches!(error, ModelError::Unusable(_)),
        },
    ];
    for case in cases {
        let label = format!("{:?}", case.answer);
        let fake = FakeOpenAi::repeating(case.answer).await;
        let error = complete(&model(&fake, RETRY)).await.unwrap_err();
        assert!((case.check)(&error), "{label}: {error:?}");
        assert_eq!(fake.requests().await.len(), case.requests, "{label}");
    }
}

#[tokio::test]
async fn answers_without_the_fields_local_servers_omit_are_accepted() {
    let fake = FakeOpenAi::repeating(Scripted::Raw(json!({
        "choices": [{ "message": { "content": null, "tool_calls": [{ "function": { "name": "calculator", "arguments": "{\"expression\":\"1+1\"}" } }] } }]
    })))
    .await;
    let reply = complete(&model(&fake, RETRY)).await.unwrap();
    assert_eq!(reply.message.tool_calls[0].name, "calculator");
    assert_eq!(reply.message.tool_calls[0].id, "call_0");
    assert_eq!(reply.usage.total(), 0);
}

#[tokio::test]
async fn a_stream_with_split_tool_arguments_is_joined_and_the_turn_streams_its_answer() {
    let fake = FakeOpenAi::start(vec![
        Scripted::tool_call("calculator", json!({ "expression": "12*12" })),
        Scripted::text("12*12 is 144."),
    ])
    .await;
    let agent = agent(Arc::new(model(&fake, RETRY)), Vec::new(), LIMITS);
    let events: Vec<AgentEvent> = agent.run_turn_streaming(request("12*12?")).collect().await;
    let mut text = String::new();
    let mut saw = Vec::new();
    for event in &events {
        match event {
            AgentEvent::TextDelta(delta) => text.push_str(delta),
            AgentEvent::ToolCallStarted(call) => {
                saw.push(format!("call {} {}", call.name, call.arguments))
            }
            AgentEvent::ToolResult { content, .. } => saw.push(format!("result {content}")),
            AgentEvent::Done(result) => {
                saw.push(format!("done {}", result.response));
                assert_eq!(
                    result.turn.usage.total(),
                    2 * (PROMPT_TOKENS + COMPLETION_TOKENS)
                );
            }
            AgentEvent::Failed(error) => panic!("{error}"),
        }
    }
    assert_eq!(
        saw,
        [
            r#"call calculator {"expression":"12*12"}"#,
            "result 144",
            "done 12*12 is 144."
        ]
    );
    assert_eq!(text, "12*12 is 144.");
    let requests = fake.requests().await;
    assert_eq!(requests[0]["stream"], true);
    assert_eq!(requests[0]["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_is_a_typed_error() {
    let fake = FakeOpenAi::repeating(Scripted::CutStream("Once upon a".into())).await;
    let agent = agent(Arc::new(model(&fake, RETRY)), Vec::new(), LIMITS);
    let events: Vec<AgentEvent> = agent.run_turn_streaming(request("story")).collect().await;
    assert!(
        matches!(events.first(), Some(AgentEvent::TextDelta(text)) if text == "Once upon a"),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(AgentEvent::Failed(AgentError::Model(ModelError::Unusable(message)))) if message.contains("ended before")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported_as_upstream() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let model = OpenAiModel::new(
        OpenAiOptions {
            headers: Vec::new(),
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: None,
            model: "m".into(),
            temperature: 0.0,
            max_tokens: 10,
            request_timeout: Duration::from_secs(2),
            retry: RETRY,
        },
        ModelMetrics::disabled(),
    )
    .unwrap();
    let error = complete(&model).await.unwrap_err();
    assert!(matches!(error, ModelError::Upstream { .. }), "{error:?}");
}

/// The recorder is the test's own, so other tests (in this binary or running at the same time)
/// cannot make these counts pass or fail.
#[tokio::test]
async fn complete_and_stream_both_record_latency_errors_and_retries() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = ModelMetrics::register(&recorder);
    let fake = FakeOpenAi::start(vec![
        Scripted::text("one"),
        Scripted::status(503),
        Scripted::status(400),
        Scripted::text("streamed"),
    ])
    .await;
    let model = model_recording(
        &fake,
        RetryPolicy {
            max_attempts: 2,
            ..RETRY
        },
        metrics,
    );
    complete(&model).await.unwrap();
    let error = complete(&model).await.unwrap_err();
    assert!(matches!(error, ModelError::Rejected(_)), "{error:?}");
    let mut stream = model
        .stream(ChatRequest {
            messages: &[Message::user("hi")],
            tools: &[],
            sampling: &Default::default(),
        })
        .await
        .unwrap();
    while stream.next().await.is_some() {}
    let text = recorder.handle().render();
    for line in [
        "model_call_duration_seconds_count{mode=\"complete\"} 2",
        "model_call_duration_seconds_count{mode=\"stream\"} 1",
        "model_call_errors_total{kind=\"rejected\"} 1",
        "model_call_retries_total 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

/// A turn's sampling choices go to the model server with every call; what it leaves unset is the
/// configuration's, and `max_tokens` never exceeds the configured one.
#[tokio::test]
async fn sampling_choices_reach_the_model_server_within_the_configured_bounds() {
    let fake = FakeOpenAi::repeating(Scripted::text("ok")).await;
    let model = model(&fake, RETRY);
    let sampling = agent_core::Sampling {
        temperature: Some(1.5),
        top_p: Some(0.5),
        max_tokens: Some(64),
        seed: Some(7),
        stop: vec!["END".into()],
        presence_penalty: Some(0.25),
        frequency_penalty: Some(-0.5),
        parallel_tool_calls: Some(false),
        response_format: agent_core::ResponseFormat::JsonObject,
    };
    let tools = [agent_core::ToolSpec {
        name: "lookup".into(),
        description: "Looks a word up".into(),
        parameters: json!({"type": "object"}),
    }];
    let call = |sampling| {
        let model = model.clone();
        let tools = tools.clone();
        async move {
            model
                .complete(ChatRequest {
                    messages: &[Message::user("hi")],
                    tools: &tools,
                    sampling: &sampling,
                })
                .await
                .unwrap()
        }
    };
    call(sampling).await;
    call(agent_core::Sampling {
        max_tokens: Some(100_000),
        ..Default::default()
    })
    .await;
    let requests = fake.requests().await;
    let chosen = &requests[0];
    assert_eq!(chosen["temperature"], 1.5);
    assert_eq!(chosen["top_p"], 0.5);
    assert_eq!(chosen["max_tokens"], 64);
    assert_eq!(chosen["seed"], 7);
    assert_eq!(chosen["stop"], json!(["END"]));
    assert_eq!(chosen["presence_penalty"], 0.25);
    assert_eq!(chosen["frequency_penalty"], -0.5);
    assert_eq!(chosen["parallel_tool_calls"], false);
    assert_eq!(chosen["response_format"], json!({"type": "json_object"}));
    let defaults = &requests[1];
    assert_eq!(defaults["temperature"], 0.2);
    assert_eq!(defaults["max_tokens"], 256, "capped at the configured 256");
    for unset in [
        "top_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "parallel_tool_calls",
        "response_format",
    ] {
        assert!(defaults.get(unset).is_none(), "{unset}");
    }
}

/// A 400 saying the conversation is too long (OpenAI's code, vLLM's message) is a context-length
/// error, not a generic rejection.
#[tokio::test]
async fn a_context_length_refusal_is_recognised() {
    for body in [
        json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}).to_string(),
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens".to_owned(),
    ] {
        let fake = FakeOpenAi::repeating(Scripted::Status {
            status: 400,
            retry_after: None,
            body,
        })
        .await;
        let error = complete(&model(&fake, RETRY)).await.unwrap_err();
        assert!(matches!(error, ModelError::ContextLength(_)), "{error:?}");
    }
    let fake = FakeOpenAi::repeating(Scripted::status(400)).await;
    let error = complete(&model(&fake, RETRY)).await.unwrap_err();
    assert!(matches!(error, ModelError::Rejected(_)), "{error:?}");
}

#[tokio::test]
async fn a_streamed_call_sends_the_key_and_the_model_never_prints_it() {
    let fake = FakeOpenAi::repeating(Scripted::text("streamed answer")).await;
    let model = model(&fake, RETRY);
    let deltas: Vec<_> = model
        .stream(ChatRequest {
            messages: &[Message::user("hi")],
            tools: &[],
            sampling: &Default::default(),
        })
        .await
        .unwrap()
        .collect()
        .await;
    assert!(deltas.iter().all(Result::is_ok), "{deltas:?}");
    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["stream"], json!(true));
    assert_eq!(
        fake.header_values("authorization").await,
        vec![Some("Bearer sk-test".to_owned())]
    );
    let printed = format!("{model:?}");
    assert!(!printed.contains("sk-test"), "{printed}");
}
