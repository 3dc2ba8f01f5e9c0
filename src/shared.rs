//! The state every task of the daemon shares: the config, the store, the rules in force
//! ([`Policy`], swapped as a whole on reload), the wake-ups between tasks, the metrics and
//! the outcome of the last reload. Who starts the tasks is `supervisor`'s; what they do
//! with this state is `watcher`'s, `pipeline`'s and `outbox`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

pub use crate::plan::Policy;

/// What every task shares.
#[derive(Debug)]
pub struct Shared {
    /// The config the daemon started with (its reloadable parts as of the start).
    pub config: Config,
    /// The state database.
    pub store: Store,
    policy: RwLock<Arc<Policy>>,
    /// Notified when mail is queued, so the outbox task sends it at once.
    pub outbox_wake: Arc<Notify>,
    /// Wakes every waiting desk watcher: a copy revealed a broadcast that other desks hold.
    pub recheck: Notify,
    /// Counters and gauges for `/metrics` and `/health`.
    pub metrics: Arc<Metrics>,
    /// The last `systemctl reload` was refused (the old rules run): said in systemd's STATUS=.
    reload_refused: AtomicBool,
    /// The first problem of the last refused reload, for `reload-result`.
    last_refusal: Mutex<String>,
    /// The helpdesk's ticket registry (config.toml's `[registry]`: a CSV export read again
    /// when it changes, a PostgreSQL query or an HTTP lookup); `None`: no registry.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// The memory every task's whole mails share ([`crate::budget`]): four largest allowed
    /// mails of the rules the daemon started with (a reload does not resize it).
    pub memory: crate::budget::MailMemory,
}

impl Shared {
    /// Shared state with `policy` in force and no reload refused.
    pub fn new(config: Config, store: Store, policy: Policy, metrics: Arc<Metrics>) -> Shared {
        let registry = config.registry.as_ref().map(|r| {
            let registry = crate::registry::Registry::new(r, policy.rules.time_zone.clone());
            // Learned tickets are read from the daemon's own state database.
            if let Some(acks) = registry.acknowledgements() {
                acks.use_store(store.clone());
            }
            Arc::new(registry)
        });
        let memory =
            crate::budget::MailMemory::for_largest_mail(policy.rules.limits.max_mail_bytes as u64);
        Shared {
            memory,
            registry,
            config,
            store,
            policy: RwLock::new(Arc::new(policy)),
            outbox_wake: Arc::new(Notify::new()),
            recheck: Notify::new(),
            metrics,
            reload_refused: AtomicBool::new(false),
            last_refusal: Mutex::new(String::new()),
        }
    }

    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `p` in force (an accepted reload); later [`Shared::policy`] calls return it.
    pub fn set_policy(&self, p: Policy) {
        let p = Arc::new(p);
        match self.policy.write() {
            Ok(mut g) => *g = p,
            Err(poisoned) => *poisoned.into_inner() = p,
        }
        self.reload_refused.store(false, Ordering::Relaxed);
    }

    /// A reload was refused: the old policy stays; `why` is its first problem.
    pub fn refuse_reload(&self, why: String) {
        if let Ok(mut last) = self.last_refusal.lock() {
            *last = why;
        }
        self.reload_refused.store(true, Ordering::Relaxed);
    }

    /// The first problem of the last reload if it was refused; `None` when it was
    /// accepted (or none happened).
    pub fn reload_refusal(&self) -> Option<String> {
        if !self.reload_refused.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.last_refusal
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
        )
    }
}
