//! The digest's text/html part, written for what mail clients' renderers keep: Outlook's
//! Word engine, Thunderbird's Gecko, and webmail sanitisers (Gmail, Roundcube's washtml).
//! Only tables, `h2`/`h3`/`p`/`div` and inline `style` attributes; no `<style>` block (Gmail
//! and several webmails drop it), no `<script>`, no links, no images, no external URL.
//! Every bar is a table cell with `bgcolor` and `width`/`height` attributes (what the Word
//! engine and sanitisers keep; CSS widths and backgrounds on `div`s they drop) holding a
//! `&nbsp;` (an empty cell may collapse), followed by a pale track cell for the rest of
//! the scale (a desk without mail shows an empty scale), and the figure it stands for is written next to
//! it, so a client that draws no bars (Thunderbird's "Simple HTML", a printout without
//! backgrounds) still shows every number. The figures table and the chart are separate
//! tables, as in the text part, so that each stays narrow; in the figures table the overdue
//! count and the share answered in time come right after the desk, so that a narrow
//! message pane (Thunderbird's default vertical layout in a 900-pixel window shows about
//! 380 pixels of it) shows them without scrolling sideways.
//!
//! Not here: the figures (`build`), the text part (`text`), the mail (`send`).

use std::fmt::Write as _;

use super::{Digest, busiest, overdue_of};

/// The longest bar, in pixels (the desk with the most mails).
pub const BAR_PIXELS: u64 = 200;
/// The bars' colour.
pub const BAR_COLOUR: &str = "#1c7ed6";
/// The rest of a bar's scale.
const TRACK_COLOUR: &str = "#e9ecef";
/// The background of a desk's overdue count when it is not zero.
const OVERDUE_COLOUR: &str = "#ffc9c9";
/// Inline style of every cell: clients do not pass the wrapper's font on to table cells
/// (Outlook's Word engine does not), so each cell names it.
const CELL: &str = "font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222222";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One cell: `th` or `td`, aligned, with `extra` attributes, `content` already escaped.
fn cell(out: &mut String, tag: &str, align: &str, extra: &str, content: &str) {
    let _ = write!(
        out,
        "<{tag} align=\"{align}\"{extra} style=\"{CELL}\">{content}</{tag}>"
    );
}

/// The bar of `mails` out of the busiest desk's `most`, in pixels (0: no bar drawn).
pub fn bar_width(mails: u64, most: u64) -> u64 {
    if mails == 0 {
        0
    } else {
        (mails * BAR_PIXELS / most.max(1)).max(2)
    }
}

