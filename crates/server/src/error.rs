//! Errors: [`ApiError`] is what a client sees (OpenAI's `{"error": {"message", "type", "code"}}`
//! with an HTTP status); [`ServerError`] is what starting the server can fail with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// A request's failure as the client sees it.
#[derive(Debug, Clone, Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`, ...
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
    /// Seconds for `Retry-After` (503 when the queue is full).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, code: Some(code), param: None, message: message.into(), retry_after: None }
    }

    /// A parameter with a bad value (400).
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_value", message)
        }
    }

    /// The body is not JSON (400).
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_json", message)
    }

    /// JSON of the wrong shape: a field of the wrong type, a missing field (400).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_body", message)
    }

    /// Text sent to a model without a tokenizer (400): it takes token ids only.
    pub fn no_tokenizer(param: &'static str, model: &str) -> Self {
        ApiError {
            param: Some(param),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "no_tokenizer",
                format!(
                    "The model `{model}` has no tokenizer (random weights), so it cannot read text: send the \
                     prompt as token ids to POST /v1/completions (\"prompt\": [1, 2, 3])"
                ),
            )
        }
    }

    pub fn unknown_model(model: &str, served: &str) -> Self {
        ApiError {
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("The model `{model}` does not exist; this server serves `{served}` (GET /v1/models)"),
            )
        }
    }

    pub fn context_length(prompt: usize, context: usize) -> Self {
        ApiError {
            param: Some("messages"),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                format!(
                    "This model's maximum context length is {context} tokens; the prompt has {prompt} tokens \
                     (and at least one token must be left for the answer)"
                ),
            )
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "Missing or incorrect API key: send `Authorization: Bearer <key>`",
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("The request body is larger than the server's limit of {limit} bytes"),
        )
    }

    pub fn queue_full(depth: usize) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "queue_full",
                format!("The server is busy ({depth} requests waiting); retry later"),
            )
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", format!("No route for {path}"))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed", "Method not allowed")
    }

    /// The engine ran out of memory for this request (the server keeps serving).
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "out_of_memory", message)
        }
    }

    pub fn engine(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "unavailable", message)
    }

    /// The body OpenAI's clients parse.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody { error: ErrorDetail { message: &self.message, kind: self.kind, param: self.param, code: self.code } }
    }

    /// How the engine's error reads to a client: bad input is the client's (400), memory is
    /// temporary (503), anything else is ours (500).
    pub fn from_engine(e: &minference_engine::EngineError) -> Self {
        use minference_engine::EngineError;
        use minference_model::ModelError;
        if e.is_out_of_memory() {
            return Self::out_of_memory(e.to_string());
        }
        match e {
            EngineError::Input(_) | EngineError::Model(ModelError::Input(_)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input", e.to_string())
            }
            _ => Self::engine(e.to_string()),
        }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("opening the engine: {0}")]
    Engine(String),
    #[error("the engine worker thread could not start: {0}")]
    Worker(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
