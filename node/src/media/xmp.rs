//! XMP in place: overwrite every location property, name and value, with spaces.
//!
//! Phones and editors copy GPS into XMP as well as EXIF, so removing it from EXIF alone
//! would leave the location in the original. The exif namespace may be bound to any
//! prefix (`exif:`, `ns1:`, `exifEX:` for `http://cipa.jp/exif/1.0/`, or the default
//! namespace), and a property may be written as an attribute or as an element, so
//! properties are found by their local name alone, whatever their prefix: a local name
//! that starts with `GPS` or contains `Latitude`/`Longitude` (case-insensitive, which
//! also catches vendor forms such as DJI's `drone-dji:GpsLatitude`).
//!
//! Blanking the whole property (not only its value) matters: readers such as exiftool
//! report an empty `GPSLatitude` as a field that is present. Spaces keep the packet's
//! length (nothing in the container moves) and keep it well-formed XML, since whitespace
//! between attributes and between property elements carries no meaning in RDF/XML.

/// Nested elements of the same name followed when looking for a property's end tag;
/// deeper nesting is not something any writer produces.
const NESTING_DEPTH_MAX: usize = 16;

/// Blanks every location property: attributes (`ns1:GPSLatitude="…"`, the whole
/// attribute) and elements (`<exif:GPSLatitude>…</exif:GPSLatitude>` or self-closing,
/// the whole element). Returns how many properties were blanked.
pub(crate) fn blank_gps_fields(xmp: &mut [u8]) -> usize {
    let mut blanked = 0;
    let mut at = 0;
    // Every iteration moves `at` forward by at least one byte.
    while at < xmp.len() {
        let Some(name) = next_location_name(xmp, at) else { break };
        at = name.end;
        let before = name.start.checked_sub(1).and_then(|index| xmp.get(index)).copied();
        let region = match before {
            Some(b'<') => element_region(xmp, name.start, name.end),
            // A closing tag whose opening tag was not a location property (or was
            // malformed); leave it, the XML around it is not ours to repair.
            Some(b'/') => None,
            Some(byte) if byte.is_ascii_whitespace() => attribute_region(xmp, name.start, name.end),
            _ => None,
        };
        if let Some(region) = region {
            xmp[region.clone()].fill(b' ');
            blanked += 1;
            at = region.end;
        }
    }
    blanked
}

/// True when the packet still holds a location property (one [`blank_gps_fields`] would
/// blank).
#[cfg(test)]
pub(crate) fn has_gps_fields(xmp: &[u8]) -> bool {
    blank_gps_fields(&mut xmp.to_vec()) > 0
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'_' | b'-' | b'.')
}

/// The next XML name (prefix included) at or after `from` whose local part is a
/// location property.
fn next_location_name(xmp: &[u8], from: usize) -> Option<std::ops::Range<usize>> {
    let mut at = from;
    while at < xmp.len() {
        // Skip to the start of the next name.
        let start = at + xmp.get(at..)?.iter().position(|&byte| is_name_byte(byte))?;
        let length = xmp[start..].iter().position(|&byte| !is_name_byte(byte)).unwrap_or(xmp.len() - start);
        let name = &xmp[start..start + length];
        let local = match name.iter().rposition(|&byte| byte == b':') {
            Some(colon) => &name[colon + 1..],
            None => name,
        };
        if is_location_local_name(local) {
            return Some(start..start + length);
        }
        at = start + length;
    }
    None
}

fn is_location_local_name(local: &[u8]) -> bool {
    let lower = local.to_ascii_lowercase();
    lower.starts_with(b"gps") || contains(&lower, b"latitude") || contains(&lower, b"longitude")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|window| window == needle).map(|position| from + position)
}