/// The text/html part: the figures per desk, the chart of mails received, the overdue list.
pub fn html(d: &Digest) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\
         <title>{} — {}</title></head>\n<body>\n<div style=\"{CELL}\">\n\
         <h2 style=\"font-family:Arial,Helvetica,sans-serif;font-size:18px\">{} — {}</h2>\n",
        escape(&d.group),
        escape(&d.day),
        escape(&d.group),
        escape(&d.day)
    );
    // The figures.
    out.push_str("<table cellpadding=\"4\" cellspacing=\"0\" border=\"1\">\n<tr>");
    cell(&mut out, "th", "left", "", "desk");
    for h in [
        "overdue",
        "answered<br>in time",
        "mails",
        "tickets",
        "redirected",
        "broadcast",
    ] {
        cell(&mut out, "th", "right", "", h);
    }
    out.push_str("</tr>\n");
    for x in &d.desks {
        out.push_str("<tr>");
        cell(&mut out, "td", "left", " nowrap", &escape(&x.desk));
        let overdue = if x.overdue.is_empty() {
            String::new()
        } else {
            format!(" bgcolor=\"{OVERDUE_COLOUR}\"")
        };
        cell(
            &mut out,
            "td",
            "right",
            &overdue,
            &x.overdue.len().to_string(),
        );
        let in_time = x
            .in_time_percent()
            .map_or_else(|| "-".to_string(), |p| format!("{p}&nbsp;%"));
        cell(&mut out, "td", "right", "", &in_time);
        for n in [x.mails, x.tickets, x.redirected, x.broadcast] {
            cell(&mut out, "td", "right", "", &n.to_string());
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    // The chart: one row per desk, the bar and its figure.
    out.push_str(
        "<h3 style=\"font-family:Arial,Helvetica,sans-serif;font-size:16px\">Mails received</h3>\n\
         <table cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\n",
    );
    let most = busiest(d);
    for x in &d.desks {
        out.push_str("<tr>");
        cell(
            &mut out,
            "td",
            "left",
            " nowrap",
            &format!("{}&nbsp;&nbsp;", escape(&x.desk)),
        );
        out.push_str("<td align=\"left\" valign=\"middle\" style=\"padding:3px 0\">");
        out.push_str("<table cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr>");
        let width = bar_width(x.mails, most);
        // The bar, then the rest of the scale as a pale track (so a desk without mail
        // shows an empty scale, not nothing).
        for (colour, w) in [(BAR_COLOUR, width), (TRACK_COLOUR, BAR_PIXELS - width)] {
            if w > 0 {
                let _ = write!(
                    out,
                    "<td bgcolor=\"{colour}\" width=\"{w}\" height=\"14\" \
                     style=\"font-size:1px;line-height:1px\">&nbsp;</td>"
                );
            }
        }
        cell(
            &mut out,
            "td",
            "left",
            " nowrap",
            &format!("&nbsp;{}", x.mails),
        );
        out.push_str("</tr></table></td></tr>\n");
    }
    out.push_str("</table>\n");
    // The overdue tickets.
    let overdue = overdue_of(d);
    if overdue.is_empty() {
        out.push_str("<p>No ticket mail is overdue.</p>\n");
    } else {
        out.push_str(
            "<h3 style=\"font-family:Arial,Helvetica,sans-serif;font-size:16px\">Overdue</h3>\n\
             <p>Search the ticket number in the desk's mailbox.</p>\n\
             <table cellpadding=\"4\" cellspacing=\"0\" border=\"1\">\n<tr>",
        );
        cell(&mut out, "th", "left", "", "desk");
        cell(&mut out, "th", "left", "", "ticket");
        cell(&mut out, "th", "right", "", "hours");
        cell(&mut out, "th", "left", "", "sender");
        cell(&mut out, "th", "left", "", "subject");
        out.push_str("</tr>\n");
        for (desk, o) in overdue {
            out.push_str("<tr>");
            cell(&mut out, "td", "left", " nowrap", &escape(desk));
            cell(&mut out, "td", "left", " nowrap", &escape(&o.ticket));
            cell(&mut out, "td", "right", "", &o.age_hours.to_string());
            cell(&mut out, "td", "left", "", &escape(&o.sender));
            cell(&mut out, "td", "left", "", &escape(&o.subject));
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</div>\n</body></html>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::digest::{DeskDay, Overdue, text};

    fn digest() -> Digest {
        let desk = |name: &str, mails, overdue: Vec<Overdue>, answered, in_time| DeskDay {
            desk: name.into(),
            mails,
            tickets: mails / 2,
            redirected: mails / 3,
            broadcast: u64::from(mails > 0),
            answered,
            answered_in_time: in_time,
            overdue,
        };
        Digest {
            group: "GeM desks <Delhi & NCR>".into(),
            day: "2026-11-29".into(),
            desks: vec![
                desk(
                    "bid-ra",
                    41,
                    vec![Overdue {
                        ticket: "2026-4000002".into(),
                        subject: "बोली की स्थिति / bid status, Ticket 2026-4000002".into(),
                        sender: "sunita.devi@up.gov.in".into(),
                        age_hours: 52,
                    }],
                    3,
                    2,
                ),
                desk("payment-process", 7, Vec::new(), 1, 0),
                desk("seller-registration", 0, Vec::new(), 0, 0),
            ],
        }
    }

    /// Every start tag of `html`: its name and its attributes (lower-case names, values
    /// without quotes).
    fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
        let attr = regex::Regex::new(r#"([a-zA-Z-]+)(?:="([^"]*)")?"#).unwrap();
        html.split('<')
            .skip(1)
            .filter(|t| !t.starts_with('/') && !t.starts_with('!'))
            .map(|t| {
                let inside = &t[..t.find('>').unwrap()];
                let (name, rest) = inside.split_once(' ').unwrap_or((inside, ""));
                let attrs = attr
                    .captures_iter(rest)
                    .map(|c| {
                        (
                            c[1].to_ascii_lowercase(),
                            c.get(2).map_or("", |m| m.as_str()).to_string(),
                        )
                    })
                    .collect();
                (name.to_ascii_lowercase(), attrs)
            })
            .collect()
    }

    #[test]
    fn only_what_word_gecko_and_webmail_sanitisers_keep() {
        let d = digest();
        let h = html(&d);
        let lower = h.to_ascii_lowercase();
        for banned in [
            "<style", "<script", "<link", "<img", "<a ", "<svg", "<iframe", "<object", "<form",
            "http://", "https://", "url(", "src=", "href=", "class=", "@import", "@media",
        ] {
            assert!(!lower.contains(banned), "{banned} in:\n{h}");
        }
        let allowed_tags = [
            "html", "head", "meta", "title", "body", "div", "h2", "h3", "p", "br", "table", "tr",
            "th", "td",
        ];
        // CSS that the Word engine, Gmail and Roundcube all keep on these elements.
        let allowed_css = [
            "font-family",
            "font-size",
            "color",
            "line-height",
            "padding",
        ];
        for (name, attrs) in tags(&h) {
            assert!(allowed_tags.contains(&name.as_str()), "<{name}> in:\n{h}");
            for (key, value) in attrs.iter().filter(|(k, _)| k == "style") {
                for decl in value.split(';').filter(|s| !s.trim().is_empty()) {
                    let property = decl.split(':').next().unwrap().trim();
                    assert!(
                        allowed_css.contains(&property),
                        "{key}=\"{value}\" on <{name}>"
                    );
                }
            }
            if name == "td" || name == "th" {
                assert!(
                    attrs
                        .iter()
                        .any(|(k, v)| k == "style" && v.contains("font-family"))
                        || attrs.iter().any(|(k, _)| k == "height")
                        || attrs
                            .iter()
                            .any(|(k, v)| k == "style" && v.contains("padding")),
                    "a text cell names its font (not inherited in Outlook): {attrs:?}"
                );
            }
        }
        // Every bar: a td with bgcolor, width and height attributes, and content (an empty
        // cell may collapse); one per desk that received mail; widths to scale.
        let bars: Vec<Vec<(String, String)>> = tags(&h)
            .into_iter()
            .filter(|(n, a)| n == "td" && a.iter().any(|(k, v)| k == "bgcolor" && v == BAR_COLOUR))
            .map(|(_, a)| a)
            .collect();
        assert_eq!(bars.len(), 2, "no bar for a desk without mail:\n{h}");
        let width = |a: &[(String, String)]| {
            a.iter()
                .find(|(k, _)| k == "width")
                .map(|(_, v)| v.parse::<u64>().unwrap())
        };
        assert_eq!(width(&bars[0]), Some(BAR_PIXELS));
        assert_eq!(width(&bars[1]), Some(7 * BAR_PIXELS / 41));
        assert!(bars.iter().all(|a| a.iter().any(|(k, _)| k == "height")));
        assert_eq!(
            h.matches("height=\"14\"").count(),
            h.matches("style=\"font-size:1px;line-height:1px\">&nbsp;</td>")
                .count(),
            "every bar and track holds a non-breaking space"
        );
        // What a narrow message pane shows first: the desk, then its overdue count and share
        // answered in time.
        let at = |th: &str| h.find(&format!(">{th}</th>")).unwrap();
        assert!(at("desk") < at("overdue") && at("overdue") < at("answered<br>in time"));
        assert!(at("answered<br>in time") < at("mails"), "{h}");
        // Escaped, and non-ASCII passed through as UTF-8 (the MIME part says utf-8).
        assert!(h.contains("GeM desks &lt;Delhi &amp; NCR&gt;"), "{h}");
        assert!(h.contains("बोली की स्थिति"), "{h}");
        assert!(h.contains("charset=utf-8"), "{h}");
    }

    #[test]
    fn the_text_part_carries_the_same_figures_as_the_html() {
        let d = digest();
        let (h, t) = (html(&d), text(&d));
        for x in &d.desks {
            // In the HTML: the desk's row of figures, each in its own cell.
            let cells: String = [x.mails, x.tickets, x.redirected, x.broadcast]
                .iter()
                .map(|n| format!("<td align=\"right\" style=\"{CELL}\">{n}</td>"))
                .collect();
            assert!(h.contains(&cells), "{} figures in:\n{h}", x.desk);
            // In the text: the same figures on the desk's line, in the same order.
            let line = t
                .lines()
                .find(|l| l.split_whitespace().next() == Some(x.desk.as_str()))
                .unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            let figures = [x.mails, x.tickets, x.redirected, x.broadcast].map(|n| n.to_string());
            assert_eq!(
                &words[1..5],
                &figures.each_ref().map(String::as_str),
                "{line}"
            );
            assert_eq!(words[5], x.overdue.len().to_string(), "{line}");
            let percent = x
                .in_time_percent()
                .map_or("-".to_string(), |p| p.to_string());
            assert_eq!(words[6], percent, "{line}");
            let shown = x
                .in_time_percent()
                .map_or("-".to_string(), |p| format!("{p}&nbsp;%"));
            assert!(h.contains(&format!(">{shown}</td>")), "{shown} in:\n{h}");
            // The chart's figure next to the bar, in both.
            assert!(h.contains(&format!(">&nbsp;{}</td>", x.mails)), "{h}");
        }
        {
            let (desk, o) = ("bid-ra", &d.desks[0].overdue[0]);
            assert!(
                t.contains(&format!(
                    "{desk}: ticket {} — {} h — {} — {}",
                    o.ticket, o.age_hours, o.sender, o.subject
                )),
                "{t}"
            );
            assert!(h.contains(&o.ticket) && h.contains(&format!(">{}</td>", o.age_hours)));
        }
        assert_eq!(bar_width(0, 41), 0);
        assert_eq!(
            bar_width(1, 1_000),
            2,
            "a desk with mail always has a visible bar"
        );
    }
}
