//! TLS for the SMTP transport: the implicit-TLS stream lettre takes ([`TlsTcp`]) and
//! lettre's STARTTLS settings ([`tls_parameters`]). Connecting and sending are `smtp.rs`'s;
//! the TLS client configuration shared with IMAP is `crate::tls`'s.

use std::pin::Pin;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::{AsyncTokioStream, Certificate, TlsParameters};
use tokio::net::TcpStream;

use super::SmtpError;
use crate::config::Server;

/// An implicit-TLS stream, as lettre takes it.
pub(super) struct TlsTcp(pub(super) Box<tokio_rustls::client::TlsStream<TcpStream>>);

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// lettre's TLS settings for STARTTLS: the system roots plus the configured CA file.
pub(super) fn tls_parameters(server: &Server) -> Result<TlsParameters, SmtpError> {
    let mut p = TlsParameters::builder(server.host.clone());
    if let Some(ca) = &server.ca_file {
        let pem = std::fs::read(ca).map_err(|e| SmtpError::CaFile {
            path: ca.display().to_string(),
            source: e,
        })?;
        p = p.add_root_certificate(Certificate::from_pem(&pem)?);
    }
    Ok(p.build_rustls()?)
}
