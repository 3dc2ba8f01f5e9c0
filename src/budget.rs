//! The process-wide budget of memory for mail bodies (issue #13): every step that holds
//! whole mails (a desk's fetched batch while it is decided, the outbox's mails while they
//! are read and sent) reserves their bytes, times the copies that step makes, before it
//! holds them, and gives them back when done. Desks, the outbox and the late-broadcast
//! correction then never hold more than the budget together, whatever the batch or the
//! number of desks: one largest allowed mail at a time passes, and small mail flows side by
//! side as before.
//!
//! Also here: [`use_fixed_mmap_threshold`], which makes glibc give such blocks back to the
//! system once they are freed.
//!
//! Not here: which mails a batch holds (`watcher`, `imap::commands`), what the outbox reads
//! (`store::outbox`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many largest allowed mails (`max_mail_mb`) the budget holds: a redirect of one such
/// mail being written (3 copies: the composed mail, sqlx's bound value and SQLite's record)
/// beside one being read by the outbox is more than this, so the two take turns.
pub const LARGEST_MAILS: u64 = 4;

/// Copies of a fetched mail a desk holds while deciding it: the body, the parser's decoded
/// parts, and the redirect composed from it on its way into the outbox (the body is
/// released before the redirect is written).
pub const DECIDE_COPIES: u64 = 3;

/// Copies of an outgoing mail the outbox holds while reading and sending it: the row as
/// SQLite reads it, sqlx's value and the item it becomes (while read; then the item and the
/// dot-stuffed copy the SMTP client writes).
pub const SEND_COPIES: u64 = 3;

/// Bytes per permit: the semaphore counts KiB so that budgets of many GB fit its `u32`
/// requests.
const UNIT: u64 = 1024;

/// A byte budget shared by every task (cheap to clone).
#[derive(Debug, Clone)]
pub struct MailMemory {
    permits: Arc<Semaphore>,
    /// The budget in units; a larger request takes all of it.
    units: u32,
}

/// Bytes held under a [`MailMemory`] budget, given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
    /// Bytes asked for (before clamping to the budget).
    pub bytes: u64,
}

impl Reserved {
    /// Nothing held (for bodies outside any budget, e.g. in tests).
    pub fn none() -> Reserved {
        Reserved {
            _permit: None,
            bytes: 0,
        }
    }

    /// This reservation cut into one share per part, in order, each in proportion to the
    /// bytes that part asks (`parts`, e.g. each mail's bytes times its copies), so that
    /// each part's share can be given back on its own. The shares together hold exactly
    /// what this one held: the last takes what rounding leaves (even if it asks nothing),
    /// any other part asking nothing gets nothing. Empty for no parts.
    pub fn split(self, parts: &[u64]) -> Vec<Reserved> {
        let Some(last) = parts.len().checked_sub(1) else {
            return Vec::new();
        };
        let Some(mut permit) = self._permit else {
            return parts
                .iter()
                .map(|&bytes| Reserved {
                    _permit: None,
                    bytes,
                })
                .collect();
        };
        let held = permit.num_permits() as u128;
        let asked: u128 = parts.iter().map(|&b| u128::from(b)).sum::<u128>().max(1);
        let mut shares = Vec::with_capacity(parts.len());
        for &bytes in &parts[..last] {
            let n = usize::try_from(held * u128::from(bytes) / asked).unwrap_or(usize::MAX);
            shares.push(Reserved {
                _permit: if n == 0 { None } else { permit.split(n) },
                bytes,
            });
        }
        shares.push(Reserved {
            _permit: Some(permit),
            bytes: parts[last],
        });
        shares
    }

    /// Bytes of the budget this reservation holds (after clamping to the budget).
    pub fn held(&self) -> u64 {
        self._permit
            .as_ref()
            .map_or(0, |p| p.num_permits() as u64 * UNIT)
    }
}

