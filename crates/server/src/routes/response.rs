//! The OpenAI answer to a request: one JSON when it has finished, or server-sent event chunks as
//! the worker's events arrive.

use super::{json, CancelOnDrop, Kind};
use crate::api::*;
use crate::error::ApiError;
use crate::worker::{Event, Finished};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::mpsc::UnboundedReceiver;

pub(super) struct Meta {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) kind: Kind,
    pub(super) prompt_tokens: usize,
    /// The model has no tokenizer: completions carry `token_ids` (and empty text).
    pub(super) token_ids: bool,
}

fn with_decode(mut info: MinferenceInfo, f: &Finished) -> MinferenceInfo {
    info.decode_tokens_per_second = f.decode_tokens_per_second;
    info
}

impl Meta {
    fn usage(&self, f: &Finished) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: f.completion_tokens,
            total_tokens: self.prompt_tokens + f.completion_tokens,
        }
    }

    /// The whole answer: its text, or (for a model without a tokenizer) its token ids.
    pub(super) fn full(&self, content: String, ids: Vec<u32>, f: Finished, info: MinferenceInfo) -> Response {
        let usage = self.usage(&f);
        let minference = with_decode(info, &f);
        match self.kind {
            Kind::Chat => json(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage { role: "assistant", content },
                    logprobs: None,
                    finish_reason: f.finish_reason,
                }],
                usage,
                minference,
            })
            .into_response(),
            Kind::Text => {
                json(self.text_completion(content, ids, Some(f.finish_reason), Some(usage), Some(minference)))
                    .into_response()
            }
        }
    }

    /// One streamed chunk: a text piece (or token ids), or (with `finish`) the last one.
    fn chunk(
        &self,
        delta: Delta,
        ids: Vec<u32>,
        finish: Option<&'static str>,
        usage: Option<Usage>,
        info: Option<MinferenceInfo>,
    ) -> String {
        let json = match self.kind {
            Kind::Chat => serde_json::to_string(&self.chat_chunk(
                vec![ChatChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }],
                usage,
                info,
            )),
            Kind::Text => serde_json::to_string(&self.text_completion(
                delta.content.unwrap_or_default(),
                ids,
                finish,
                usage,
                info,
            )),
        };
        json.unwrap_or_default()
    }

    /// A text completion, whole or one streamed piece of it (`finish_reason` null until the last).
    fn text_completion(
        &self,
        text: String,
        ids: Vec<u32>,
        finish_reason: Option<&'static str>,
        usage: Option<Usage>,
        minference: Option<MinferenceInfo>,
    ) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                token_ids: self.token_ids.then_some(ids),
                logprobs: None,
                finish_reason,
            }],
            usage,
            minference,
        }
    }

    /// A chat stream chunk; no `choices` in the usage-only chunk.
    fn chat_chunk(
        &self,
        choices: Vec<ChatChunkChoice>,
        usage: Option<Usage>,
        minference: Option<MinferenceInfo>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            minference,
        }
    }
}

struct StreamState {
    meta: Meta,
    info: Option<MinferenceInfo>,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<SseEvent>,
    done: bool,
    include_usage: bool,
    _guard: CancelOnDrop,
}

fn text_delta(t: String) -> Delta {
    Delta { role: None, content: Some(t) }
}

/// `data: {chunk}` events then `data: [DONE]`. Dropping the stream (client gone) cancels the job.
pub(super) fn stream_response(
    meta: Meta,
    info: MinferenceInfo,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Response {
    let mut pending = VecDeque::new();
    if meta.kind == Kind::Chat {
        let first = Delta { role: Some("assistant"), content: Some(String::new()) };
        pending.push_back(SseEvent::default().data(meta.chunk(first, Vec::new(), None, None, None)));
    }
    let state = StreamState { meta, info: Some(info), rx, pending, done: false, include_usage, _guard: guard };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text(t)) => {
                    let data = st.meta.chunk(text_delta(t), Vec::new(), None, None, None);
                    st.pending.push_back(SseEvent::default().data(data));
                }
                Some(Event::Token(id)) => {
                    let data = st.meta.chunk(text_delta(String::new()), vec![id], None, None, None);
                    st.pending.push_back(SseEvent::default().data(data));
                }
                Some(Event::Done(f)) => {
                    let usage = st.meta.usage(&f);
                    let info = st.info.take().map(|i| with_decode(i, &f));
                    let last = st.meta.chunk(Delta::default(), Vec::new(), Some(f.finish_reason), Some(usage), info);
                    st.pending.push_back(SseEvent::default().data(last));
                    if st.include_usage && st.meta.kind == Kind::Chat {
                        let chunk = st.meta.chat_chunk(Vec::new(), Some(usage), None);
                        st.pending
                            .push_back(SseEvent::default().data(serde_json::to_string(&chunk).unwrap_or_default()));
                    }
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Failed(e)) => {
                    let body = serde_json::to_string(&e.body()).unwrap_or_default();
                    st.pending.push_back(SseEvent::default().data(body));
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Started(_)) => {}
                None => {
                    let e = ApiError::unavailable("the request was dropped by the engine worker");
                    st.pending
                        .push_back(SseEvent::default().data(serde_json::to_string(&e.body()).unwrap_or_default()));
                    st.done = true;
                }
            }
        }
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    *resp.status_mut() = StatusCode::OK;
    resp
}
