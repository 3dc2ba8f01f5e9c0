//! TLS client settings shared by IMAP and SMTP: verified rustls configs only (system roots
//! plus an optional extra CA file); there is no way to turn verification off.

use std::path::Path;
use std::sync::Arc;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain connection upgraded with STARTTLS before login (143, 587).
    StartTls,
    /// No TLS: accepted by config only for loopback hosts.
    Plain,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {0} holds no usable PEM certificate")]
    NoCertificate(String),
    #[error("cannot build TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client config trusting the system roots and, if given, the certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| TlsError::CaFile {
            path: shown.clone(),
            source: e,
        })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::NoCertificate(shown));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
