//! A request body read and checked against the server's limits, and tokenized for the worker.

use crate::api::{Sampling, Stop};
use crate::error::ApiError;
use crate::AppState;
use axum::body::{to_bytes, Body};
use minference_engine::{GenerateOptions, Sampler};
use serde::de::DeserializeOwned;

/// The body as `T`: too large → 413, not JSON → 400 `invalid_json`, wrong shape → 400.
pub(super) async fn read_json<T: DeserializeOwned>(s: &AppState, body: Body) -> Result<T, ApiError> {
    let bytes = to_bytes(body, s.cfg.body_limit).await.map_err(|_| ApiError::body_too_large(s.cfg.body_limit))?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_body(format!("invalid request: {e}")),
        _ => ApiError::malformed_json(format!("the body is not valid JSON: {e}")),
    })
}

/// A prompt as the client sent it: text (through the tokenizer) or token ids.
#[derive(Clone, Copy)]
pub(super) enum PromptInput<'a> {
    Text(&'a str),
    Ids(&'a [i64]),
}

/// Token ids checked against the vocabulary (400 naming the first id outside it).
fn checked_ids(ids: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| match u32::try_from(id) {
            Ok(t) if (t as usize) < vocab => Ok(t),
            _ => Err(ApiError::bad_param(
                "prompt",
                format!("token id {id} at position {i} is outside the vocabulary (ids are 0 to {})", vocab - 1),
            )),
        })
        .collect()
}

/// A request checked and tokenized, ready for the worker.
pub(super) struct Prepared {
    pub(super) prompt: Vec<u32>,
    pub(super) opts: GenerateOptions,
    pub(super) stops: Vec<String>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
}

pub(super) fn prepare(
    s: &AppState,
    model: &str,
    input: PromptInput<'_>,
    p: &Sampling,
    seed_salt: u64,
) -> Result<Prepared, ApiError> {
    if model != s.cfg.model_id {
        return Err(ApiError::unknown_model(model, &s.cfg.model_id));
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_param("n", "only n = 1 is supported"));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_param("temperature", format!("temperature must be in [0, 2], got {temperature}")));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_param("top_p", format!("top_p must be in (0, 1], got {top_p}")));
    }
    let cap = s.cfg.max_tokens_cap;
    let requested = p.max_completion_tokens.or(p.max_tokens);
    match requested {
        Some(0) => return Err(ApiError::bad_param("max_tokens", "max_tokens must be at least 1")),
        Some(n) if n > cap as u64 => {
            return Err(ApiError::bad_param(
                "max_tokens",
                format!("max_tokens must be at most {cap} (--max-tokens-cap)"),
            ))
        }
        _ => {}
    }
    let stops = match &p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stops.len() > 4 || stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_param("stop", "stop takes up to 4 non-empty strings"));
    }
    let tokenizer = s.model.tokenizer();
    if tokenizer.is_none() && !stops.is_empty() {
        // The answer is token ids: there is no text to find a stop string in.
        return Err(ApiError::bad_param(
            "stop",
            format!("the model `{}` has no tokenizer, so stop strings cannot be matched", s.cfg.model_id),
        ));
    }
    let prompt = match (input, tokenizer) {
        (PromptInput::Ids(ids), _) => checked_ids(ids, s.model.config().vocab)?,
        (PromptInput::Text(text), Some(t)) => {
            t.encode_prompt(text).map_err(|e| ApiError::bad_param("prompt", e.to_string()))?
        }
        (PromptInput::Text(_), None) => return Err(ApiError::no_tokenizer("prompt", &s.cfg.model_id)),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let context = s.model.config().context_length;
    let room = if s.cfg.allow_context_extension {
        usize::MAX
    } else {
        if prompt.len() >= context {
            return Err(ApiError::context_length(prompt.len(), context));
        }
        context - prompt.len()
    };
    let max_new_tokens = requested.map_or(cap, |n| n as usize).min(room);
    let sampler = if temperature == 0.0 {
        Sampler::greedy()
    } else {
        let seed =
            p.seed.map_or_else(|| crate::unix_now().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed_salt, |v| v as u64);
        Sampler::new(temperature as f32, top_p as f32, seed)
    };
    Ok(Prepared {
        prompt,
        opts: GenerateOptions {
            max_new_tokens,
            sampler,
            stop_tokens: tokenizer.map(|t| t.stop_tokens.clone()).unwrap_or_default(),
        },
        stops,
        stream: p.stream.unwrap_or(false),
        include_usage: p.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
}
