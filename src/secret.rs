//! Secrets of config.toml (desk passwords, the ticket registry's database password and
//! token): the [`Secret`] type that never prints, where they are read from (a file, an
//! environment variable, a systemd credential) and the environment that is read. Shared by
//! `config` and `registry`; nothing here parses config.toml.

use std::fmt;
use std::path::Path;

/// A password. Its `Debug` and `Display` print `***`, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that needs it (login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where secrets come from; injected so that tests need not touch the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Where one secret is read from, with the config key that names it: `*_file` (relative
/// to config.toml's directory), `*_env`, or `*_credential` (a systemd credential's name).
#[derive(Debug, Clone, Copy)]
pub enum SecretFrom<'a> {
    File(&'static str, &'a Path),
    Env(&'static str, &'a str),
    Credential(&'static str, &'a str),
}

/// Reads a secret (`what`: "password", "token", for messages) from where `from` says.
///
/// # Errors
/// The config key and why: the file cannot be read, the variable is not set, or
/// `CREDENTIALS_DIRECTORY` is not set or lacks the credential. The secret is never in it.
pub fn read_secret(
    from: SecretFrom<'_>,
    what: &str,
    base: &Path,
    env: &dyn Environment,
) -> Result<Secret, (&'static str, String)> {
    let read = |p: &Path, key: &'static str| -> Result<Secret, (&'static str, String)> {
        std::fs::read_to_string(p)
            .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
            .map_err(|e| (key, format!("cannot read {what} file {}: {e}", p.display())))
    };
    match from {
        SecretFrom::File(key, f) => read(&base.join(f), key),
        SecretFrom::Env(key, name) => env
            .var(name)
            .map(Secret::new)
            .ok_or((key, format!("environment variable {name} is not set"))),
        SecretFrom::Credential(key, name) => {
            let dir = env.var("CREDENTIALS_DIRECTORY").ok_or((
                key,
                format!("CREDENTIALS_DIRECTORY is not set (systemd LoadCredential={name}:/path, or export it to a directory holding a file `{name}`)"),
            ))?;
            read(&Path::new(&dir).join(name), key)
        }
    }
}
