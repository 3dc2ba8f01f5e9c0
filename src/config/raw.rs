//! The serde shapes of config.toml's sections as written ([imap]/[smtp], [helpdesk],
//! [state], [logging], [rules], [metrics], [desk.NAME]) and their defaults.
//!
//! Not here: the top-level table and the checks that turn these into a [`super::Config`]
//! (`config.rs`), server and desk-secret checks (`servers.rs`, `desks.rs`).

use std::path::PathBuf;

use serde::Deserialize;

use super::LogFormat;
use crate::tls::Security;
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    #[serde(default = "default_security")]
    pub(super) security: Security,
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub(super) timeout_seconds: u64,
    pub(super) idle_refresh_minutes: Option<u64>,
    pub(super) poll_seconds: Option<u64>,
    pub(super) batch_size: Option<usize>,
    pub(super) file_group: Option<usize>,
    pub(super) connections: Option<usize>,
}

fn default_security() -> Security {
    Security::Tls
}
fn default_timeout() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHelpdesk {
    pub(super) address: String,
    pub(super) name: Option<String>,
    /// How citizens reach the helpdesk, for templates (`{helpdesk_phone}`, `{helpdesk_web}`).
    pub(super) phone: Option<String>,
    pub(super) web: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) database: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    #[serde(default = "default_level")]
    pub(super) level: String,
    #[serde(default = "default_format")]
    pub(super) format: LogFormat,
}

pub(super) fn default_level() -> String {
    "info".into()
}
fn default_format() -> LogFormat {
    LogFormat::Auto
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRules {
    pub(super) files: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDesk {
    pub(super) address: String,
    pub(super) name: Option<String>,
    pub(super) login: String,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_credential: Option<String>,
    #[serde(default = "default_mailbox")]
    pub(super) mailbox: String,
}

fn default_mailbox() -> String {
    "INBOX".into()
}
