//! The HTTP surface: routes, the API key, the body limit, metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dmoerm::RewardModel;
use subtle::ConstantTimeEq;

use crate::batcher::{BatchLimits, Batcher, Worker};
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::metrics::{self, Metrics};
use crate::state::{AppState, Shared};
use crate::{native, openrlhf, vllm};

/// The server's routes over `model`, and the worker thread that scores for them (join it once
/// the router is dropped: [`Worker::join`]). [`crate::serve`] is this plus a listener.
/// Settings under which some request could never be served are refused ([`ServeConfig::check`]).
pub fn router(model: Arc<RewardModel>, config: ServeConfig) -> Result<(Router, Worker), String> {
    config.check()?;
    let metrics = Arc::new(Metrics::default());
    let limits = BatchLimits {
        window: config.batch_window,
        max_inputs: config.max_batch_inputs,
        max_tokens: config.max_batch_tokens,
    };
    let (batcher, worker) = Batcher::start(model.clone(), limits, config.queue_inputs, metrics.clone());
    let body_limit = config.max_body_bytes;
    let state = Arc::new(AppState { model, config, batcher, metrics });
    let app = Router::new()
        .route("/v1/score", post(native::score))
        .route("/v1/rank", post(native::rank))
        .route("/get_reward", post(openrlhf::get_reward))
        .route("/classify", post(vllm::classify))
        .route("/pooling", post(vllm::pooling))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    Ok((app, worker))
}

async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return ServeError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

async fn observe(State(state): State<Shared>, route: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.observe_request(route, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.render(state.batcher.queued())).into_response()
}

async fn not_found() -> Response {
    let body = serde_json::json!({"error": {"message": "no such route", "type": "not_found_error", "code": 404}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