impl MailMemory {
    /// A budget of `largest_mail` × [`LARGEST_MAILS`] bytes (at least 1 MiB).
    pub fn for_largest_mail(largest_mail: u64) -> MailMemory {
        MailMemory::new(largest_mail.saturating_mul(LARGEST_MAILS))
    }

    /// A budget of `bytes` (at least 1 MiB).
    pub fn new(bytes: u64) -> MailMemory {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1024, Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u32);
        MailMemory {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `bytes` fit beside what others hold, and holds them. A request larger
    /// than the whole budget waits until it can take all of it (it then runs alone), so
    /// nothing waits for ever. Requests are served in order (first come, first served).
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let units = self.units_for(bytes);
        let permit = if units == 0 {
            None
        } else {
            // The semaphore is never closed, so acquiring cannot fail.
            Arc::clone(&self.permits)
                .acquire_many_owned(units)
                .await
                .ok()
        };
        Reserved {
            _permit: permit,
            bytes,
        }
    }

    /// [`Self::reserve`] without waiting: `None` when `bytes` do not fit now or others
    /// wait before this request (it never jumps their queue).
    pub fn try_reserve(&self, bytes: u64) -> Option<Reserved> {
        let units = self.units_for(bytes);
        let permit = if units == 0 {
            None
        } else {
            Some(
                Arc::clone(&self.permits)
                    .try_acquire_many_owned(units)
                    .ok()?,
            )
        };
        Some(Reserved {
            _permit: permit,
            bytes,
        })
    }

    /// Permits for `bytes`, at most the whole budget.
    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.units)
    }

    /// Bytes of the budget nobody holds now (for metrics and tests).
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.units) * UNIT
    }
}

/// The glibc tunable (glibc 2.26+; `GLIBC_TUNABLES`) [`use_fixed_mmap_threshold`] sets.
pub const MMAP_TUNABLE: &str = "glibc.malloc.mmap_threshold";

/// Set in the environment of the program [`use_fixed_mmap_threshold`] restarts.
const RESTARTED: &str = "TICKETGATE_MMAP_THRESHOLD_SET";

/// Blocks of this many bytes or more are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: u32 = 256 * 1024;

