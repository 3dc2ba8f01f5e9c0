//! Which of the desks' phrases can match a text, found in one pass: every phrase's regex
//! (case-insensitive) is run only over texts that hold one of the literals each of its
//! matches must begin with. Built once when the rules are compiled; the scoring itself is
//! `facts::suggest`'s. A phrase whose matches have no such literals (`\w+`, a non-ASCII
//! literal) is always run.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::rules::DeskProfile;

/// Characters outside ASCII that `(?i)` matches to ASCII letters (Unicode simple case
/// folding): LATIN SMALL LETTER LONG S is `s`, KELVIN SIGN is `k`. A text holding one is
/// searched with every phrase, since the ASCII case-insensitive literals would miss them.
const FOLDS_TO_ASCII: [&str; 2] = ["\u{17F}", "\u{212A}"];

/// The literals of every desk phrase, in one automaton (see the module comment).
#[derive(Debug, Clone, Default)]
pub struct PhraseIndex {
    /// ASCII case-insensitive; its pattern `i` is `owner[i]`'s literal, or one of
    /// [`FOLDS_TO_ASCII`] when `owner[i]` is `None`. `None`: no phrase has literals.
    automaton: Option<AhoCorasick>,
    owner: Vec<Option<usize>>,
    /// Phrases (numbered over all desks, in order) that run on every text.
    always: Vec<usize>,
    /// Phrases indexed, all desks together.
    count: usize,
}

impl PhraseIndex {
    /// The index of `desks`' phrases, numbered desk by desk in order.
    pub fn new(desks: &[DeskProfile]) -> PhraseIndex {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut owner = Vec::new();
        let mut always = Vec::new();
        let mut count = 0;
        for (re, _) in desks.iter().flat_map(|d| &d.phrases) {
            match literals(re) {
                Some(lits) => {
                    for l in lits {
                        needles.push(l);
                        owner.push(Some(count));
                    }
                }
                None => always.push(count),
            }
            count += 1;
        }
        for f in FOLDS_TO_ASCII {
            needles.push(f.as_bytes().to_vec());
            owner.push(None);
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&needles)
            .or_else(|_| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&needles)
            })
            .ok();
        if automaton.is_none() {
            // Cannot happen with these few literals; then every phrase runs.
            always = (0..count).collect();
        }
        PhraseIndex {
            automaton,
            owner,
            always,
            count,
        }
    }

    /// For each of `phrases` phrases (all desks, in order): whether it can match `text`.
    /// Every phrase can when this index was built for other phrases than asked for.
    pub fn candidates(&self, text: &str, phrases: usize) -> Vec<bool> {
        if phrases != self.count {
            return vec![true; phrases];
        }
        let mut can = vec![false; phrases];
        for &i in &self.always {
            can[i] = true;
        }
        let Some(ac) = &self.automaton else {
            return can;
        };
        let mut open = can.iter().filter(|c| !**c).count();
        for m in ac.find_overlapping_iter(text) {
            if open == 0 {
                break;
            }
            match self.owner.get(m.pattern().as_usize()).copied().flatten() {
                Some(i) => {
                    if !can[i] {
                        can[i] = true;
                        open -= 1;
                    }
                }
                None => return vec![true; phrases],
            }
        }
        can
    }
}

/// The literals every match of `re` begins with (ASCII, matched case-insensitively), or
/// `None` when it has none that bound it: compiled as `(?i)` and the phrase, the phrase is
/// read without that flag, whose case variants the ASCII case-insensitive search covers.
fn literals(re: &Regex) -> Option<Vec<Vec<u8>>> {
    let text = re.as_str().strip_prefix("(?i)")?;
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(text)
        .ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty()
        || lits
            .iter()
            .any(|l| l.is_empty() || !l.as_bytes().is_ascii())
    {
        return None;
    }
    let mut out: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    out.sort();
    out.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(phrases: &[&str]) -> DeskProfile {
        DeskProfile {
            name: "d".into(),
            nature: String::new(),
            phrases: phrases
                .iter()
                .map(|p| {
                    let re = Regex::new(&format!("(?i){p}")).unwrap_or_else(|e| panic!("{e}"));
                    (re, 1)
                })
                .collect(),
        }
    }

    #[test]
    fn only_phrases_whose_literals_occur_are_candidates() {
        let d = desk(&[
            r"\bbuyer\b",
            "log-?in|sign[- ]?in|password|OTP",
            r"GEM/20[0-9]{2}/[BR]/[0-9]+",
            r"\w+ings",
            "टिकट",
        ]);
        let index = PhraseIndex::new(std::slice::from_ref(&d));
        assert_eq!(
            index.candidates("A BUYER asked", 5),
            [true, false, false, true, true]
        );
        assert_eq!(
            index.candidates("my otp and gem/2024/b/1", 5),
            [false, true, true, true, true]
        );
        // The long s and the Kelvin sign match `s` and `k` under (?i): every phrase runs.
        assert_eq!(index.candidates("pa\u{17F}\u{17F}word", 5), [true; 5]);
        assert!(d.phrases[1].0.is_match("pa\u{17F}\u{17F}word"));
        // Another set of phrases than the index was built for: all run.
        assert_eq!(index.candidates("", 2), [true, true]);
    }

    #[test]
    fn candidates_never_miss_a_match() {
        let d = desk(&[
            r"\bbuyer\b",
            "register(ed|ing)? as (a )?buyer",
            "catalog(ue)?",
            r"\bHoD\b",
            r"(accept|reject)(ed|ing)? (the )?(order|product|goods)",
            r"payment[^\n]{0,80}(not|never) (yet )?(been )?(received|credited|released)",
            "blo\u{212A}",
        ]);
        let index = PhraseIndex::new(std::slice::from_ref(&d));
        for text in [
            "REGISTERED AS A BUYER",
            "the hod, the CATALOGUE",
            "Rejecting the goods; payment has not yet been received",
            "bloK",
            "nothing here",
        ] {
            let can = index.candidates(text, d.phrases.len());
            for (i, (re, _)) in d.phrases.iter().enumerate() {
                assert!(can[i] || !re.is_match(text), "{} in {text}", re.as_str());
            }
        }
    }
}
