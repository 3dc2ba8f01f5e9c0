//! The `ticketgate` command line: parses arguments, sets up logging, runs one subcommand and
//! maps failures to exit codes (78 = EX_CONFIG for bad config or rules, as systemd's
//! `RestartPreventExitStatus=78` expects).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ticketgate::classify::classify_file;
use ticketgate::config::{self, Config};
use ticketgate::facts::Directory;
use ticketgate::registry::RegistryConfig;
use ticketgate::rules::{self, Problem, Rules};

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits.h: cannot open input.
const EX_NOINPUT: u8 = 66;
/// sysexits.h: service unavailable (a server could not be reached in `check --connect`).
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser, Debug)]
#[command(
    name = "ticketgate",
    version,
    about = "Mailbox automation for escalation desks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where config.toml is; shared by every subcommand.
#[derive(clap::Args, Debug)]
struct ConfigArg {
    #[arg(
        long,
        short,
        env = "TICKETGATE_CONFIG",
        default_value = "/etc/ticketgate/config.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the desk inboxes and act on every new mail (the daemon).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Handle everything waiting in every desk, send the outbox, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Validate config.toml and the rules; with --connect, also log in to every account.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also log in to every desk account over IMAP and SMTP (exit 69 if one fails).
        #[arg(long)]
        connect: bool,
    },
    /// Dry run on .eml files: facts, matched rules and actions; touches no server.
    Classify {
        #[command(flatten)]
        config: ConfigArg,
        /// Classify as if the mail were in this desk's mailbox (default: the first desk it is addressed to).
        #[arg(long)]
        desk: Option<String>,
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
        /// Also print each mail `run` would send (redirect, forward, reply), composed from
        /// the templates exactly as `run` composes it.
        #[arg(long)]
        show_mail: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The supervisors' digest of a day ([[digest]] of config.toml): printed, or queued for
    /// sending (once per group and day, whoever queues it; the running service sends it).
    Digest {
        #[command(flatten)]
        config: ConfigArg,
        /// Queue it in the outbox instead of printing it (needs write access to the state
        /// database, as the service has).
        #[arg(long)]
        send: bool,
        /// The local day it covers (YYYY-MM-DD); default: yesterday.
        #[arg(long)]
        day: Option<String>,
    },
    /// Counts per desk and day from the state database (read-only; needs no passwords).
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// How many days back.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// table (aligned, with totals and the outbox), csv (one line per desk and day) or
        /// json (rows and outbox).
        #[arg(long, value_enum, default_value_t = ticketgate::report::ReportFormat::Table)]
        format: ticketgate::report::ReportFormat,
        /// Instead of the counts: the desk clocks running past their limit, or reaching it
        /// within --within-hours (ticket mail no officer has answered).
        #[arg(long)]
        overdue: bool,
        /// With --overdue: also clocks that fall due within this many hours.
        #[arg(long, default_value_t = 6, requires = "overdue")]
        within_hours: u32,
    },
    /// Writes the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, connect } => check(&config.config, connect),
        Command::Classify {
            config: ConfigArg { config },
            desk,
            json,
            show_mail,
            files,
        } => classify(&config, desk.as_deref(), json, show_mail, &files),
        Command::Run { config, once } => run(&config.config, once),
        Command::Digest { config, send, day } => digest(&config.config, send, day),
        Command::Report {
            config,
            days,
            format,
            overdue,
            within_hours,
        } => report(
            &config.config,
            days,
            format,
            overdue.then_some(within_hours),
        ),
        Command::GenerateDocs { dir } => {
            match ticketgate::docs::generate(<Cli as clap::CommandFactory>::command(), &dir) {
                Ok(files) => {
                    files.iter().for_each(|f| println!("{}", f.display()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ticketgate: cannot write into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads config and rules, or reports every problem of both.
fn load(path: &Path) -> Result<(Config, Rules), Vec<Problem>> {
    load_for(path, config::Purpose::Connect)
}

/// [`load`] for commands that never connect (`classify`, `report`): no passwords, no CA.
fn load_offline(path: &Path) -> Result<(Config, Rules), Vec<Problem>> {
    load_for(path, config::Purpose::Offline)
}

fn load_for(path: &Path, purpose: config::Purpose) -> Result<(Config, Rules), Vec<Problem>> {
    match config::load_for(path, purpose) {
        Ok(cfg) => match rules::load(&cfg.rules_files, &cfg.deployment()) {
            Ok(r) => {
                let missing = helpdesk_values_missing(&cfg, &r);
                if missing.is_empty() {
                    Ok((cfg, r))
                } else {
                    Err(missing)
                }
            }
            Err(e) => Err(e.0),
        },
        Err(config::ConfigError(mut problems, partial)) => {
            if let Some(files) = partial.rules_files {
                let deployment = rules::Deployment {
                    desks: partial.desks,
                };
                if let Err(e) = rules::load(&files, &deployment) {
                    problems.extend(e.0);
                }
            }
            Err(problems)
        }
    }
}

/// Templates that use `{helpdesk_name}`, `{helpdesk_phone}` or `{helpdesk_web}` need the
/// value in config.toml's `[helpdesk]`: else a citizen would read an empty gap. One problem
/// per missing key, at the `[helpdesk]` section.
fn helpdesk_values_missing(cfg: &Config, rules: &Rules) -> Vec<Problem> {
    let line = cfg.helpdesk_line;
    let mut problems = Vec::new();
    for (placeholder, key, value) in [
        ("helpdesk_name", "name", &cfg.helpdesk_name),
        ("helpdesk_phone", "phone", &cfg.helpdesk_phone),
        ("helpdesk_web", "web", &cfg.helpdesk_web),
    ] {
        let users: Vec<&str> = rules
            .templates
            .iter()
            .filter(|(_, t)| {
                ticketgate::compose::placeholders(&t.subject)
                    .iter()
                    .chain(&ticketgate::compose::placeholders(&t.body))
                    .any(|(_, p)| *p == placeholder)
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) && !users.is_empty() {
            problems.push(Problem {
                file: cfg.path.clone(),
                line,
                column: 1,
                message: format!(
                    "[helpdesk] {key} is not set, but template(s) {} use {{{placeholder}}}: set it (e.g. {key} = \"...\")",
                    users.join(", ")
                ),
            });
        }
    }
    problems
}

/// The tokio runtime. The daemon's tasks mostly wait on sockets and the database, so one
/// worker does; mail parsing runs on the blocking pool, at most two threads (the cores of
/// the machines it is sized for). Fewer threads also mean fewer malloc arenas: measured,
/// peak RSS of a 10,000-mail catch-up fell from 29.7 to 25.1 MB. One thread for the short
/// commands.
fn runtime(daemon: bool) -> Option<tokio::runtime::Runtime> {
    let mut b = if daemon {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1).max_blocking_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all()
        .build()
        .map_err(|e| eprintln!("ticketgate: cannot start runtime: {e}"))
        .ok()
}

fn print_problems(problems: &[Problem]) -> ExitCode {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!(
        "ticketgate: {} problem(s) found; nothing was started",
        problems.len()
    );
    ExitCode::from(EX_CONFIG)
}

fn check(path: &Path, connect: bool) -> ExitCode {
    let (cfg, rules) = match load(path) {
        Ok(x) => x,
        Err(problems) => return print_problems(&problems),
    };
    println!(
        "{}: ok: {} desk(s), {} rule(s), {} ticket pattern(s), rules from {}",
        path.display(),
        cfg.desks.len(),
        rules.rules.len(),
        rules.ticket_patterns.len(),
        rules
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in cfg.desks.iter().filter_map(|d| d.password_file_warning()) {
        eprintln!("warning: {w}");
    }
    match cfg.registry.as_ref().map(|r| r.primary().unwrap_or(r)) {
        Some(RegistryConfig::Csv { path, columns }) => {
            // The export as `run` will read it: its tickets, or why not (a warning: the
            // daemon treats an unreadable export as "unavailable", it does not stop).
            match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    ticketgate::registry::csv::parse(path, &bytes, columns, &rules.time_zone)
                        .map_err(|e| e.to_string())
                }) {
                Ok(table) => {
                    println!(
                        "registry: {} ticket(s) in {}, {} line(s) skipped",
                        table.tickets.len(),
                        path.display(),
                        table.skipped
                    );
                    for (line, why) in &table.problems {
                        eprintln!("warning: {}:{line}: skipped: {why}", path.display());
                    }
                }
                Err(e) => eprintln!(
                    "warning: ticket registry {}: {e}; until it can be read, rules see registry = \"unavailable\"",
                    path.display()
                ),
            }
        }
        Some(r) => println!(
            "registry: {}, asked in each batch's read (`check --connect` asks it once)",
            ticketgate::registry::Registry::new(r, rules.time_zone.clone()).describe()
        ),
        None => {}
    }
    if let Some(a) = cfg
        .registry
        .as_ref()
        .and_then(RegistryConfig::acknowledgements)
    {
        println!(
            "registry: tickets learned from acknowledgements in {} of {} (read only; `check --connect` examines it)",
            a.folder, a.login
        );
    }
    if !connect {
        return ExitCode::SUCCESS;
    }
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    let mut failures = runtime.block_on(ticketgate::check::check_connect(&cfg));
    if let Some(r) = cfg.registry.as_ref().and_then(RegistryConfig::primary)
        && !matches!(r, RegistryConfig::Csv { .. })
    {
        let registry = ticketgate::registry::Registry::new(r, rules.time_zone.clone());
        match runtime.block_on(registry.probe()) {
            Ok(said) => println!("registry ok: {said}"),
            Err(why) => {
                failures += 1;
                println!("registry FAILED: {why}");
            }
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_UNAVAILABLE)
    }
}

fn classify(
    path: &Path,
    desk: Option<&str>,
    json: bool,
    show_mail: bool,
    files: &[PathBuf],
) -> ExitCode {
    let (cfg, rules) = match load_offline(path) {
        Ok(x) => x,
        Err(problems) => return print_problems(&problems),
    };
    if let Some(d) = desk
        && cfg.desk(d).is_none()
    {
        let names: Vec<_> = cfg.desks.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "ticketgate: no desk `{d}` in {}; expected one of {}",
            path.display(),
            names.join(", ")
        );
        return ExitCode::from(EX_CONFIG);
    }
    let dir = Directory::new(&cfg, &rules);
    // The registry's CSV export is read as `run` reads it; a database or HTTP service is
    // not asked offline (rules see registry = "off").
    let registry = cfg.registry.as_ref().and_then(|r| {
        let RegistryConfig::Csv { path, columns } = r else {
            eprintln!(
                "ticketgate: the ticket registry ({}) is not consulted offline; rules see registry = \"off\"",
                r.kind()
            );
            return None;
        };
        let registry = ticketgate::registry::csv::CsvRegistry::new(
            path.clone(),
            columns.clone(),
            rules.time_zone.clone(),
        );
        if let ticketgate::registry::csv::Refresh::Failed(e) = registry.refresh() {
            eprintln!("ticketgate: ticket registry unavailable: {e}");
        }
        Some(registry)
    });
    let offline = ticketgate::classify::Offline {
        registry: registry.as_ref(),
        now: ticketgate::clock::unix_now(),
    };
    let mut out = std::io::stdout().lock();
    let mut unreadable = false;
    for file in files {
        let c = classify_file(file, desk, &dir, &rules, offline);
        unreadable |= c
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("cannot read") || e.starts_with("not a regular"));
        let line = if json {
            serde_json::to_string(&c)
                .map(|s| s + "\n")
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}\n"))
        } else {
            c.summary()
        };
        if out.write_all(line.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
        if show_mail && c.error.is_none() {
            let raw = std::fs::read(file).unwrap_or_default();
            let policy = ticketgate::shared::Policy {
                rules: rules.clone(),
                dir: dir.clone(),
            };
            for mail in
                ticketgate::classify::outgoing_mail(&raw, desk, &policy, &cfg.desks, offline)
            {
                if out
                    .write_all(ticketgate::classify::show_mail(&mail).as_bytes())
                    .is_err()
                {
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if unreadable {
        ExitCode::from(EX_NOINPUT)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: &Path, once: bool) -> ExitCode {
    // Before anything else: large mail's memory goes back to the system (issue #13).
    ticketgate::budget::use_fixed_mmap_threshold();
    let (cfg, rules) = match load(path) {
        Ok(x) => x,
        Err(problems) => return print_problems(&problems),
    };
    ticketgate::logging::init_logging(&cfg.logging);
    let Some(runtime) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ticketgate::supervisor::run(cfg, rules, once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ticketgate stopped: {e:#}");
            eprintln!("ticketgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn digest(path: &Path, send: bool, day: Option<String>) -> ExitCode {
    let (cfg, rules) = match load_offline(path) {
        Ok(x) => x,
        Err(problems) => return print_problems(&problems),
    };
    if cfg.digests.is_empty() {
        eprintln!(
            "ticketgate: no [[digest]] in {}: name the supervisors there first",
            path.display()
        );
        return ExitCode::from(EX_CONFIG);
    }
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    let now = ticketgate::clock::unix_now();
    let day = day.unwrap_or_else(|| ticketgate::digest::send::covered_day(now, &rules.time_zone));
    let result = runtime.block_on(async {
        let store = if send {
            ticketgate::store::Store::open(&cfg.database).await
        } else {
            ticketgate::store::Store::open_read_only(&cfg.database).await
        }
        .map_err(|e| e.to_string())?;
        for group in &cfg.digests {
            let d = ticketgate::digest::send::gather(&store, group, &rules, &day, now)
                .await
                .map_err(|e| e.to_string())?;
            if send {
                let out = ticketgate::digest::send::mail(&cfg, group, &d, now)?;
                let queued = store
                    .queue_once(&out, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}: {} ({})",
                    group.name,
                    if queued {
                        "queued"
                    } else {
                        "already queued for this day"
                    },
                    out.id
                );
            } else {
                println!("To: {}", group.supervisors.join(", "));
                println!("Subject: {}\n", ticketgate::digest::subject(&d));
                print!("{}", ticketgate::digest::text(&d));
            }
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ticketgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    path: &Path,
    days: u32,
    format: ticketgate::report::ReportFormat,
    overdue_within_hours: Option<u32>,
) -> ExitCode {
    let (cfg, rules) = match load_offline(path) {
        Ok(x) => x,
        Err(problems) => return print_problems(&problems),
    };
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    let text = match overdue_within_hours {
        Some(hours) => runtime.block_on(ticketgate::report::overdue(&cfg, &rules, hours, format)),
        None => runtime.block_on(ticketgate::report::report(&cfg, &rules, days, format)),
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ticketgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
