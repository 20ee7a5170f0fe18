//! A model chain: an agent's models in order, each call going to the first and moving to the
//! next when one fails in a way another provider may not (a timeout, a connection failure, a
//! 5xx, a 429, after the model's own retries); a request a model refused (400, 401, 403, 404,
//! 422: a bad request stays bad) is not tried elsewhere. Every call starts again at the first
//! model. A streamed call falls back only before its stream begins (text already sent cannot be
//! taken back). The entry that answered is in the reply's [`ReplyMeta::chain_model`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ModelError;
use futures_util::StreamExt;

use crate::model::{
    ChatModel, ChatRequest, DeltaStream, ModelDelta, ModelIdentity, ModelReply, ReplyMeta,
};

/// Told of each fallback: the model that failed, the one tried next, and why.
pub trait FallbackObserver: Send + Sync + std::fmt::Debug {
    fn fell_back(&self, from: &str, to: &str, reason: &ModelError);
}

/// The models of a chain, by name, first to last (see the module doc).
#[derive(Debug, Clone)]
pub struct ModelChain {
    models: Vec<(String, Arc<dyn ChatModel>)>,
    observer: Option<Arc<dyn FallbackObserver>>,
}

impl ModelChain {
    /// A chain of `models` (at least one).
    pub fn new(
        models: Vec<(String, Arc<dyn ChatModel>)>,
        observer: Option<Arc<dyn FallbackObserver>>,
    ) -> Self {
        Self { models, observer }
    }

    /// The models' names, first to last.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|(name, _)| name.as_str())
    }

    /// Each model of the chain, by name (its readiness checks).
    pub fn models(&self) -> impl Iterator<Item = (&str, &Arc<dyn ChatModel>)> {
        self.models
            .iter()
            .map(|(name, model)| (name.as_str(), model))
    }

    /// Whether a failure of one model sends the call to the next.
    pub fn falls_back(error: &ModelError) -> bool {
        matches!(
            error,
            ModelError::RateLimited { .. } | ModelError::Upstream { .. } | ModelError::Timeout(_)
        )
    }

    /// The next model after `index` when `error` allows it, telling the observer.
    fn next_after(&self, index: usize, error: &ModelError) -> bool {
        let Some((to, _)) = self.models.get(index + 1) else {
            return false;
        };
        if !Self::falls_back(error) {
            return false;
        }
        if let Some(observer) = &self.observer {
            observer.fell_back(&self.models[index].0, to, error);
        }
        tracing::warn!(from = %self.models[index].0, to = %to, %error, "a model failed; trying the next of the chain");
        true
    }
}

#[async_trait]
impl ChatModel for ModelChain {
    fn identity(&self) -> ModelIdentity {
        self.models
            .first()
            .map(|(_, model)| model.identity())
            .unwrap_or_else(|| ModelIdentity {
                provider: "unknown",
                model: "unknown".to_owned(),
                server_address: None,
                server_port: None,
            })
    }

    /// Up while any of its models is; else the last one's failure.
    async fn check(&self) -> Result<(), ModelError> {
        let mut last = Ok(());
        for (_, model) in &self.models {
            last = model.check().await;
            if last.is_ok() {
                return last;
            }
        }
        last
    }

    async fn complete(&self, request: ChatRequest<'_>) -> Result<ModelReply, ModelError> {
        let mut index = 0;
        loop {
            let Some((_, model)) = self.models.get(index) else {
                return Err(ModelError::Unusable(
                    "a model chain with no model".to_owned(),
                ));
            };
            match model.complete(request).await {
                Ok(mut reply) => {
                    reply.meta.chain_model = Some(self.models[index].0.clone());
                    return Ok(reply);
                }
                Err(error) if self.next_after(index, &error) => index += 1,
                Err(error) => return Err(error),
            }
        }
    }

    async fn stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, ModelError> {
        let mut index = 0;
        loop {
            let Some((_, model)) = self.models.get(index) else {
                return Err(ModelError::Unusable(
                    "a model chain with no model".to_owned(),
                ));
            };
            match model.stream(request).await {
                Ok(deltas) => {
                    // Which entry answers is known before its first delta.
                    let answered = ModelDelta::Meta(ReplyMeta {
                        chain_model: Some(self.models[index].0.clone()),
                        ..ReplyMeta::default()
                    });
                    return Ok(Box::pin(
                        futures_util::stream::once(async { Ok(answered) }).chain(deltas),
                    ));
                }
                Err(error) if self.next_after(index, &error) => index += 1,
                Err(error) => return Err(error),
            }
        }
    }
}
