//! Helpers of the fault-tolerance tests (tests/faults.rs, tests/crash.rs, tests/badinput.rs)
//! on top of `support`: a deployment of the seven desks on a test stack, the daemon as a
//! child process with its log in a file, and the whole state of the mail system as a user
//! sees it (every folder of every account, each mail's Message-ID and keywords).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use futures_util::TryStreamExt;

pub mod proxy;

pub use crate::support::Daemon;
use crate::support::{DESKS, MailStack, PASSWORD, StoredMail, WAIT};

/// A deployment whose desks reach Dovecot through a fault-injecting proxy, which answers
/// `fault` on its first `times` chances; plain IMAP (allowed on loopback), so that the
/// proxy can read the commands.
pub async fn deployment_behind_proxy(
    stack: &MailStack,
    dir: &Path,
    fault: proxy::Fault,
    times: usize,
) -> (proxy::Proxy, PathBuf) {
    let proxy = proxy::start(stack.imap_port, fault, times).await;
    let config = deployment_on(stack, proxy.port, dir, "", "", None);
    let text = std::fs::read_to_string(&config).expect("config").replacen(
        "security = \"starttls\"",
        "security = \"plain\"",
        1,
    );
    std::fs::write(&config, text).expect("config");
    (proxy, config)
}

/// Writes config.toml for the seven desks on `stack` (STARTTLS, the stack's CA, state in
/// `dir`), with `extra_imap` and `extra_smtp` appended to those sections and `rules` as the
/// rules file (the shipped rules/gem.toml if None).
pub fn deployment(
    stack: &MailStack,
    dir: &Path,
    extra_imap: &str,
    extra_smtp: &str,
    rules: Option<&Path>,
) -> PathBuf {
    deployment_on(stack, stack.imap_port, dir, extra_imap, extra_smtp, rules)
}

