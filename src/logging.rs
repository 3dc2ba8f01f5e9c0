//! Where log records go and at which level: `init_logging` sets up tracing as config.toml's
//! `[logging]` says (journald's native protocol under systemd, JSON, or plain lines), and
//! [`set_level`] changes the level on reload. The journald protocol itself is `journald`'s.

use crate::config::{LogFormat, Logging};

/// Swaps the log filter when config.toml's `[logging] level` changes on reload.
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    EnvFilter::try_new(format!("ticketgate={level},warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logging as config.toml says; `RUST_LOG`, when set, wins over `[logging] level`.
pub fn init_logging(l: &Logging) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, reload};
    let from_env = EnvFilter::try_from_env("RUST_LOG").ok();
    let fixed = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| log_filter(&l.level)));
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    type Filtered = tracing_subscriber::layer::Layered<
        reload::Layer<EnvFilter, tracing_subscriber::Registry>,
        tracing_subscriber::Registry,
    >;
    // Under systemd with `format = "auto"`: records go to the journal's socket with their
    // fields (DESK=, UID=, ACTIONS=, RULES=...), so `journalctl -u ticketgate DESK=bid-ra`
    // selects them. Without a reachable journal socket, one line per event on stderr with a
    // syslog priority prefix.
    let journal = match l.format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => {
            crate::journald::JournalLayer::connect(crate::journald::SOCKET).ok()
        }
        _ => None,
    };
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match (l.format, journal) {
        (LogFormat::Auto, Some(journal)) => journal.boxed(),
        (LogFormat::Json, _) => fmt.json().flatten_event(true).boxed(),
        (LogFormat::Auto, None) if under_systemd => fmt.event_format(Journald).boxed(),
        (LogFormat::Auto | LogFormat::Text, _) => fmt.boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
        && !fixed
    {
        let _ = LOG_FILTER.set(handle);
    }
}

/// One line per event for journald: `<priority>` (sd-daemon(3) prefix, so journalctl shows
/// the right level), no timestamp (the journal has its own), no colours, the fields.
struct Journald;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Sets the log level (`[logging] level` after a reload), unless `RUST_LOG` fixed it at
/// start or logging was never set up.
pub fn set_level(level: &str) {
    if let Some(handle) = LOG_FILTER.get() {
        let _ = handle.reload(log_filter(level));
    }
}
