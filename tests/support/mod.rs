//! Test harness: a real Dovecot (IMAP) and Postfix (SMTP → LMTP → Dovecot) on loopback,
//! started per test by scripts/mailstack/up.sh on a free block of ports with its own state
//! directory, and small async helpers to put mail in and read mailboxes out (async-imap and
//! lettre, as a user's client would). Also the suite's log collection for scripts/test's
//! secret check ([`keep`], `TICKETGATE_TEST_LOGS`). Submodules: [`gem`], the GeM desk fixture
//! shared with unit tests, benches and fuzz; [`skip`], visible skips. Deployments of the
//! daemon on a stack are in tests/faultkit.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::TryStreamExt;

pub mod gem;
pub mod skip;

/// The seven GeM desks: (desk name in config.toml, IMAP user of the stack).
#[allow(unused_imports, reason = "not every test binary uses it")]
pub use gem::DESKS;

/// The mail stack's domain (the desks' production domain is [`gem::DOMAIN`]).
pub const DOMAIN: &str = "gem.test";
/// How long a test waits for an outcome it expects.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `f`, or a panic naming `what` when the test's mail server has not answered within
/// [`WAIT`]: a server waiting for more input (an unquoted date-time makes Dovecot expect a
/// literal) fails the test in a minute instead of holding the suite until CI's limit.
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer from the test's mail server within {WAIT:?}"),
    }
}
/// Every stack account's password: distinctive, so that a leak into any output is found
/// (`faultkit::no_secret`), which "secret" would not be (it is in real mail).
pub const PASSWORD: &str = "tg-Pw-7c3e91";