/// `name = "value"` or `name='value'`: from the name to the closing quote, inclusive.
fn attribute_region(xmp: &[u8], name_start: usize, name_end: usize) -> Option<std::ops::Range<usize>> {
    let skip_space = |mut at: usize| {
        while xmp.get(at).is_some_and(|byte| byte.is_ascii_whitespace()) {
            at += 1;
        }
        at
    };
    let mut at = skip_space(name_end);
    if xmp.get(at) != Some(&b'=') {
        return None;
    }
    at = skip_space(at + 1);
    let quote = *xmp.get(at).filter(|&&byte| byte == b'"' || byte == b'\'')?;
    let value_start = at + 1;
    let length = xmp.get(value_start..)?.iter().position(|&byte| byte == quote)?;
    Some(name_start..value_start + length + 1)
}

/// `<name …/>` or `<name …>…</name>` (same-name nesting followed): from `<` to the end of
/// the closing tag, inclusive.
fn element_region(xmp: &[u8], name_start: usize, name_end: usize) -> Option<std::ops::Range<usize>> {
    let open = name_start - 1;
    let tag_end = name_end + xmp.get(name_end..)?.iter().position(|&byte| byte == b'>')?;
    if xmp.get(tag_end - 1) == Some(&b'/') {
        return Some(open..tag_end + 1);
    }
    let name = xmp.get(name_start..name_end)?;
    let mut closing = b"</".to_vec();
    closing.extend_from_slice(name);
    let mut opening = b"<".to_vec();
    opening.extend_from_slice(name);
    let mut depth = 1;
    let mut at = tag_end + 1;
    for _ in 0..NESTING_DEPTH_MAX {
        let close = find(xmp, &closing, at)?;
        // Same-name openings before this close (a real opening is followed by a
        // non-name byte) each need their own close.
        let mut scan = at;
        while let Some(inner) = find(&xmp[..close], &opening, scan) {
            if xmp.get(inner + opening.len()).is_some_and(|&byte| !is_name_byte(byte)) {
                depth += 1;
            }
            scan = inner + opening.len();
        }
        depth -= 1;
        let close_end = close + xmp.get(close..)?.iter().position(|&byte| byte == b'>')? + 1;
        if depth == 0 {
            return Some(open..close_end);
        }
        at = close_end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(xmp: &str) -> (String, usize) {
        let mut bytes = xmp.as_bytes().to_vec();
        let count = blank_gps_fields(&mut bytes);
        (String::from_utf8(bytes).expect("still utf-8"), count)
    }

    fn squeeze(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn attributes_and_elements_of_any_prefix() {
        let input = r#"<d exif:GPSLatitude = '51,30N' ns1:GPSAltitudeRef="0" tiff:Orientation="6">
<exifEX:GPSLongitude>0,7.6W</exifEX:GPSLongitude><exif:GPSVersionID><rdf:Seq><rdf:li>2</rdf:li></rdf:Seq></exif:GPSVersionID><exif:GPSTrack/><GPSDestLatitude xmlns="http://ns.adobe.com/exif/1.0/">1</GPSDestLatitude><drone-dji:GpsLatitude>1.5</drone-dji:GpsLatitude><dc:title>Latitude 51 sunset</dc:title></d>"#;
        let (out, count) = blank(input);
        assert_eq!(out.len(), input.len());
        assert_eq!(count, 7);
        assert_eq!(squeeze(&out), r#"<d tiff:Orientation="6"> <dc:title>Latitude 51 sunset</dc:title></d>"#);
        assert!(!has_gps_fields(out.as_bytes()));
        assert!(has_gps_fields(input.as_bytes()));
    }

    #[test]
    fn nested_same_name_elements_are_removed_whole() {
        let (out, count) = blank("<x><a:GPSArea><a:GPSArea>1</a:GPSArea></a:GPSArea><b>k</b></x>");
        assert_eq!(count, 1);
        assert_eq!(squeeze(&out), "<x> <b>k</b></x>");
    }

    #[test]
    fn malformed_packets_do_not_panic() {
        for text in
            ["exif:GPS", "<exif:GPSLat", "<exif:GPSLat>12", " exif:GPSLat=", " exif:GPSLat=\"12", "x exif:GPS", "<"]
        {
            let (out, _) = blank(text);
            assert_eq!(out.len(), text.len());
        }
    }
}
