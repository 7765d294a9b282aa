//! Text rules: handles, hashtags and the search terms of captions and queries; sizes
//! in the units people read.

use std::collections::BTreeSet;

pub const HANDLE_CHARS_MIN: usize = 3;
pub const HANDLE_CHARS_MAX: usize = 30;
pub const TAGS_PER_POST_MAX: usize = 30;
const TERM_CHARS_MAX: usize = 40;

/// Handles are lowercase ASCII letters, digits and `_`, so they are safe in URLs,
/// mDNS names and file names, and cannot be confused with one another.
pub fn check_handle(handle: &str) -> Result<(), InvalidHandle> {
    let length_ok = (HANDLE_CHARS_MIN..=HANDLE_CHARS_MAX).contains(&handle.len());
    let chars_ok = handle.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if length_ok && chars_ok {
        Ok(())
    } else {
        Err(InvalidHandle)
    }
}

/// A handle that breaks the rule of `check_handle`; the text states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a handle is {HANDLE_CHARS_MIN} to {HANDLE_CHARS_MAX} characters of a-z, 0-9 and _")]
pub struct InvalidHandle;

/// The `#tags` of a caption, lowercased, in order of first use, without repeats.
pub fn hashtags(caption: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut tags = Vec::new();
    for (index, _) in caption.match_indices('#') {
        let tag: String = caption[index + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .flat_map(char::to_lowercase)
            .collect();
        if !tag.is_empty() && tag.chars().count() <= TERM_CHARS_MAX && seen.insert(tag.clone()) {
            tags.push(tag);
            if tags.len() == TAGS_PER_POST_MAX {
                break;
            }
        }
    }
    tags
}

/// Most `@handles` of one caption that notify their users.
pub const MENTIONS_PER_POST_MAX: usize = 30;

/// The `@handles` a caption mentions, lowercased, in order of first use, without
/// repeats: `@` at the start or after a character that cannot be in a handle (so an
/// e-mail address mentions no one), followed by a valid handle.
pub fn mentions(caption: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut handles = Vec::new();
    for (index, _) in caption.match_indices('@') {
        let after_handle_char =
            caption[..index].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@');
        if after_handle_char {
            continue;
        }
        let handle: String = caption[index + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if check_handle(&handle).is_ok() && seen.insert(handle.clone()) {
            handles.push(handle);
            if handles.len() == MENTIONS_PER_POST_MAX {
                break;
            }
        }
    }
    handles
}

/// Lowercased words of a text (a tag's word counts as a word too), without repeats.
pub fn words(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(str::to_lowercase)
        .filter(|word| !word.is_empty() && word.chars().count() <= TERM_CHARS_MAX)
        .filter(|word| seen.insert(word.clone()))
        .collect()
}

/// Index terms for a post: `w:<word>` for each word and `t:<tag>` for each tag.
pub fn index_terms(caption: &str, tags: &[String]) -> Vec<String> {
    let mut terms: Vec<String> = words(caption).into_iter().map(|word| format!("w:{word}")).collect();
    terms.extend(tags.iter().map(|tag| format!("t:{tag}")));
    terms
}

/// Terms of a search query: `#tag` matches tags, anything else caption words.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms = BTreeSet::new();
    for part in query.split_whitespace() {
        if let Some(tag) = part.strip_prefix('#') {
            for tag in words(tag) {
                terms.insert(format!("t:{tag}"));
            }
        } else {
            for word in words(part) {
                terms.insert(format!("w:{word}"));
            }
        }
    }
    terms.into_iter().collect()
}

/// The word a search matches handles by: the first word that is no `#tag`, without
/// a leading `@`, lowercased (empty: match no handle).
pub fn handle_prefix(query: &str) -> String {
    query.split_whitespace().find(|word| !word.starts_with('#')).unwrap_or("").trim_start_matches('@').to_lowercase()
}

/// Bytes in the units people read: `1.5 GiB`, `820 MiB`, `12 KiB`, `96 B`.
pub fn readable_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value >= 10.0 { format!("{value:.0} {unit}") } else { format!("{value:.1} {unit}") };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_matched_by_the_first_plain_word() {
        assert_eq!(handle_prefix("#sea @Ada boats"), "ada");
        assert_eq!(handle_prefix("#sea"), "");
    }

    #[test]
    fn handles() {
        assert!(check_handle("ada_99").is_ok());
        assert!(check_handle("Ada").is_err());
        assert!(check_handle("ab").is_err());
        assert!(check_handle("a/b/c").is_err());
        assert!(check_handle(&"a".repeat(31)).is_err());
    }

    #[test]
    fn hashtags_are_lowercased_and_unique() {
        assert_eq!(hashtags("Sunset at the #Harbour, #harbour #sea_side! #"), vec!["harbour", "sea_side"]);
    }

    #[test]
    fn mentions_are_handles_after_an_at_sign() {
        assert_eq!(mentions("@Ada and @bob_2, @ada again; mail me@ada.org, @x @"), vec!["ada", "bob_2"]);
        assert_eq!(mentions("(@grace) says hi"), vec!["grace"]);
        assert!(mentions("no one").is_empty());
    }

    #[test]
    fn index_and_query_terms_meet() {
        let caption = "Sunset at the #harbour with friends";
        let terms = index_terms(caption, &hashtags(caption));
        for query in ["sunset", "#harbour", "harbour", "SUNSET friends"] {
            assert!(query_terms(query).iter().all(|term| terms.contains(term)), "{query}");
        }
        assert!(!terms.contains(&"t:sunset".to_owned()));
    }
}