/// The directory where this run of the suite keeps every output of the binary under test
/// and of the mail stacks (`TICKETGATE_TEST_LOGS`, set by scripts/test, which greps it for
/// the test passwords); None when unset.
pub fn logs_dir() -> Option<PathBuf> {
    std::env::var_os("TICKETGATE_TEST_LOGS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// A new file name in [`logs_dir`]: `<test binary>-<pid>-<n>-<test>-<what>`, unique in the
/// run (libtest names each test's thread after the test).
fn log_name(what: &str) -> Option<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = logs_dir()?;
    let _ = std::fs::create_dir_all(&dir);
    let exe = std::env::current_exe().ok();
    let binary = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("test");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test").replace("::", ".");
    Some(dir.join(format!("{binary}-{}-{n}-{test}-{what}", std::process::id())))
}

/// Keeps `bytes` (an output a test got from the binary under test) in [`logs_dir`] as
/// `what`; does nothing when the variable is unset.
pub fn keep(what: &str, bytes: &[u8]) {
    if let Some(path) = log_name(&format!("{what}.log")) {
        let _ = std::fs::write(path, bytes);
    }
}

/// Keeps both streams of a finished command (see [`keep`]).
pub fn keep_output(what: &str, out: &std::process::Output) {
    let mut all = out.stdout.clone();
    all.extend_from_slice(&out.stderr);
    keep(what, &all);
}

/// Runs `cmd` to completion and keeps its stdout and stderr (see [`keep`]).
pub fn output(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run the command");
    let what = Path::new(cmd.get_program())
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("command")
        .to_string();
    keep_output(&what, &out);
    out
}

/// A daemon started by a test; killed when dropped, so that a failed test leaves no daemon
/// running behind it. Its log file, if any, is then kept (see [`keep`]).
#[derive(Debug)]
pub struct Daemon(pub std::process::Child, pub Option<PathBuf>);

impl Daemon {
    /// A daemon whose stderr and stdout the test does not keep in a file.
    pub fn new(child: std::process::Child) -> Daemon {
        Daemon(child, None)
    }

    /// A daemon writing its log to `log`.
    pub fn logging(child: std::process::Child, log: &Path) -> Daemon {
        Daemon(child, Some(log.to_path_buf()))
    }
}

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(log) = &self.1 {
            keep("daemon", &std::fs::read(log).unwrap_or_default());
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct StackOptions {
    /// Replaces Dovecot's advertised capabilities (MAILSTACK_IMAP_CAPABILITY).
    pub imap_capability: Option<String>,
    /// Dovecot's `* OK Still here` interval during IDLE (MAILSTACK_IDLE_NOTIFY).
    pub idle_notify: Option<String>,
    /// A personal namespace prefix and separator, e.g. ("INBOX.", ".") as on Courier/Cyrus.
    pub namespace: Option<(String, String)>,
    /// At most this many IMAP connections per user from one address
    /// (MAILSTACK_MAX_USERIP_CONNECTIONS; Dovecot's default here is 100).
    pub max_connections_per_user: Option<u32>,
}

#[derive(Debug)]
pub struct MailStack {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub ca_file: PathBuf,
    offset: u16,
    lock: PathBuf,
    opts: StackOptions,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Claims a block of ports (base ports + offset) that nothing listens on, with a lock file
/// holding this test process's PID, so that parallel tests never pick the same block. A
/// block whose lock names a process that is gone (a test killed by a timeout or ^C, which
/// could not stop its stack) is taken back: its stack is stopped first.
fn claim_offset() -> (u16, PathBuf) {
    use std::io::Write;
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(stop_orphaned_stacks);
    let start = 1000 + (std::process::id() % 200) as u16 * 20;
    for i in 0..400u16 {
        let offset = 1000 + (start - 1000 + i * 20) % 4000;
        let lock = PathBuf::from(format!("/tmp/ticketgate-ports-{offset}.lock"));
        let claimed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock);
        let Ok(mut claimed) = claimed else {
            // A lock without a PID (being written, or by an earlier version of this file) is
            // stale after an hour.
            if !take_back_if_orphaned(offset, &lock)
                && lock_owner(&lock).is_none()
                && older_than_an_hour(&lock)
            {
                let _ = std::fs::remove_file(&lock);
            }
            continue;
        };
        let _ = write!(claimed, "{}", std::process::id());
        drop(claimed);
        if [10143u16, 10993, 10024, 10025, 10465]
            .iter()
            .all(|p| free(p + offset))
        {
            return (offset, lock);
        }
        let _ = std::fs::remove_file(&lock);
    }
    panic!("no free port block for a mail stack");
}

/// The test process a port block's lock names, if it names one.
fn lock_owner(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

/// When the lock of port block `offset` names a test process that is gone, stops the stack
/// it left and frees the block; true when it did.
fn take_back_if_orphaned(offset: u16, lock: &Path) -> bool {
    let orphaned = lock_owner(lock).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    if orphaned {
        stop_stack(&stack_dir(offset));
        let _ = std::fs::remove_file(lock);
    }
    orphaned
}

/// Stops every stack whose port block's lock names a test process that is gone, once per
/// test process (at its first stack): a killed test leaves its Dovecot and Postfix running.
fn stop_orphaned_stacks() {
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(offset) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ticketgate-ports-"))
            .and_then(|n| n.strip_suffix(".lock"))
            .and_then(|n| n.parse::<u16>().ok())
        else {
            continue;
        };
        take_back_if_orphaned(offset, &entry.path());
    }
}

fn older_than_an_hour(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map(|e| e.as_secs() > 3600).unwrap_or(false))
        .unwrap_or(false)
}

/// Where the stack on the port block `offset` keeps its state.
fn stack_dir(offset: u16) -> PathBuf {
    PathBuf::from(format!("/tmp/ticketgate-stack-{offset}"))
}

/// Stops the stack under `dir` (both masters) and removes its state.
fn stop_stack(dir: &Path) {
    let _ = Command::new(repo().join("scripts/mailstack/down.sh"))
        .arg(dir)
        .arg("--fast")
        .arg("--purge")
        .output();
}

impl MailStack {
    pub fn start() -> MailStack {
        Self::start_with(StackOptions::default())
    }

    pub fn start_with(opts: StackOptions) -> MailStack {
        let (offset, lock) = claim_offset();
        let dir = stack_dir(offset);
        let _ = std::fs::remove_dir_all(&dir);
        let stack = MailStack {
            imap_port: 10143 + offset,
            imaps_port: 10993 + offset,
            smtp_port: 10025 + offset,
            smtps_port: 10465 + offset,
            ca_file: dir.join("tls/ca.pem"),
            dir,
            offset,
            lock,
            opts,
        };
        stack.up();
        stack
    }

    fn up(&self) {
        let mut c = Command::new(repo().join("scripts/mailstack/up.sh"));
        c.arg(&self.dir)
            .env("MAILSTACK_PORT_OFFSET", self.offset.to_string())
            .env("MAILSTACK_PASSWORD", PASSWORD);
        if let Some(cap) = &self.opts.imap_capability {
            c.env("MAILSTACK_IMAP_CAPABILITY", cap);
        }
        if let Some(every) = &self.opts.idle_notify {
            c.env("MAILSTACK_IDLE_NOTIFY", every);
        }
        if let Some(n) = self.opts.max_connections_per_user {
            c.env("MAILSTACK_MAX_USERIP_CONNECTIONS", n.to_string());
        }
        if let Some((prefix, sep)) = &self.opts.namespace {
            c.env("MAILSTACK_NAMESPACE_PREFIX", prefix)
                .env("MAILSTACK_SEPARATOR", sep);
        }
        let out = c.output().expect("run up.sh");
        assert!(
            out.status.success(),
            "up.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn postfix(&self, verb: &str) {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("postfix/etc"))
            .arg(verb)
            .output()
            .expect("postfix");
        assert!(
            out.status.success(),
            "postfix {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops Postfix: SMTP connections are refused until `start_smtp`.
    pub fn stop_smtp(&self) {
        self.postfix("stop");
        wait_port(self.smtp_port, false);
    }

    pub fn start_smtp(&self) {
        self.up();
        wait_port(self.smtp_port, true);
    }

    /// Stops and starts Dovecot, dropping every IMAP connection.
    pub fn restart_imap(&self) {
        let pid =
            std::fs::read_to_string(self.dir.join("run/dovecot/master.pid")).unwrap_or_default();
        let pid = pid.trim();
        if !pid.is_empty() {
            let _ = Command::new("kill").arg(pid).status();
        }
        wait_port(self.imap_port, false);
        self.up();
    }

    pub fn address(user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// A plain IMAP session as `user`, as an officer's client would log in. On a stack with
    /// `max_connections_per_user`, a login refused for that limit is tried again until
    /// Dovecot has counted the test's last session out, within half of [`WAIT`].
    pub async fn login(&self, user: &str) -> async_imap::Session<tokio::net::TcpStream> {
        bounded(&format!("log in as {user}"), self.login_unbounded(user)).await
    }

    async fn login_unbounded(&self, user: &str) -> async_imap::Session<tokio::net::TcpStream> {
        let deadline = tokio::time::Instant::now() + WAIT / 2;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port))
                .await
                .expect("connect imap");
            let mut client = async_imap::Client::new(tcp);
            client.read_response().await.expect("greeting");
            match client.login(user, PASSWORD).await {
                Ok(session) => return session,
                // Only on a stack that limits connections per user: elsewhere a refusal
                // for the limit is a leak to report, not to wait out.
                Err((e, _))
                    if self.opts.max_connections_per_user.is_some()
                        && e.to_string().contains("[LIMIT]")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                Err((e, _)) => panic!("login as {user}: {e}"),
            }
        }
    }

    /// APPENDs a mail (creating the mailbox if needed); returns its UID.
    pub async fn append(&self, user: &str, mailbox: &str, raw: &[u8]) -> u32 {
        let mut s = self.login(user).await;
        bounded(&format!("append to {user}/{mailbox}"), async {
            let _ = s.create(mailbox).await;
            s.append(mailbox, None, None, raw).await.expect("append");
            let mb = s.select(mailbox).await.expect("select");
            let _ = s.logout().await;
            mb.uid_next.unwrap_or(1).saturating_sub(1)
        })
        .await
    }

    /// Submits a mail over SMTP to Postfix, which delivers it into Dovecot over LMTP.
    pub async fn send(&self, from: &str, rcpts: &[&str], raw: &[u8]) {
        use lettre::AsyncTransport;
        let t =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(self.smtp_port)
                .build();
        let env = lettre::address::Envelope::new(
            Some(from.parse().expect("from")),
            rcpts.iter().map(|r| r.parse().expect("rcpt")).collect(),
        )
        .expect("envelope");
        bounded("send over SMTP", t.send_raw(&env, raw))
            .await
            .expect("smtp send");
    }

    /// Every mail of a mailbox in UID order; empty when the mailbox does not exist.
    pub async fn mailbox(&self, user: &str, mailbox: &str) -> Vec<StoredMail> {
        let s = self.login(user).await;
        bounded(
            &format!("read {user}/{mailbox}"),
            Self::read_mailbox(s, mailbox),
        )
        .await
    }

    async fn read_mailbox(
        mut s: async_imap::Session<tokio::net::TcpStream>,
        mailbox: &str,
    ) -> Vec<StoredMail> {
        if s.examine(mailbox).await.is_err() {
            let _ = s.logout().await;
            return Vec::new();
        }
        let fetched: Vec<_> = s
            .uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
            .await
            .expect("fetch")
            .try_collect()
            .await
            .unwrap_or_default();
        let mut mails: Vec<StoredMail> = fetched
            .iter()
            .filter_map(|f| {
                Some(StoredMail {
                    uid: f.uid?,
                    flags: f
                        .flags()
                        .map(|fl| format!("{fl:?}"))
                        .map(flag_name)
                        .collect(),
                    raw: f.body()?.to_vec(),
                })
            })
            .collect();
        drop(fetched);
        let _ = s.logout().await;
        mails.sort_by_key(|m| m.uid);
        mails
    }

    /// Re-reads the mailbox until `cond` holds; panics with `what` on timeout.
    pub async fn wait_for<F: FnMut(&[StoredMail]) -> bool>(
        &self,
        user: &str,
        mailbox: &str,
        timeout: Duration,
        what: &str,
        mut cond: F,
    ) -> Vec<StoredMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mailbox(user, mailbox).await;
            if cond(&mails) {
                return mails;
            }
            if tokio::time::Instant::now() >= deadline {
                let summary: Vec<String> = mails
                    .iter()
                    .map(|m| format!("uid {} {:?} {}", m.uid, m.flags, m.subject()))
                    .collect();
                panic!(
                    "timed out waiting for {what} in {user}/{mailbox}; it holds:\n{}",
                    summary.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn flag_name(debug: String) -> String {
    match debug.as_str() {
        "Seen" => "\\Seen".into(),
        "Answered" => "\\Answered".into(),
        "Flagged" => "\\Flagged".into(),
        "Deleted" => "\\Deleted".into(),
        "Draft" => "\\Draft".into(),
        "Recent" => "\\Recent".into(),
        other => other
            .strip_prefix("Custom(\"")
            .and_then(|s| s.strip_suffix("\")"))
            .unwrap_or(other)
            .to_string(),
    }
}

fn wait_port(port: u16, open: bool) {
    for _ in 0..400 {
        if free(port) != open {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "port {port} did not become {}",
        if open { "open" } else { "closed" }
    );
}

impl Drop for MailStack {
    fn drop(&mut self) {
        if let Some(dest) = log_name("stack") {
            for f in std::fs::read_dir(self.dir.join("log"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::create_dir_all(&dest);
                let _ = std::fs::copy(f.path(), dest.join(f.file_name()));
            }
        }
        stop_stack(&self.dir);
        let _ = std::fs::remove_file(&self.lock);
    }
}

#[derive(Debug, Clone)]
pub struct StoredMail {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

impl StoredMail {
    /// First occurrence of a header, decoded and unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let m = mail_parser::MessageParser::default().parse(&self.raw)?;
        let h = m
            .headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
        Some(match &h.value {
            mail_parser::HeaderValue::Text(t) => t.to_string(),
            mail_parser::HeaderValue::TextList(l) => l
                .iter()
                .map(|s| format!("<{s}>"))
                .collect::<Vec<_>>()
                .join(" "),
            mail_parser::HeaderValue::Address(a) => a
                .iter()
                .filter_map(|x| x.address())
                .collect::<Vec<_>>()
                .join(", "),
            _ => m
                .header_raw(name)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        })
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    pub fn subject(&self) -> String {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default()
    }
}
