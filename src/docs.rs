//! The man pages and shell completions, generated from the command line's clap definition
//! (clap_mangen, clap_complete) by the hidden `ticketgate generate-docs DIR`, which
//! scripts/package-deb runs to put them in the Debian package. The definition itself is in
//! `main.rs`; nothing here parses arguments.

use std::path::Path;

use clap_complete::Shell;

/// Sections of ticketgate(1) that the command line cannot tell (roff).
const MORE: &str = r#".SH FILES
.TP
/etc/ticketgate/config.toml
Servers, desk accounts, helpdesk, state database, logging (readable by the service's
user ticketgate; no passwords). Values still "CHANGE-ME: ..." are named by \fBticketgate check\fR.
.TP
/etc/ticketgate/rules/gem.toml
Ticket patterns, broadcast settings, rules and templates; \fBsystemctl reload ticketgate\fR
applies changes, or keeps the old rules and fails when the new ones have problems.
.TP
/etc/ticketgate/credentials/NAME
One password per desk account (0600 root), given to the service as the credential
password_NAME (password_credential in config.toml).
.TP
/var/lib/ticketgate/state.db
The SQLite state database (journal, outbox, progress); removed by \fBapt purge\fR.
.SH ENVIRONMENT
.TP
TICKETGATE_DATABASE
Overrides [state] database of config.toml; set it only on purpose (a drop-in).
.TP
CREDENTIALS_DIRECTORY
Where password_credential names are read from (set by systemd).
.TP
RUST_LOG
Overrides [logging] level.
.SH EXIT STATUS
0 success; 66 a file to classify cannot be read; 69 a server refused \fBcheck \-\-connect\fR;
78 a problem in config.toml or the rules (each named with file:line:column; systemd does not
restart the service for it); 1 any other failure.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1) (journalctl \-u ticketgate DESK=bid\-ra),
/usr/share/doc/ticketgate/README.md
"#;

/// Writes into `dir`: `man/ticketgate.1` and `man/ticketgate-SUBCOMMAND.1` for every visible
/// subcommand, and `completions/ticketgate.bash`, `completions/_ticketgate` (zsh) and
/// `completions/ticketgate.fish`. Returns the files written.
pub fn generate(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let mut cmd = cmd;
    cmd.build();
    // After build(), a subcommand's display name is `ticketgate-check` and its bin name
    // `ticketgate check`: the page's title and synopsis.
    let mut page = |c: &clap::Command| -> std::io::Result<()> {
        let name = c.get_display_name().unwrap_or(c.get_name());
        let path = man.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.clone()).render(&mut buf)?;
        if c.get_display_name().is_none() {
            buf.extend_from_slice(MORE.as_bytes());
        }
        std::fs::write(&path, buf)?;
        written.push(path);
        Ok(())
    };
    page(&cmd)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        page(sub)?;
    }
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "ticketgate",
            &completions,
        )?);
    }
    Ok(written)
}
