//! The connection under a desk's IMAP session: TCP, TLS or STARTTLS (rustls), the greeting,
//! LOGIN and the capabilities the session relies on (IDLE, MOVE, UIDPLUS).
//!
//! Not here: commands on the selected mailbox (`commands.rs`), folders (`folders.rs`),
//! waiting for mail (`idle.rs`), the session type and its errors (`imap.rs`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::Client;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Capabilities, DeskSession, Endpoint, ImapError, proto, timed};
use crate::tls::Security;

/// TCP or TLS, as one stream type for async-imap.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
impl DeskSession {
    /// Connects, secures the connection as configured, logs in. The password is only sent
    /// over TLS, or in plain to a loopback host when the config says so.
    pub async fn connect(
        ep: &Endpoint,
        login: &str,
        password: &str,
    ) -> Result<DeskSession, ImapError> {
        if ep.security == Security::Plain && !crate::config::is_loopback(&ep.host) {
            return Err(ImapError::PlainRefused(ep.host.clone()));
        }
        let t = ep.timeout;
        let tcp = timed(
            t,
            "connect",
            TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await?
        .map_err(|e| ImapError::Connect {
            host: ep.host.clone(),
            port: ep.port,
            source: e,
        })?;
        let _ = tcp.set_nodelay(true);
        let client = match ep.security {
            Security::Tls => {
                let tls = tls_wrap(ep, tcp).await?;
                let mut c = Client::new(Stream::Tls(Box::new(tls)));
                greeting(&mut c, t).await?;
                c
            }
            Security::StartTls => {
                let mut c = Client::new(Stream::Plain(tcp));
                greeting(&mut c, t).await?;
                timed(t, "STARTTLS", c.run_command_and_check_ok("STARTTLS", None))
                    .await?
                    .map_err(proto("start TLS"))?;
                let Stream::Plain(tcp) = c.into_inner() else {
                    return Err(ImapError::Closed("start TLS"));
                };
                Client::new(Stream::Tls(Box::new(tls_wrap(ep, tcp).await?)))
            }
            Security::Plain => {
                let mut c = Client::new(Stream::Plain(tcp));
                greeting(&mut c, t).await?;
                c
            }
        };
        let mut session = timed(t, "LOGIN", client.login(login, password))
            .await?
            .map_err(|(e, _)| ImapError::Login {
                login: login.to_string(),
                reason: e.to_string(),
            })?;
        let caps = timed(t, "CAPABILITY", session.capabilities())
            .await?
            .map_err(proto("read capabilities"))?;
        let caps = Capabilities {
            idle: caps.has_str("IDLE"),
            r#move: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        tracing::debug!(
            login,
            idle = caps.idle,
            r#move = caps.r#move,
            uidplus = caps.uidplus,
            "logged in"
        );
        Ok(DeskSession {
            session: Some(session),
            caps,
            timeout: t,
            mailbox: String::new(),
            folders: HashMap::new(),
            looked: HashMap::new(),
            keywords: true,
            warned_no_uidplus: false,
        })
    }
}
async fn greeting(c: &mut Client<Stream>, t: Duration) -> Result<(), ImapError> {
    match timed(t, "greeting", c.read_response()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Closed("read the greeting")),
        Err(e) => Err(ImapError::Protocol {
            op: "read the greeting",
            source: e.into(),
        }),
    }
}

async fn tls_wrap(ep: &Endpoint, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|_| ImapError::ServerName(ep.host.clone()))?;
    let connector = TlsConnector::from(Arc::clone(&ep.tls));
    timed(ep.timeout, "TLS handshake", connector.connect(name, tcp))
        .await?
        .map_err(|e| ImapError::Tls {
            host: ep.host.clone(),
            source: e,
        })
}
