//! The ticket registry from an HTTP JSON lookup (issue #17): one GET per ticket on a URL
//! template (`https://crm.example/api/tickets/{ticket}`, the number percent-encoded), fields
//! read with JSON pointers (RFC 6901). 200 with the fields = known, 404 = unknown (both
//! cached for `cache_seconds`), anything else (another status, a broken answer, no answer
//! within `timeout_seconds`, a TLS failure) = unavailable, not cached. TLS is verified
//! against the system roots plus an optional `ca_file` (src/tls.rs); a bearer token, when
//! configured, is sent and never logged. A batch's lookups run a few at a time.
//!
//! Not here: the config's parsing (`config`), the facts from an answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Answers, Lookup, TicketRecord, ticket_key};
use crate::secret::Secret;

/// `[registry] http = URL-TEMPLATE` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `https://crm.example/api/tickets/{ticket}` (`http://` only for loopback).
    pub template: String,
    /// The longest one lookup may take, connecting included.
    pub timeout: Duration,
    /// How long a known or unknown answer is reused (zero: not cached).
    pub cache: Duration,
    /// JSON pointer of the creation time (RFC 3339 text, or epoch seconds).
    pub created_pointer: String,
    pub requester_pointer: Option<String>,
    pub state_pointer: Option<String>,
    /// Extra CA certificate (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer ...`.
    pub token: Option<Secret>,
}

/// Lookups of one batch in flight at once.
const CONCURRENCY: usize = 4;
/// The largest answer read; a bigger one is unavailable.
const MAX_BODY: usize = 1 << 20;

