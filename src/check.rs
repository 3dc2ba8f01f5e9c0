//! `ticketgate check --connect`: logs in to every desk over IMAP and SMTP once (and to the
//! helpdesk mailbox of `[registry.acknowledgements]`, EXAMINEd) and prints what it found,
//! one line per check. The daemon's own sessions are `watcher`'s and
//! `smtp`'s.

use crate::config::Config;
use crate::imap::{DeskSession, Endpoint};
use crate::smtp::Mailer;

/// Logs in to every desk over IMAP and SMTP; prints one line per check; returns the failures.
pub async fn check_connect(cfg: &Config) -> usize {
    let mut failures = 0;
    let ep = match Endpoint::from_config(cfg) {
        Ok(e) => e,
        Err(e) => {
            println!("imap: cannot set up TLS for IMAP: {e}");
            return cfg.desks.len();
        }
    };
    let mailer = Mailer::new(cfg);
    for desk in &cfg.desks {
        match DeskSession::connect(&ep, &desk.login, desk.password.expose()).await {
            Ok(mut s) => match s.select(&desk.mailbox).await {
                Ok(st) => {
                    println!(
                        "{}: imap ok: {} has {} mail(s), UIDVALIDITY {}{}",
                        desk.name,
                        desk.mailbox,
                        st.exists,
                        st.uidvalidity,
                        if st.keywords {
                            ""
                        } else {
                            "; the server does not keep keywords ($Ticket, $NoTicket ...): decisions show as folders and \\Flagged only"
                        }
                    );
                    let _ = s.logout().await;
                }
                Err(e) => {
                    failures += 1;
                    println!(
                        "{}: imap FAILED: cannot select {}: {e}",
                        desk.name, desk.mailbox
                    );
                }
            },
            Err(e) => {
                failures += 1;
                println!("{}: imap FAILED: {e}", desk.name);
            }
        }
        match &mailer {
            Ok(m) => match m.test_desk(&desk.name).await {
                Ok(()) => println!("{}: smtp ok", desk.name),
                Err(e) => {
                    failures += 1;
                    println!("{}: smtp FAILED: {e}", desk.name);
                }
            },
            Err(e) => {
                failures += 1;
                println!("{}: smtp FAILED: {e}", desk.name);
            }
        }
    }
    match crate::acklearn::probe(cfg, &ep).await {
        Some(Ok(said)) => println!("acknowledgements: imap ok: {said}"),
        Some(Err(why)) => {
            failures += 1;
            println!("acknowledgements: imap FAILED: {why}");
        }
        None => {}
    }
    failures
}
