//! Suggesting the desk whose nature of issue fits a mail's text best, from the weighted
//! phrases of each desk in the rules (for misrouted and broadcast mail).

use crate::rules::DeskProfile;
use crate::rules::phrases::PhraseIndex;

/// A desk must score at least this much to be suggested.
const MIN_SCORE: u32 = 3;
/// Each phrase counts at most this many times.
const MAX_HITS: usize = 3;

/// The best-fitting desk's name; `None` when no desk scores enough or two desks tie.
/// `index` is the rules' [`PhraseIndex`] of `desks`: a phrase runs only over the texts
/// where it can match.
pub fn suggest_desk(
    subject: &str,
    body: &str,
    desks: &[DeskProfile],
    index: &PhraseIndex,
) -> Option<String> {
    let phrases = desks.iter().map(|d| d.phrases.len()).sum();
    let in_subject = index.candidates(subject, phrases);
    let in_body = index.candidates(body, phrases);
    let mut n = 0;
    let mut scores: Vec<(u32, &str)> = desks
        .iter()
        .map(|d| {
            let score: u32 = d
                .phrases
                .iter()
                .map(|(re, w)| {
                    let count = |text: &str, can: &[bool]| {
                        if can.get(n).copied().unwrap_or(true) {
                            re.find_iter(text).take(MAX_HITS).count()
                        } else {
                            0
                        }
                    };
                    let hits = 2 * count(subject, &in_subject) + count(body, &in_body);
                    n += 1;
                    w.saturating_mul(u32::try_from(hits).unwrap_or(u32::MAX))
                })
                .sum();
            (score, d.name.as_str())
        })
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    match scores.as_slice() {
        [(best, name), rest @ ..]
            if *best >= MIN_SCORE && rest.first().is_none_or(|(second, _)| second < best) =>
        {
            Some((*name).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Deployment, compile::compile_str};

    fn gem() -> (Vec<DeskProfile>, PhraseIndex) {
        let d = Deployment::default();
        let rules = compile_str(
            std::path::Path::new("gem.toml"),
            include_str!("../../rules/gem.toml"),
            &d,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (rules.desks, rules.phrase_index)
    }

    #[test]
    fn the_gem_desks_are_told_apart() {
        let (desks, index) = gem();
        for (subject, body, want) in [
            (
                "Reverse auction not opening",
                "The RA for bid GEM/2024/B/1234567 did not start.",
                Some("bid-ra"),
            ),
            (
                "Payment not received",
                "We have not received the payment for our invoice; PFMS shows pending.",
                Some("payment-process"),
            ),
            (
                "Budget blocking",
                "Unable to block budget for the purchase",
                Some("payment-process"),
            ),
            (
                "CRAC not generated",
                "The consignee has not generated CRAC for the supply order.",
                Some("order-process"),
            ),
            (
                "Catalogue rejected",
                "Our product catalogue was rejected in the category Office Chairs.",
                Some("product-upload"),
            ),
            (
                "Seller registration",
                "Cannot complete seller registration, PAN verification fails.",
                Some("seller-registration"),
            ),
            (
                "Buyer registration",
                "Primary user cannot complete buyer registration.",
                Some("buyer-registration"),
            ),
            (
                "Direct purchase L1",
                "L1 selection in direct purchase shows the wrong seller.",
                Some("direct-purchase"),
            ),
            ("Hello", "Please help me.", None),
        ] {
            assert_eq!(
                suggest_desk(subject, body, &desks, &index).as_deref(),
                want,
                "{subject}"
            );
            // The same without the index: every phrase runs over both texts.
            let none = PhraseIndex::default();
            assert_eq!(
                suggest_desk(subject, body, &desks, &none).as_deref(),
                want,
                "{subject}"
            );
        }
    }
}