/// What is escaped of a ticket number in the URL: all but RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An HTTP JSON service as a registry; shared by every desk.
#[derive(Debug)]
pub struct HttpRegistry {
    config: HttpConfig,
    /// The TLS settings, built once (or why they cannot be).
    tls: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl HttpRegistry {
    pub fn new(config: HttpConfig) -> HttpRegistry {
        HttpRegistry {
            config,
            tls: std::sync::OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The URL template, as logs show it.
    pub fn template(&self) -> &str {
        &self.config.template
    }

    /// The URL for ticket `key`.
    pub fn url(&self, key: &str) -> String {
        let encoded = utf8_percent_encode(key, UNRESERVED).to_string();
        self.config.template.replace("{ticket}", &encoded)
    }

    /// The answers for `numbers`: cached ones, the others asked a few at a time.
    pub async fn lookup(&self, numbers: &[&str]) -> Answers {
        let mut keys: Vec<String> = numbers.iter().map(|n| ticket_key(n)).collect();
        keys.sort();
        keys.dedup();
        let now = Instant::now();
        let mut answers = Answers::new();
        let mut ask = Vec::new();
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.config.cache);
            for k in keys {
                match cache.get(&k) {
                    Some((_, answer)) => {
                        answers.insert(k, answer.clone());
                    }
                    None => ask.push(k),
                }
            }
        } else {
            ask = keys;
        }
        let asked: Vec<(String, Lookup)> = futures_util::stream::iter(ask)
            .map(|k| async move {
                let answer = self.get(&k).await;
                (k, answer)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        if let Ok(mut cache) = self.cache.lock()
            && !self.config.cache.is_zero()
        {
            let at = Instant::now();
            for (k, a) in asked
                .iter()
                .filter(|(_, a)| !matches!(a, Lookup::Unavailable(_)))
            {
                cache.insert(k.clone(), (at, a.clone()));
            }
        }
        answers.extend(asked);
        answers
    }

    /// One ticket's answer, within the timeout.
    pub async fn get(&self, key: &str) -> Lookup {
        let url = self.url(key);
        match tokio::time::timeout(self.config.timeout, self.fetch(&url)).await {
            Ok(Ok(answer)) => answer,
            // The template, not the URL: one reason for every ticket of a failing service,
            // so that it is logged once.
            Ok(Err(why)) => Lookup::Unavailable(format!("GET {}: {why}", self.config.template)),
            Err(_) => Lookup::Unavailable(format!(
                "GET {}: no answer within {:?}",
                self.config.template, self.config.timeout
            )),
        }
    }

    /// GET `url` and read its answer (no timeout here).
    async fn fetch(&self, url: &str) -> Result<Lookup, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let host = parsed.host_str().ok_or("no host")?.to_string();
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let response = if parsed.scheme() == "https" {
            let tls = self
                .tls
                .get_or_init(|| {
                    crate::tls::client_config(self.config.ca_file.as_deref())
                        .map_err(|e| e.to_string())
                })
                .clone()?;
            let name = rustls_pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            self.exchange(stream, &authority, &path).await?
        } else {
            self.exchange(tcp, &authority, &path).await?
        };
        let status = response.status();
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(Lookup::Unknown);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        self.record(&json).map(Lookup::Known)
    }

    /// One request on a new connection.
    async fn exchange<S>(
        &self,
        stream: S,
        authority: &str,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        // Drives the connection until the answer is read (it ends with the sender); bounded,
        // so that a server that never answers holds no socket after the lookup gave up.
        tokio::spawn(tokio::time::timeout(
            self.config.timeout.saturating_mul(2),
            connection,
        ));
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("ticketgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.config.token {
            let mut value =
                hyper::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| "the token is not a valid header value".to_string())?;
            value.set_sensitive(true);
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    }

    /// The record in a 200 answer's JSON.
    fn record(&self, json: &serde_json::Value) -> Result<TicketRecord, String> {
        let text = |pointer: &Option<String>| {
            pointer
                .as_deref()
                .and_then(|p| json.pointer(p))
                .and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s.trim().to_string()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
        };
        let p = &self.config.created_pointer;
        let created = match json.pointer(p) {
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f.floor() as i64))
                .ok_or_else(|| format!("{p}: {n} is not epoch seconds"))?,
            Some(serde_json::Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(secs) => secs,
                Err(_) => s
                    .trim()
                    .parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .map_err(|e| format!("{p}: `{s}` is not an RFC 3339 time: {e}"))?,
            },
            Some(other) => return Err(format!("{p}: {other} is not a time")),
            None => return Err(format!("the answer has no {p}")),
        };
        Ok(TicketRecord {
            created,
            requester: text(&self.config.requester_pointer),
            state: text(&self.config.state_pointer),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A CRM on loopback: `/t/2024-1234567` known, `/t/2024-500` fails, `/t/2024-SLOW`
    /// never answers, `/t/2024-BAD` answers JSON without the creation time, others 404.
    /// Counts requests; keeps each request's head.
    struct Crm {
        port: u16,
        requests: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn crm() -> Crm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (r, h) = (Arc::clone(&requests), Arc::clone(&heads));
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (r, h) = (Arc::clone(&r), Arc::clone(&h));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    r.fetch_add(1, Ordering::SeqCst);
                    h.lock().unwrap().push(head.clone());
                    let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                    let (status, body) = match target.as_str() {
                        "/t/2024-1234567" => (
                            "200 OK",
                            r#"{"ticket":{"created_at":"2024-11-28T10:15:00+05:30","requester":{"email":"meena@rites.co.in"},"state":"Open"}}"#,
                        ),
                        "/t/2024-EPOCH%2F1" => {
                            ("200 OK", r#"{"ticket":{"created_at":1732769100}}"#)
                        }
                        "/t/2024-500" => ("500 Internal Server Error", "{}"),
                        "/t/2024-BAD" => ("200 OK", r#"{"ticket":{}}"#),
                        "/t/2024-SLOW" => {
                            // Hold the connection open without answering.
                            std::future::pending::<()>().await;
                            return;
                        }
                        _ => ("404 Not Found", r#"{"error":"not found"}"#),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Crm {
            port,
            requests,
            heads,
            task,
        }
    }

    fn registry(port: u16) -> HttpRegistry {
        HttpRegistry::new(HttpConfig {
            template: format!("http://127.0.0.1:{port}/t/{{ticket}}"),
            timeout: Duration::from_millis(500),
            cache: Duration::from_secs(300),
            created_pointer: "/ticket/created_at".into(),
            requester_pointer: Some("/ticket/requester/email".into()),
            state_pointer: Some("/ticket/state".into()),
            ca_file: None,
            token: Some(Secret::new("tok-8f2e")),
        })
    }

    #[tokio::test]
    async fn known_unknown_failing_and_slow_tickets() {
        let crm = crm().await;
        let r = registry(crm.port);
        let started = Instant::now();
        let a = r
            .lookup(&[
                "2024-1234567",
                "2024-7654321",
                "2024-500",
                "2024-slow",
                "2024-bad",
                "2024-epoch/1",
            ])
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "concurrent, bounded"
        );
        assert_eq!(
            a["2024-1234567"],
            Lookup::Known(TicketRecord {
                created: 1_732_769_100,
                requester: Some("meena@rites.co.in".into()),
                state: Some("Open".into()),
            })
        );
        assert_eq!(a["2024-7654321"], Lookup::Unknown);
        let why = |k: &str| match &a[k] {
            Lookup::Unavailable(why) => why.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert!(
            why("2024-500").ends_with("HTTP 500 Internal Server Error"),
            "{}",
            why("2024-500")
        );
        assert!(
            why("2024-SLOW").contains("no answer within 500ms"),
            "{}",
            why("2024-SLOW")
        );
        assert!(
            why("2024-BAD").contains("has no /ticket/created_at"),
            "{}",
            why("2024-BAD")
        );
        let Lookup::Known(t) = &a["2024-EPOCH/1"] else {
            panic!("the number is percent-encoded into the path")
        };
        assert_eq!((t.created, t.requester.as_deref()), (1_732_769_100, None));
        assert!(!why("2024-500").contains("tok-8f2e"));
        let heads = crm.heads.lock().unwrap().clone();
        assert!(
            heads
                .iter()
                .all(|h| h.contains("authorization: Bearer tok-8f2e\r\n")),
            "{heads:?}"
        );
        crm.task.abort();
    }

    #[tokio::test]
    async fn known_and_unknown_are_cached_unavailable_is_asked_again() {
        let crm = crm().await;
        let r = registry(crm.port);
        let numbers = ["2024-1234567", "2024-7654321", "2024-500"];
        r.lookup(&numbers).await;
        assert_eq!(crm.requests.load(Ordering::SeqCst), 3);
        let again = r.lookup(&numbers).await;
        assert_eq!(
            crm.requests.load(Ordering::SeqCst),
            4,
            "only the failed one"
        );
        assert!(matches!(again["2024-1234567"], Lookup::Known(_)));
        assert_eq!(again["2024-7654321"], Lookup::Unknown);
        // Without a cache, every lookup asks.
        let mut uncached = registry(crm.port);
        uncached.config.cache = Duration::ZERO;
        uncached.lookup(&["2024-1234567"]).await;
        uncached.lookup(&["2024-1234567"]).await;
        assert_eq!(crm.requests.load(Ordering::SeqCst), 6);
        crm.task.abort();
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let a = registry(port).lookup(&["2024-1234567"]).await;
        let Lookup::Unavailable(why) = &a["2024-1234567"] else {
            panic!("{a:?}")
        };
        assert!(why.contains("cannot connect"), "{why}");
    }
}