/// Same, with IMAP at `imap_port` (a proxy in front of the stack's Dovecot).
pub fn deployment_on(
    stack: &MailStack,
    imap_port: u16,
    dir: &Path,
    extra_imap: &str,
    extra_smtp: &str,
    rules: Option<&Path>,
) -> PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("credentials dir");
    let mut desks = String::new();
    for (name, user) in DESKS {
        std::fs::write(creds.join(user), format!("{PASSWORD}\n")).expect("credential");
        desks.push_str(&format!(
            "[desk.{name}]\naddress = \"{user}@gem.test\"\nlogin = \"{user}\"\npassword_file = \"credentials/{user}\"\n\n"
        ));
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/gem.toml");
    let rules = rules.unwrap_or(&shipped);
    let text = format!(
        "[imap]\nhost = \"127.0.0.1\"\nport = {imap_port}\nsecurity = \"starttls\"\nca_file = \"{}\"\nbatch_size = 7\nfile_group = 10\npoll_seconds = 1\n{extra_imap}\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nca_file = \"{}\"\ntimeout_seconds = 5\n{extra_smtp}\n\
         [helpdesk]\naddress = \"helpdesk@gem.test\"\nphone = \"1800-419-3436\"\nweb = \"gem.gov.in/gemtickets\"\n\n[state]\ndatabase = \"sqlite://{}/state.db\"\n\n\
         [rules]\nfiles = [\"{}\"]\n\n{desks}",
        stack.ca_file.display(),
        stack.smtp_port,
        stack.ca_file.display(),
        dir.display(),
        rules.display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The shipped rules with `max_mail_mb` replaced, written to `dir/rules.toml`.
pub fn rules_with(dir: &Path, replace: &[(&str, &str)]) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/gem.toml");
    let mut text = std::fs::read_to_string(shipped).expect("rules");
    for (from, to) in replace {
        assert!(text.contains(from), "rules/gem.toml has no `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).expect("write rules");
    path
}

pub fn ticketgate(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ticketgate"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "ticketgate=debug")
        .env_remove("TICKETGATE_DATABASE")
        .env_remove("TICKETGATE_CRASH_AT");
    c
}

/// `ticketgate run --once`; its log. Panics if it fails.
pub fn run_once(config: &Path) -> String {
    let out = crate::support::output(&mut ticketgate(config, &["run", "--once"]));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "run --once failed:\n{log}");
    no_secret(&log);
    log
}

/// Issue #13: no desk password in any daemon output a test reads (the stack's accounts all
/// use `support::PASSWORD`).
#[track_caller]
pub fn no_secret(text: &str) {
    if let Some(line) = text.lines().find(|l| l.contains(PASSWORD)) {
        panic!("a password in the daemon's output: {line}");
    }
}

/// The daemon (`ticketgate run`) with its log (stderr and stdout) in `log`, and `env` set.
pub fn spawn_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
    let file = std::fs::File::create(log).expect("log file");
    let mut c = ticketgate(config, &["run"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("spawn daemon");
    Daemon::logging(child, log)
}

pub fn spawn(config: &Path, log: &Path) -> Daemon {
    spawn_env(config, log, &[])
}

/// Starts the daemon and returns once every desk watcher has logged in and selected.
pub async fn spawn_watching(config: &Path, log: &Path) -> Daemon {
    let child = spawn(config, log);
    wait_log(log, "watching", DESKS.len()).await;
    child
}

pub fn log_text(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    no_secret(&text);
    text
}

/// Waits until `needle` appears `times` times in the log.
pub async fn wait_log(log: &Path, needle: &str, times: usize) {
    wait_log_lines(log, times, &format!("`{needle}`"), |l| l.contains(needle)).await;
}

/// Waits until `times` lines of the log satisfy `pred`.
pub async fn wait_log_lines(log: &Path, times: usize, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = log_text(log);
        if text.lines().filter(|l| pred(l)).count() >= times {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} x{times} not in the daemon log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to `limit`) for the child to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn stop(child: Daemon) {
    drop(child);
}

pub fn mail(
    from: &str,
    to: &str,
    cc: Option<&str>,
    subject: &str,
    id: &str,
    body: &str,
    extra: &str,
) -> Vec<u8> {
    let cc = cc.map(|c| format!("Cc: {c}\r\n")).unwrap_or_default();
    format!(
        "From: {from}\r\nTo: {to}\r\n{cc}Subject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Mails sent by ticketgate in a mailbox, counted per original Message-ID (In-Reply-To).
pub fn redirects(mails: &[StoredMail]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for mail in mails.iter().filter(|m| m.header("X-Ticketgate").is_some()) {
        *m.entry(mail.header("In-Reply-To").unwrap_or_default())
            .or_insert(0) += 1;
    }
    m
}

pub async fn login(stack: &MailStack, user: &str) -> async_imap::Session<tokio::net::TcpStream> {
    stack.login(user).await
}

/// One mail as an officer's client sees it: account, folder, Message-ID, sorted keywords
/// and flags (without \Recent, which depends on who looked first).
pub type MailView = (String, String, String, Vec<String>);

/// Every mail of every folder of `user`.
pub async fn account(stack: &MailStack, user: &str) -> Vec<MailView> {
    let mut s = login(stack, user).await;
    let names: Vec<String> = crate::support::bounded(&format!("list {user}'s folders"), async {
        s.list(None, Some("*"))
            .await
            .expect("list")
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
    })
    .await
    .iter()
    .map(|n| n.name().to_string())
    .collect();
    let _ = crate::support::bounded("log out", s.logout()).await;
    let mut out = Vec::new();
    for folder in names {
        for m in stack.mailbox(user, &folder).await {
            let mut flags: Vec<String> = m
                .flags
                .iter()
                .filter(|f| *f != "\\Recent")
                .cloned()
                .collect();
            flags.sort();
            out.push((
                user.to_string(),
                folder.clone(),
                m.header("Message-ID").unwrap_or_default(),
                flags,
            ));
        }
    }
    out
}

/// The whole mail system: every desk, the helpdesk and `outside` (where mail to senders
/// lands), as a multiset of mail views.
pub async fn world(stack: &MailStack) -> BTreeMap<MailView, usize> {
    let mut users: Vec<&str> = DESKS.iter().map(|(_, u)| *u).collect();
    users.extend(["helpdesk", "outside"]);
    let mut w = BTreeMap::new();
    for u in users {
        for v in account(stack, u).await {
            *w.entry(v).or_insert(0) += 1;
        }
    }
    w
}

/// The outbox rows of the deployment's state database.
pub async fn outbox(dir: &Path) -> Vec<ticketgate::store::OutboxRecord> {
    let store = ticketgate::store::Store::open(&format!("sqlite://{}/state.db", dir.display()))
        .await
        .expect("open state database");
    let rows = store.outbox_all().await.expect("outbox");
    store.close().await;
    rows
}

/// Postfix of `stack` answers RCPT TO per `access` (a check_recipient_access table, e.g.
/// `helpdesk@gem.test 451 4.3.2 try later`) and applies `client` restrictions (e.g.
/// `sleep 8`); empty strings lift the faults. Every SMTP session opened after it returns
/// sees the change: it waits until no smtpd started under the old settings is left to take
/// a new connection (sessions already open keep the old settings to their end).
pub fn smtp_faults(stack: &MailStack, access: &str, client: &str) {
    let pc = stack.dir.join("postfix/etc");
    let table = pc.join("faults");
    std::fs::write(&table, access).expect("access table");
    let pc = pc.display();
    sh(&format!(
        "touch -d 2000-01-01 {t} && postconf -c {pc} -e \
         'smtpd_recipient_restrictions = check_recipient_access texthash:{t}, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination' \
         'smtpd_client_restrictions = {client}' && touch -d 2000-01-01 {pc}/main.cf",
        t = table.display()
    ));
    // Each smtpd reads main.cf and the table when it starts, and an idle one takes the next
    // connection: `postfix reload` only asks the master to end them, a moment later.
    // A busy one ends after its session once the master has taken the reload (its log line,
    // written as the master starts on it: a session ending in that instant could still be
    // followed by one more with the old settings; not seen).
    let reloads = || {
        std::fs::read_to_string(stack.dir.join("log/postfix.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("postfix/master[") && l.contains(": reload -- "))
            .count()
    };
    let before = reloads();
    let started_before = smtpd_children(stack);
    sh(&format!("postfix -c {pc} reload"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let idle: Vec<u32> = smtpd_children(stack)
            .into_iter()
            .filter(|pid| started_before.contains(pid) && !in_session(*pid))
            .collect();
        let taken = reloads() > before;
        if taken && idle.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Postfix took the reload: {taken}; smtpd {idle:?} still wait for connections with \
             the old settings"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of the smtpd processes of `stack`'s Postfix (children of its master).
fn smtpd_children(stack: &MailStack) -> Vec<u32> {
    let master = std::fs::read_to_string(stack.dir.join("postfix/spool/pid/master.pid"))
        .expect("Postfix master.pid")
        .trim()
        .to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last `)`.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = tail.split(' ').nth(1).unwrap_or_default();
        if head.ends_with("(smtpd") && ppid == master {
            pids.push(pid);
        }
    }
    pids
}

/// Whether process `pid` holds a TCP socket other than a listening one: a client's session
/// (open, or closed by the client and not yet by the server). False once it has exited.
fn in_session(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().to_string();
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // Columns: sl local remote st ... inode (the 10th); state 0A is LISTEN.
    tcp.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 9 && cols[3] != "0A" && inodes.iter().any(|i| i == cols[9])
    })
}

/// Runs a shell command; panics with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Turns on the metrics endpoint in `config` on a free loopback port; returns the port.
pub fn with_metrics(config: &Path) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(config, text).expect("write config");
    port
}

/// The folders `user` has subscribed, as LSUB lists them (what Thunderbird shows).
pub async fn subscribed(stack: &MailStack, user: &str) -> Vec<String> {
    let mut s = login(stack, user).await;
    crate::support::bounded(&format!("LSUB as {user}"), async {
        let names = s
            .lsub(Some(""), Some("*"))
            .await
            .expect("LSUB")
            .try_collect::<Vec<_>>()
            .await
            .expect("LSUB answers")
            .iter()
            .map(|n| n.name().to_string())
            .collect();
        let _ = s.logout().await;
        names
    })
    .await
}

/// One HTTP GET on loopback, as a Prometheus scraper or a health probe does it: the
/// connection closed after the answer, which is read to its end within [`WAIT`] (an
/// endpoint that keeps the connection open or never answers fails the test instead of
/// holding the suite until CI's limit).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the metrics endpoint");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("response");
        text
    });
    let text = exchange.await.unwrap_or_else(|_| {
        panic!("GET {path} on port {port}: no complete answer within {WAIT:?}")
    });
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Polls `path` until `ok` accepts (status, body), or fails the test after WAIT.
pub async fn wait_http(
    port: u16,
    path: &str,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(port, path).await;
        if ok(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {path} answered {status}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name` (with no labels) in a Prometheus text exposition.
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
