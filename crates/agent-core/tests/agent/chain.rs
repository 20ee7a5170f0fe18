//! A model chain over real OpenAI clients and fake model servers: a primary failing with a 5xx
//! (after its own retries) hands the call to the next model, which answers; a 400 is not tried
//! elsewhere; every call starts again at the first model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::metrics::ModelMetrics;
use agent_core::{
    ChatModel, ChatRequest, FallbackObserver, Message, ModelChain, ModelError, OpenAiModel,
    OpenAiOptions, RetryPolicy,
};
use fake_openai::{FakeOpenAi, Scripted};

const ONE_ATTEMPT: RetryPolicy = RetryPolicy {
    max_attempts: 1,
    base_delay: Duration::from_millis(10),
    max_delay: Duration::from_millis(50),
    budget: Duration::from_secs(5),
};

fn model(fake: &FakeOpenAi) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAiModel::new(
            OpenAiOptions {
                headers: Vec::new(),
                base_url: fake.base_url(),
                api_key: None,
                model: "fake-model".into(),
                temperature: 0.2,
                max_tokens: 256,
                request_timeout: Duration::from_secs(2),
                retry: ONE_ATTEMPT,
            },
            ModelMetrics::disabled(),
        )
        .unwrap(),
    )
}

/// A chain of the models of `fakes`, by name, first to last.
fn chain_of(fakes: &[(&str, &FakeOpenAi)], observer: Option<Arc<Seen>>) -> ModelChain {
    let models = fakes
        .iter()
        .map(|(name, fake)| ((*name).to_owned(), model(fake)))
        .collect();
    ModelChain::new(
        models,
        observer.map(|seen| seen as Arc<dyn FallbackObserver>),
    )
}

/// The fallbacks a chain reported: (from, to).
#[derive(Debug, Default)]
struct Seen(Mutex<Vec<(String, String)>>);

impl FallbackObserver for Seen {
    fn fell_back(&self, from: &str, to: &str, _reason: &ModelError) {
        self.0
            .lock()
            .unwrap()
            .push((from.to_owned(), to.to_owned()));
    }
}

/// The answer, and the chain's entry that gave it.
async fn ask(chain: &ModelChain) -> Result<(String, String), ModelError> {
    let messages = [Message::user("hi")];
    let request = ChatRequest {
        messages: &messages,
        tools: &[],
        sampling: &Default::default(),
    };
    chain.complete(request).await.map(|reply| {
        let entry = reply.meta.chain_model.expect("a chain names its entry");
        (reply.message.content, entry)
    })
}

/// What a streamed call answered, and the entry named before its first delta.
async fn ask_streaming(chain: &ModelChain) -> Result<(String, String), ModelError> {
    use futures_util::StreamExt;
    let messages = [Message::user("hi")];
    let request = ChatRequest {
        messages: &messages,
        tools: &[],
        sampling: &Default::default(),
    };
    let mut deltas = chain.stream(request).await?;
    let first = deltas.next().await.expect("a first delta")?;
    let agent_core::ModelDelta::Meta(meta) = first else {
        panic!("the entry comes first: {first:?}")
    };
    let mut assembler = agent_core::ReplyAssembler::default();
    while let Some(delta) = deltas.next().await {
        assembler.push(delta?);
    }
    let reply = assembler.finish()?;
    Ok((reply.message.content, meta.chain_model.unwrap_or_default()))
}

fn answer(text: &str, entry: &str) -> (String, String) {
    (text.to_owned(), entry.to_owned())
}

#[tokio::test]
async fn a_failing_model_hands_the_call_to_the_next_and_a_bad_request_stays_bad() {
    let primary = FakeOpenAi::start(vec![
        Scripted::status(500),
        Scripted::text("primary answers"),
        Scripted::status(400),
    ])
    .await;
    let fallback = FakeOpenAi::repeating(Scripted::text("fallback answers")).await;
    let seen = Arc::new(Seen::default());
    let chain = chain_of(
        &[("gpt-4o-mini", &primary), ("claude-haiku", &fallback)],
        Some(seen.clone()),
    );
    assert_eq!(
        chain.names().collect::<Vec<_>>(),
        ["gpt-4o-mini", "claude-haiku"]
    );

    // 500: the next model answers.
    assert_eq!(
        ask(&chain).await.unwrap(),
        answer("fallback answers", "claude-haiku")
    );
    assert_eq!(
        *seen.0.lock().unwrap(),
        [("gpt-4o-mini".to_owned(), "claude-haiku".to_owned())]
    );
    // The next call starts at the first model again.
    assert_eq!(
        ask(&chain).await.unwrap(),
        answer("primary answers", "gpt-4o-mini")
    );
    // 400: refused, not tried elsewhere.
    let refused = ask(&chain).await.unwrap_err();
    assert!(matches!(refused, ModelError::Rejected(_)), "{refused:?}");
    assert_eq!(seen.0.lock().unwrap().len(), 1);
    assert_eq!(fallback.requests().await.len(), 1);
}

#[tokio::test]
async fn a_request_timeout_falls_back_too() {
    let primary = FakeOpenAi::repeating(Scripted::status(408)).await;
    let fallback = FakeOpenAi::repeating(Scripted::text("fallback answers")).await;
    let chain = chain_of(&[("primary", &primary), ("fallback", &fallback)], None);
    assert_eq!(
        ask(&chain).await.unwrap(),
        answer("fallback answers", "fallback")
    );
}

#[tokio::test]
async fn a_chain_whose_every_model_failed_answers_the_last_cause() {
    let first = FakeOpenAi::repeating(Scripted::status(503)).await;
    let last = FakeOpenAi::repeating(Scripted::rate_limited("0")).await;
    let chain = chain_of(&[("a", &first), ("b", &last)], None);
    let failed = ask(&chain).await.unwrap_err();
    assert!(
        matches!(failed, ModelError::RateLimited { .. }),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_streamed_call_names_the_entry_that_answers() {
    let primary = FakeOpenAi::repeating(Scripted::status(502)).await;
    let fallback = FakeOpenAi::repeating(Scripted::text("fallback streams")).await;
    let chain = chain_of(&[("primary", &primary), ("fallback", &fallback)], None);
    assert_eq!(
        ask_streaming(&chain).await.unwrap(),
        answer("fallback streams", "fallback")
    );
}
