//! The supervisor (being written).

use crate::config::{Config, Logging};
use crate::rules::Rules;

pub fn init_logging(_l: &Logging) {}

pub async fn check_connect(_cfg: &Config) -> usize {
    0
}

pub async fn run(_cfg: Config, _rules: Rules, _once: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub async fn report(_cfg: &Config, _days: u32) -> anyhow::Result<String> {
    anyhow::bail!("not yet")
}