/// Starts this program again in place (`execve`, same PID, same arguments) with
/// [`MMAP_TUNABLE`] set, unless it is set already; returns only when it was set, or when
/// the new start failed (the daemon then runs with glibc's defaults).
///
/// Why: glibc raises its mmap threshold to the size of each mapped block freed (up to
/// 32 MiB), so after the first large mail every later copy of one comes from a thread's
/// arena, and freed arena memory mostly stays with the process. Measured with 12 mails of
/// 24 MB redirected (`scripts/bench`, item 6): 201 MB peak RSS with the dynamic threshold,
/// 92 MB with a fixed one (issue #13). A fixed threshold turns the dynamic one off
/// (mallopt(3)); the cost is one mmap and munmap per block of 256 KiB or more.
pub fn use_fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt as _;
    // Once only: glibc may drop GLIBC_TUNABLES (secure-execution mode), and the restarted
    // program must not restart again.
    if std::env::var_os(RESTARTED).is_some() {
        return;
    }
    // Other tunables that are not UTF-8 are left alone rather than rewritten.
    let current = match std::env::var_os("GLIBC_TUNABLES") {
        None => String::new(),
        Some(v) => match v.into_string() {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    if current.contains(MMAP_TUNABLE) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let setting = format!("{MMAP_TUNABLE}={MMAP_THRESHOLD}");
    let tunables = if current.is_empty() {
        setting
    } else {
        format!("{current}:{setting}")
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    // Only returns on failure (the binary was replaced or removed meanwhile, say).
    let error = command
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(RESTARTED, "1")
        .exec();
    eprintln!(
        "ticketgate: cannot restart itself with {MMAP_TUNABLE} set ({error}); going on with glibc's defaults"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_split_per_mail_gives_each_share_back_on_its_own() {
        let memory = MailMemory::new(10 << 20);
        // 3 MiB asked as parts of 1, 0 and 2 MiB.
        let shares = memory.reserve(3 << 20).await.split(&[1 << 20, 0, 2 << 20]);
        assert_eq!(
            shares.iter().map(Reserved::held).collect::<Vec<_>>(),
            [1 << 20, 0, 2 << 20]
        );
        assert_eq!(memory.available(), 7 << 20);
        let mut shares = shares.into_iter();
        drop(shares.next());
        assert_eq!(memory.available(), 8 << 20);
        drop(shares);
        assert_eq!(memory.available(), memory.total());

        // Over the whole budget: all of it, shared out in proportion; nothing lost.
        let small = MailMemory::new(1 << 20);
        let shares = small
            .reserve(40 << 20)
            .await
            .split(&[10 << 20, 10 << 20, 20 << 20]);
        let held: Vec<u64> = shares.iter().map(Reserved::held).collect();
        assert_eq!(held, [256 << 10, 256 << 10, 512 << 10]);
        assert_eq!(small.available(), 0);
        drop(shares);
        assert_eq!(small.available(), small.total());

        // Rounding: 2 KiB in three equal parts; the last share takes what is left.
        let memory = MailMemory::new(10 << 20);
        let shares = memory.reserve(2 * 1024).await.split(&[1024, 1024, 1024]);
        let held: Vec<u64> = shares.iter().map(Reserved::held).collect();
        assert_eq!(held, [0, 0, 2048]);
        drop(shares);
        assert_eq!(memory.available(), memory.total());
        assert!(
            Reserved::none()
                .split(&[5, 6])
                .iter()
                .all(|r| r.held() == 0)
        );
        assert!(memory.reserve(1).await.split(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_reservation_that_must_not_wait_is_refused_when_it_does_not_fit_now() {
        let memory = MailMemory::new(4 << 20);
        let first = memory.try_reserve(3 << 20);
        assert_eq!(first.as_ref().map(Reserved::held), Some(3 << 20));
        assert!(memory.try_reserve(2 << 20).is_none());
        assert_eq!(memory.available(), 1 << 20);
        assert_eq!(memory.try_reserve(0).map(|r| r.held()), Some(0));
        drop(first);
        // Over the whole budget: all of it, once nobody holds any.
        assert_eq!(memory.try_reserve(9 << 20).map(|r| r.held()), Some(4 << 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_large_reservation_waits_for_the_first_to_be_given_back() {
        let m = MailMemory::new(100 << 20);
        let first = m.reserve(72 << 20).await;
        assert_eq!(m.available(), 28 << 20);
        let wait = std::time::Duration::from_secs(3600);
        assert!(
            tokio::time::timeout(wait, m.reserve(48 << 20))
                .await
                .is_err(),
            "48 MB fit beside 72 MB in a 100 MB budget"
        );
        // Small mail still passes beside the first.
        let small = m.reserve(2 << 20).await;
        drop(small);
        let second = m.reserve(48 << 20);
        drop(first);
        let second = second.await;
        assert_eq!(second.bytes, 48 << 20);
        assert_eq!(m.available(), 52 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_whole_budget_takes_all_of_it_and_never_waits_for_ever() {
        let m = MailMemory::new(10 << 20);
        let huge = m.reserve(1 << 40).await;
        assert_eq!(m.available(), 0);
        assert_eq!(huge.bytes, 1 << 40);
        drop(huge);
        assert_eq!(m.available(), m.total());
        assert_eq!(m.reserve(0).await.bytes, 0);
        assert_eq!(m.available(), m.total());
    }

    #[test]
    fn the_budget_is_four_largest_mails_and_at_least_one_mib() {
        assert_eq!(MailMemory::for_largest_mail(25 << 20).total(), 100 << 20);
        assert_eq!(MailMemory::new(1).total(), 1 << 20);
    }
}
