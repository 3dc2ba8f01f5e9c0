//! `[[digest]]` of config.toml: the groups of desks whose supervisors get a daily digest,
//! when (local time in the rules' time zone) and from which desk's account it is sent.
//! Each wrong value is a problem at its file:line:column.

use serde::Deserialize;
use toml::Spanned;

use crate::rules::schema::{Problem, Source};

/// One digest: a group of desks and who gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestGroup {
    /// Shown in the subject (`GeM escalation desks`); also the digest's identity for
    /// "once per day".
    pub name: String,
    /// Desk names, in config order (all desks when the section names none).
    pub desks: Vec<String>,
    /// Addresses of the supervisors.
    pub supervisors: Vec<String>,
    /// When it is sent each day, local time.
    pub time: jiff::civil::Time,
    /// The desk whose account sends it (authenticated as that desk).
    pub from_desk: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    name: String,
    supervisors: Vec<String>,
    #[serde(default)]
    desks: Vec<String>,
    #[serde(default = "default_time")]
    time: String,
    from_desk: Option<String>,
}

fn default_time() -> String {
    "09:00".into()
}

/// Checks every `[[digest]]` against `desks` (the desk names of config.toml).
///
/// # Errors
/// Every problem found, each at its key: a section that does not parse, no supervisor or
/// one that is not an address, a desk config.toml does not have, a time that is not
/// `HH:MM`, two digests of one name.
pub fn parse(
    src: &Source<'_>,
    raw: Vec<Spanned<toml::Value>>,
    desks: &[String],
) -> Result<Vec<DigestGroup>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut groups: Vec<DigestGroup> = Vec::new();
    for v in raw {
        let start = v.span().start;
        let r: RawDigest = match src.section(v, "[[digest]]") {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let before = problems.len();
        if r.supervisors.is_empty() {
            problems.push(src.problem_at_key(
                start,
                "supervisors",
                "supervisors is empty: name who gets the digest (supervisors = [\"name@example.in\"])",
            ));
        }
        for s in &r.supervisors {
            if !crate::rules::compile::looks_like_address(s) {
                problems.push(src.problem_at_key(
                    start,
                    "supervisors",
                    format!("`{s}` is not a mail address"),
                ));
            }
        }
        for d in &r.desks {
            if !desks.contains(d) {
                problems.push(src.problem_at_key(
                    start,
                    "desks",
                    format!(
                        "no desk `{d}` in config.toml; expected one of {}",
                        desks.join(", ")
                    ),
                ));
            }
        }
        let group_desks = if r.desks.is_empty() {
            desks.to_vec()
        } else {
            desks
                .iter()
                .filter(|d| r.desks.contains(d))
                .cloned()
                .collect()
        };
        let time = r.time.trim().parse::<jiff::civil::Time>();
        if time.is_err() {
            problems.push(src.problem_at_key(
                start,
                "time",
                format!(
                    "`{}` is not a time of day; expected \"HH:MM\" such as \"09:00\"",
                    r.time
                ),
            ));
        }
        let from_desk = r
            .from_desk
            .clone()
            .or_else(|| group_desks.first().cloned())
            .unwrap_or_default();
        if !desks.contains(&from_desk) {
            problems.push(src.problem_at_key(
                start,
                "from_desk",
                format!("no desk `{from_desk}` to send the digest from"),
            ));
        }
        if groups.iter().any(|g| g.name == r.name) {
            problems.push(src.problem_at_key(
                start,
                "name",
                format!("two digests are named `{}`", r.name),
            ));
        }
        if problems.len() == before
            && let Ok(time) = time
        {
            groups.push(DigestGroup {
                name: r.name,
                desks: group_desks,
                supervisors: r.supervisors,
                time,
                from_desk,
            });
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(problems)
    }
}
