//! # dmoerm-serve
//!
//! A reward server over one [`RewardModel`]: what `dmoerm serve` runs. It speaks three APIs,
//! so that tools which already call a reward server can call this one unchanged:
//!
//! | route | shape |
//! | --- | --- |
//! | `POST /v1/score` | `{"inputs": [{"prompt" or "messages", "response"}]}` → `{"scores": [Score]}`, each as `dmoerm score --json` prints it |
//! | `POST /v1/rank` | `{"prompt" or "messages", "candidates": [str]}` → `{"ranked": [Ranked]}`, best first |
//! | `POST /get_reward` | OpenRLHF's remote reward model (`--remote_rm_url`): `{"query": [str], "prompts": [str]}` → `{"rewards", "scores", "extra_logs"}` |
//! | `POST /classify`, `POST /pooling` | vLLM's: the router's task probabilities, and the reward |
//! | `GET /health`, `GET /metrics` | liveness, and Prometheus metrics |
//!
//! Scoring runs on one worker thread that owns the model ([`batcher`]): requests that arrive
//! while it is busy, or within a short window of each other, are scored as one batch, and each
//! caller gets its own results back. The queue is bounded (a full queue answers `429` with
//! `Retry-After`), and so are request bodies (`413`), inputs per request and input sizes
//! (`400`) and the time a request may take (`504`). Errors are JSON:
//! `{"error": {"message", "type", "code"}}`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use dmoerm::{DeviceChoice, RewardModel};
//! use dmoerm_serve::{serve, shutdown_signal, ServeConfig};
//!
//! let model = RewardModel::load("models/default/model.dmoerm", DeviceChoice::Cpu).expect("model");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, model, ServeConfig::default(), shutdown_signal()).await
//! # }
//! ```

pub mod batcher;
mod config;
mod error;
mod metrics;
mod native;
mod openrlhf;
mod routes;
mod state;
mod vllm;

use std::future::Future;
use std::sync::Arc;

use dmoerm::RewardModel;

pub use config::ServeConfig;
pub use error::ServeError;
pub use routes::router;

/// Serves `model` on `listener` until `shutdown` completes; then stops accepting connections,
/// finishes the requests in flight (their batches included) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: RewardModel,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, worker) = router(Arc::new(model), config).map_err(std::io::Error::other)?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    // Every handler has returned, and with it every sender of the queue: the worker drains and ends.
    tokio::task::spawn_blocking(move || worker.join()).await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Serves `model` on `addr` until SIGTERM or Ctrl-C, on a runtime of its own (what `dmoerm
/// serve` runs); `ready` is told the bound address (port 0 picks a free one) before the first
/// request is accepted.
pub fn run(
    addr: std::net::SocketAddr,
    model: RewardModel,
    config: ServeConfig,
    ready: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        ready(listener.local_addr()?);
        serve(listener, model, config, shutdown_signal()).await
    })
}

/// Completes on SIGTERM (what `kill`, systemd and Kubernetes send) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // if no handler can be installed, only SIGTERM stops the server
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
