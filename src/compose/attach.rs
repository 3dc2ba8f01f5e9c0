//! The original mail as the note's attachment (message/rfc822 as it is, or base64 when it is
//! not valid as such) and the multipart boundary no part contains.
//!
//! Not here: the note's text and headers (`compose.rs`, `render.rs`, `headers.rs`).

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, SinglePart};

use super::MAX_LINE;

/// How the original is attached.
pub(super) enum Attached {
    /// As message/rfc822, byte for byte: the caller puts the bytes in (its content type).
    AsItIs(ContentType),
    /// As application/octet-stream in base64 (the whole part).
    Encoded(SinglePart),
}

/// The original as message/rfc822, byte for byte (RFC 2046 §5.2.1 allows only 7bit or
/// 8bit there). A mail that is not valid as such (NUL, bare CR or LF, over-long lines) is
/// attached as application/octet-stream in base64 instead, which also keeps every byte.
pub(super) fn attachment(original: &[u8]) -> Attached {
    let mut line = 0usize;
    let mut valid = !original.is_empty();
    let mut prev = 0u8;
    for (i, &b) in original.iter().enumerate() {
        match b {
            0 => valid = false,
            b'\n' if prev != b'\r' => valid = false,
            b'\r' if original.get(i + 1) != Some(&b'\n') => valid = false,
            b'\n' => line = 0,
            b'\r' => {}
            _ => {
                line += 1;
                if line > MAX_LINE {
                    valid = false;
                }
            }
        }
        if !valid {
            break;
        }
        prev = b;
    }
    if valid {
        Attached::AsItIs(ContentType::parse("message/rfc822").unwrap_or(ContentType::TEXT_PLAIN))
    } else {
        let ct = ContentType::parse("application/octet-stream; name=\"original.eml\"")
            .unwrap_or(ContentType::TEXT_PLAIN);
        Attached::Encoded(
            SinglePart::builder()
                .header(ct)
                .header(lettre::message::header::ContentDisposition::attachment(
                    "original.eml",
                ))
                .body(
                    Body::new_with_encoding(original.to_vec(), ContentTransferEncoding::Base64)
                        .unwrap_or_else(Body::new),
                ),
        )
    }
}

/// A multipart boundary from `seed` that occurs in none of `parts`: a sender who plants a
/// `--boundary` line in their mail cannot make it a part of the desk's note (issue #13).
pub(super) fn boundary(seed: u64, parts: &[&[u8]]) -> String {
    let mut n = seed;
    loop {
        let b = format!("=_tg_{n:016x}");
        if !parts
            .iter()
            .any(|p| memchr::memmem::find(p, b.as_bytes()).is_some())
        {
            return b;
        }
        // Another candidate (a 64-bit LCG step: every value comes up once per period).
        n = n
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
}
