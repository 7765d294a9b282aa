//! Entity tags: strong validators named by the SHA-256 of the bytes they tag, and the
//! `If-None-Match` comparison.

use sha2::{Digest as _, Sha256};

use crate::store::hex;

/// Hex digits of the SHA-256 a tag keeps: 128 bits, far beyond any chance collision
/// between two files of one URL, as a strong validator needs. Not the whole 256: every
/// media answer carries its tag, and HTTP/3's header compression (QPACK in h3 0.0.8)
/// Huffman-codes each literal byte by byte at ~175 instructions a byte on the node and
/// again on the phone; 32 fewer bytes a thumbnail is ~5,600 instructions on each side.
const TAG_HEX_DIGITS: usize = 32;

/// The tag of bytes whose SHA-256 is `sha256_hex` (as the store keeps it), quoted.
pub fn from_sha256_hex(sha256_hex: &str) -> String {
    let digits = sha256_hex.get(..TAG_HEX_DIGITS).unwrap_or(sha256_hex);
    format!("\"{digits}\"")
}

/// The tag of `bytes`.
pub fn of_bytes(bytes: &[u8]) -> String {
    from_sha256_hex(&hex(&Sha256::digest(bytes)))
}

/// Whether `If-None-Match` (`"a", W/"b"` or `*`) names `etag`. Weak comparison, as RFC
/// 9110 §13.1.2 asks of `If-None-Match`.
pub fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_the_quoted_first_128_bits_of_the_sha256() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let tag = of_bytes(b"abc");
        assert_eq!(tag, "\"ba7816bf8f01cfea414140de5dae2223\"");
        assert_eq!(from_sha256_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), tag);
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let etag = "\"ba7816bf8f01cfea414140de5dae2223\"";
        assert!(matches(etag, etag));
        assert!(matches(&format!("W/{etag}"), etag));
        assert!(matches(&format!("\"other\", {etag}"), etag));
        assert!(matches("*", etag));
        assert!(!matches("\"other\"", etag));
        assert!(!matches("\"ba7816bf8f01cfea414140de5dae222\"", etag), "a prefix is not the tag");
        assert!(!matches("", etag));
    }
}
