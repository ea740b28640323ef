//! `dmoerm serve`: the arguments of [`dmoerm_serve`]'s server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dmoerm_serve::ServeConfig;

use crate::{load_model, seconds, CliError, DeviceArg, QuantizeArg};

/// Limits left out take [`ServeConfig::default`]'s values (shown in brackets).
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Bundle directory or packed file.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Quantise the backbone's large float matrices as the model loads.
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// Require `Authorization: Bearer <key>`, the key read from this environment variable.
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// The model name in vLLM-style responses [the bundle's file or directory name].
    #[arg(long)]
    model_name: Option<String>,
    /// How long the idle worker waits to fill a batch, in milliseconds [5].
    #[arg(long)]
    batch_window_ms: Option<u64>,
    /// Most conversations per batch [64].
    #[arg(long)]
    max_batch_inputs: Option<usize>,
    /// Most tokens per batch [16384].
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Most conversations queued or being scored; beyond: 429 [1024].
    #[arg(long)]
    queue_inputs: Option<usize>,
    /// Most conversations per request [256].
    #[arg(long)]
    max_inputs: Option<usize>,
    /// Most bytes of text per conversation [65536].
    #[arg(long)]
    max_input_bytes: Option<usize>,
    /// Most bytes per request body; beyond: 413 [8388608].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Seconds a request may take; beyond: 504 [60].
    #[arg(long)]
    timeout: Option<f64>,
}

pub(crate) fn serve(args: ServeArgs) -> Result<(), CliError> {
    let defaults = ServeConfig::default();
    let api_key = match &args.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            CliError::Usage(format!("--api-key-env {var}: the environment variable {var} is not set (or not UTF-8)"))
        })?),
        None => None,
    };
    let timeout = match args.timeout {
        Some(t) => seconds("--timeout", t)?,
        None => defaults.timeout,
    };
    let model_name = args.model_name.unwrap_or_else(|| {
        args.model.file_name().map_or_else(|| "dmoerm".into(), |n| n.to_string_lossy().into_owned())
    });
    let config = ServeConfig {
        model_name,
        batch_window: args.batch_window_ms.map_or(defaults.batch_window, Duration::from_millis),
        max_batch_inputs: args.max_batch_inputs.unwrap_or(defaults.max_batch_inputs),
        max_batch_tokens: args.max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
        queue_inputs: args.queue_inputs.unwrap_or(defaults.queue_inputs),
        max_inputs: args.max_inputs.unwrap_or(defaults.max_inputs),
        max_input_bytes: args.max_input_bytes.unwrap_or(defaults.max_input_bytes),
        max_body_bytes: args.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        timeout,
        api_key,
    };
    // refused before the model loads, which can take a while
    config.check().map_err(CliError::Usage)?;
    let model = load_model(&args.model, args.device, args.quantize)?;
    let path = args.model.display().to_string();
    dmoerm_serve::run(args.addr, model, config, |addr| {
        // one line that scripts wait for; stdout is a pipe there, so flush it
        println!("serving {path} on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })
    .map_err(|source| CliError::Io { path: args.addr.to_string(), source })
}
