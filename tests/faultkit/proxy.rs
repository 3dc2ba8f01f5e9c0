//! A plain-IMAP proxy between the daemon and the stack's Dovecot that injects faults, for
//! what a well-behaved server will not do on request: answer NO or BAD to a command, cut
//! the connection in the middle of a literal, or announce other capabilities or flags.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// What to break, and how many times (each fault fires on its first `times` chances).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer `<tag> <answer>` instead of passing on a client command containing `command`.
    Answer {
        command: &'static str,
        answer: &'static str,
    },
    /// Forward server data up to `marker` (inside a mail body literal), then close.
    CutBefore { marker: &'static str },
    /// Replace `from` by `to` in what the server sends (each read on its own; meant for
    /// short status lines such as `[PERMANENTFLAGS (...)]`), every time.
    Rewrite {
        from: &'static str,
        to: &'static str,
    },
}

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    /// How many times a fault fired.
    pub fired: Arc<AtomicUsize>,
}

/// Starts the proxy to 127.0.0.1:`upstream`; `fault` fires on its first `times` chances.
pub async fn start(upstream: u16, fault: Fault, times: usize) -> Proxy {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            tokio::spawn(relay(client, server, fault.clone(), times, Arc::clone(&f)));
        }
    });
    Proxy { port, fired }
}

fn take(fired: &AtomicUsize, times: usize) -> bool {
    fired
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < times).then_some(n + 1)
        })
        .is_ok()
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    times: usize,
    fired: Arc<AtomicUsize>,
) {
    let (client_r, client_w) = client.into_split();
    let (server_r, mut server_w) = server.into_split();
    let client_w = Arc::new(Mutex::new(client_w));
    let to_client = Arc::clone(&client_w);
    let cut = match &fault {
        Fault::CutBefore { marker } => Some(*marker),
        Fault::Answer { .. } | Fault::Rewrite { .. } => None,
    };
    let rewrite = match &fault {
        Fault::Rewrite { from, to } => Some((*from, *to)),
        _ => None,
    };
    let f2 = Arc::clone(&fired);
    let down = tokio::spawn(async move {
        let mut server_r = server_r;
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match server_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(marker) = cut {
                // The marker may straddle two reads: look in the last bytes too.
                let mut window = tail.clone();
                window.extend_from_slice(chunk);
                if let Some(at) = find(&window, marker.as_bytes())
                    && take(&f2, times)
                {
                    let keep = at.saturating_sub(tail.len());
                    let mut w = to_client.lock().await;
                    let _ = w.write_all(&chunk[..keep]).await;
                    let _ = w.shutdown().await;
                    return;
                }
                tail = window[window.len().saturating_sub(marker.len())..].to_vec();
            }
            let rewritten;
            let chunk = match rewrite {
                Some((from, to)) if find(chunk, from.as_bytes()).is_some() => {
                    f2.fetch_add(1, Ordering::SeqCst);
                    rewritten = String::from_utf8_lossy(chunk)
                        .replace(from, to)
                        .into_bytes();
                    &rewritten[..]
                }
                _ => chunk,
            };
            if to_client.lock().await.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = to_client.lock().await.shutdown().await;
    });
    let mut lines = BufReader::new(client_r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Fault::Answer { command, answer } = &fault {
            let text = String::from_utf8_lossy(&line).to_string();
            if text
                .to_ascii_uppercase()
                .contains(&command.to_ascii_uppercase())
                && take(&fired, times)
            {
                let tag = text.split_whitespace().next().unwrap_or("*").to_string();
                let mut w = client_w.lock().await;
                if w.write_all(format!("{tag} {answer}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        }
        if server_w.write_all(&line).await.is_err() {
            break;
        }
    }
    let _ = server_w.shutdown().await;
    down.abort();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
