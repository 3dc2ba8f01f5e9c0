//! A desk's password from the one source its [desk.NAME] section names (file, environment
//! variable or systemd credential), read through `crate::secret`.
//!
//! Not here: the rest of a desk's section (`config.rs`), reading secrets (`crate::secret`).

use std::path::Path;

use super::raw::RawDesk;
use crate::secret::{Environment, Secret, SecretFrom, read_secret};
pub(super) fn secret(
    d: &RawDesk,
    base: &Path,
    env: &dyn Environment,
    offline: bool,
) -> Result<Secret, (&'static str, String)> {
    let set = [
        d.password_file.is_some(),
        d.password_env.is_some(),
        d.password_credential.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err((
            "login",
            "set exactly one of password_file, password_env or password_credential (passwords are never written inline)".into(),
        ));
    }
    if offline {
        return Ok(Secret::new(""));
    }
    let from = if let Some(f) = &d.password_file {
        SecretFrom::File("password_file", f)
    } else if let Some(name) = &d.password_env {
        SecretFrom::Env("password_env", name)
    } else {
        SecretFrom::Credential(
            "password_credential",
            d.password_credential.as_deref().unwrap_or_default(),
        )
    };
    read_secret(from, "password", base, env)
}
