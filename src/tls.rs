//! TLS settings shared by IMAP and SMTP (placeholder until the IMAP module lands).

/// How to secure a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Tls,
    StartTls,
    Plain,
}
