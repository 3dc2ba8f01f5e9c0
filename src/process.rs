//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ... as the official clients name
//! them) and `ticketgate_build_info`, read from /proc/self on Linux and rendered in the
//! text format. The daemon's own counters are in `metrics`, which appends these.

use std::fmt::Write as _;

/// Clock ticks per second of the times in /proc/PID/stat: USER_HZ, 100 on every Linux
/// architecture that exports it to user space (the kernel converts to it).
const USER_HZ: f64 = 100.0;

/// Page size for /proc/self/statm: 4 KiB on x86-64 and the usual arm64 kernels. RSS comes
/// from /proc/self/status (in kB) instead when it is there.
const PAGE: u64 = 4096;

/// The Unix time [`mark_start`] was called: the start time when /proc/stat (boot time) is
/// hidden, as it is under the unit's `ProcSubset=pid`.
static STARTED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Notes the process's start; the daemon calls it first thing.
pub fn mark_start() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = STARTED.set(now);
}

/// What /proc says about this process; `None` for what could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl Process {
    /// Reads /proc/self (Linux).
    pub fn read() -> Process {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let mut p = parse(
            stat.as_deref(),
            boot.as_deref(),
            status.as_deref(),
            limits.as_deref(),
        );
        // read_dir holds one descriptor of its own while counting.
        p.open_fds = fds.map(|n| n.saturating_sub(1));
        p.start_time_seconds = p.start_time_seconds.or(STARTED.get().copied());
        p
    }
}

/// The fields of /proc/self/stat after the command name (which may hold spaces and
/// parentheses, so it is skipped up to its last `)`), 0-based from field 3 (`state`).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// Parses the /proc texts (tests feed their own).
fn parse(
    stat: Option<&str>,
    proc_stat: Option<&str>,
    status: Option<&str>,
    limits: Option<&str>,
) -> Process {
    let f = stat.map(stat_fields).unwrap_or_default();
    // After `)`: state is index 0, so field N of proc(5) is index N - 3.
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = match (num(14), num(15)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / USER_HZ),
        _ => None,
    };
    let btime = proc_stat.and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start_time_seconds = match (btime, num(22)) {
        (Some(b), Some(ticks)) => Some(b as f64 + ticks as f64 / USER_HZ),
        _ => None,
    };
    let rss_kb = status.and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let max_fds = limits.and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
    });
    Process {
        cpu_seconds,
        resident_bytes: rss_kb.map(|k| k * 1024).or(num(24).map(|p| p * PAGE)),
        virtual_bytes: num(23),
        start_time_seconds,
        open_fds: None,
        max_fds,
    }
}

/// Appends the process families and `ticketgate_build_info` in the text format.
pub fn render(out: &mut String, p: &Process) {
    let mut family = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds.map(|v| v.to_string()),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.map(|v| v.to_string()),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.map(|v| v.to_string()),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.map(|v| v.to_string()),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds.map(|v| v.to_string()),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds.map(|v| v.to_string()),
    );
    let _ = writeln!(
        out,
        "# HELP ticketgate_build_info The running ticketgate's version (always 1).\n# TYPE ticketgate_build_info gauge\nticketgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_become_the_standard_families() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (tg (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 12345 104857600 2560 18446744073709551615";
        let p = parse(
            Some(stat),
            Some("cpu  1 2 3\nbtime 1700000000\n"),
            Some("Name:\tticketgate\nVmRSS:\t   10240 kB\n"),
            Some(
                "Limit                     Soft Limit           Hard Limit           Units\nMax open files            8192                 20000                files\n",
            ),
        );
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(p.resident_bytes, Some(10_485_760));
        assert_eq!(p.virtual_bytes, Some(104_857_600));
        assert_eq!(p.max_fds, Some(8192));
        let mut out = String::new();
        render(&mut out, &p);
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"),
            "{out}"
        );
        assert!(out.contains("ticketgate_build_info{version=\""), "{out}");
        assert!(
            !out.contains("process_open_fds"),
            "unknown values are left out: {out}"
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let p = Process::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
        assert!(p.start_time_seconds.is_some_and(|t| t > 1.5e9), "{p:?}");
    }
}
