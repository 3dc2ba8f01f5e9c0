//! TLS client settings shared by IMAP and SMTP: verified rustls configs only (system roots
//! plus an optional extra CA file); there is no way to turn verification off.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

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
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_ca_file_is_trusted_and_a_file_without_one_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        assert!(client_config(Some(&dir.join("tls/ca.pem"))).is_ok());
        let err = client_config(Some(&dir.join("config/bad-config.toml")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("holds no usable PEM certificate"), "{err}");
        let err = client_config(Some(&dir.join("tls/missing.pem")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("cannot read CA file"), "{err}");
    }
}
