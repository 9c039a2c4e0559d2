//! The log subscriber (`LOG_LEVEL`, `LOG_FORMAT`) and, with the `otlp` feature, the trace
//! exporter beside it.

/// What [`init_logging`] started beside the log: the trace exporter (feature `otlp`), if the
/// `OTEL_*` variables asked for one.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans not yet sent; call it last, after the server has drained.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            crate::telemetry::shutdown(provider).await;
        }
    }
}

/// The installed log filter, replaced by a reload that names `log.level`.
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Puts `filter` in force for the log lines from now on (nothing happens before
/// [`init_logging`], as in tests).
pub(crate) fn set_log_filter(filter: tracing_subscriber::EnvFilter) {
    if let Some(handle) = LOG_FILTER.get() {
        let _ = handle.reload(filter);
    }
}

/// Installs the log subscriber: `LOG_LEVEL`'s filter (or the file's `log.level`, which a
/// reload replaces), text or JSON lines; and, with the `otlp`
/// feature and an OTLP endpoint in the environment, the span exporter (its spans filtered by
/// level `info`, whatever `LOG_LEVEL` says). Call it inside the runtime.
pub fn init_logging(config: &crate::config::Config) -> Result<Telemetry, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = match config.file()?.log.level {
        Some(level) => crate::config::log_filter(&level)?,
        None => tracing_subscriber::EnvFilter::try_new(&config.log_level)
            .map_err(|e| format!("LOG_LEVEL {:?}: {e}", config.log_level))?,
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = LOG_FILTER.set(handle);
    // Colour codes only for a person at a terminal: a file or a log collector would keep them
    // as text. `NO_COLOR` turns them off there too.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let lines = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let lines = match config.log_format {
        crate::config::LogFormat::Json => lines.json().flatten_event(true).boxed(),
        crate::config::LogFormat::Text => lines.boxed(),
    };
    #[cfg(feature = "otlp")]
    {
        let provider = crate::telemetry::provider()?;
        let spans = provider.as_ref().map(|provider| {
            crate::telemetry::layer(provider)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .with(spans)
            .try_init()
            .map_err(|e| e.to_string())?;
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        {
            eprintln!(
                "payments-server: OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no \
                 trace exporter (cargo feature `otlp`); spans are not exported"
            );
        }
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .try_init()
            .map_err(|e| e.to_string())?;
        Ok(Telemetry::default())
    }
}
