//! Logging set-up shared by every binary.

use tracing_subscriber::EnvFilter;

/// Where a binary's logs are read decides their format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, as CloudWatch Logs Insights reads them.
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

impl LogFormat {
    /// JSON inside Lambda (where `AWS_LAMBDA_FUNCTION_NAME` is set), text elsewhere.
    pub fn detect() -> Self {
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Installs the global `tracing` subscriber. The level comes from `RUST_LOG`
/// (default `info`). Calling it twice is harmless: the second call does nothing.
/// Inside Lambda it also turns on Sluice's metrics (`metrics`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match format {
        LogFormat::Json => {
            crate::metrics::enable();
            // `try_init`, so the `log` records of HTTP and TLS crates come too.
            tracing_subscriber::util::SubscriberInitExt::try_init(json_subscriber(
                std::io::stderr,
                filter,
            ))
            .map_err(|e| e.to_string())
        }
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
            .map_err(|e| e.to_string()),
    };
}

/// The JSON lines the functions log, written to `writer`: what the
/// dashboard's Logs Insights queries read (a test reads them so).
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish()
}
