//! What a request can fail with, and the HTTP answer to each.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed. Each becomes a status code and a JSON body
/// `{"error": {"message", "type", "code"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or breaks a limit (`400`).
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the size limit (`413`).
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// No valid bearer token (`401`).
    #[error("missing or wrong API key (Authorization: Bearer ...)")]
    Unauthorized,
    /// The queue is full (`429`, `Retry-After`).
    #[error("the server is busy: the queue is full; retry later")]
    Busy,
    /// The request took longer than the limit (`504`).
    #[error("the request took longer than {0:?}")]
    Timeout(Duration),
    /// The server is stopping (`503`).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The model rejected an input (`400`) or failed (`500`).
    #[error(transparent)]
    Model(#[from] dmoerm::Error),
}

impl ServeError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Model(dmoerm::Error::Input(_) | dmoerm::Error::Tokenizer(_)) => StatusCode::BAD_REQUEST,
            Self::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::TooLarge(_) => "invalid_request_error",
            Self::Unauthorized => "authentication_error",
            Self::Busy => "rate_limit_error",
            Self::Timeout(_) | Self::ShuttingDown => "unavailable_error",
            Self::Model(_) if self.status() == StatusCode::BAD_REQUEST => "invalid_request_error",
            Self::Model(_) => "model_error",
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": {"message": self.to_string(), "type": self.kind(), "code": status.as_u16()}});
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            Self::Busy => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
