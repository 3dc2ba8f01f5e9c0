//! The GeM fixture, one copy for every kind of test: the seven desks of the Government
//! e-Marketplace deployment (name in config.toml, mailbox user), the helpdesk, the shipped
//! rules/gem.toml, and a whole config for code that touches no server (classify, extract,
//! compose). Used by the integration tests (tests/support re-exports it; the mail stack's
//! domain is gem.test), the unit tests (src/lib.rs includes it under `cfg(test)`),
//! benches/classify.rs and fuzz/src/lib.rs (both with `#[path]`). Std only, so that each of
//! those can include it. Deployments on a test mail stack (ports, TLS, credential files) are
//! not here: tests/faultkit writes them.
#![allow(dead_code, reason = "each includer uses part of the fixture")]

use std::path::{Path, PathBuf};

/// The seven GeM desks: (desk name in config.toml, mailbox user = the local part of its
/// address).
pub const DESKS: [(&str, &str); 7] = [
    ("buyer-registration", "buyer.registration"),
    ("seller-registration", "seller.registration"),
    ("product-upload", "upload.product"),
    ("direct-purchase", "direct.purchase"),
    ("bid-ra", "bid.ra"),
    ("order-process", "order.process"),
    ("payment-process", "payment.process"),
];

/// The production domain of the desks' addresses (the test mail stack's is `gem.test`).
pub const DOMAIN: &str = "gem.gov.in";
/// The helpdesk's production address, phone and web form, as in the shipped config.toml.
pub const HELPDESK: &str = "helpdesk-gem@gov.in";
pub const HELPDESK_PHONE: &str = "1800-419-3436";
pub const HELPDESK_WEB: &str = "gem.gov.in/gemtickets";

/// The desk names, in [`DESKS`] order.
pub fn desk_names() -> Vec<String> {
    DESKS.iter().map(|(name, _)| (*name).to_string()).collect()
}

/// (desk name, `user@domain`) of the seven desks.
pub fn addresses(domain: &str) -> Vec<(String, String)> {
    DESKS
        .iter()
        .map(|(name, user)| ((*name).to_string(), format!("{user}@{domain}")))
        .collect()
}

/// rules/gem.toml of the checkout at `repo`.
pub fn rules_file(repo: &Path) -> PathBuf {
    repo.join("rules/gem.toml")
}

/// The `[desk.NAME]` sections of the seven desks at `domain`; `password(user)` is each
/// desk's password line, e.g. `password_env = "TG_PW"`.
pub fn desk_sections(domain: &str, password: impl Fn(&str) -> String) -> String {
    let mut text = String::new();
    for (name, user) in DESKS {
        text.push_str(&format!(
            "[desk.{name}]\naddress = \"{user}@{domain}\"\nlogin = \"{user}\"\n{}\n\n",
            password(user)
        ));
    }
    text
}

/// A whole config.toml for code that touches no server: plain IMAP and SMTP on 127.0.0.1,
/// the helpdesk with phone and web, the shipped rules of the checkout at `repo`, and the
/// seven desks at gem.gov.in with their password in `$TG_PW` (set it, to anything, when
/// the config is parsed).
pub fn offline_config(repo: &Path) -> String {
    format!(
        "[imap]\nhost = \"127.0.0.1\"\nsecurity = \"plain\"\n[smtp]\nhost = \"127.0.0.1\"\nsecurity = \"plain\"\n\
         [helpdesk]\naddress = \"{HELPDESK}\"\nphone = \"{HELPDESK_PHONE}\"\nweb = \"{HELPDESK_WEB}\"\n\
         [rules]\nfiles = [\"{}\"]\n\n{}",
        rules_file(repo).display(),
        desk_sections(DOMAIN, |_| "password_env = \"TG_PW\"".to_string())
    )
}
