//! XMP in place: overwrite the values of `exif:GPS*` properties with spaces.
//!
//! Phones and editors copy GPS into XMP as well as EXIF, so removing it from EXIF alone
//! would leave the location in the original. Spaces keep the packet's length (nothing in
//! the container moves) and keep it well-formed XML; the property names stay, empty.

const GPS_PROPERTY: &[u8] = b"exif:GPS";

/// Blanks the value of every `exif:GPS*` attribute (`exif:GPSLatitude="…"`) and the text
/// of every `exif:GPS*` element (`<exif:GPSLatitude>…</exif:GPSLatitude>`). Returns how
/// many properties were blanked.
pub(crate) fn blank_gps_fields(xmp: &mut [u8]) -> usize {
    let mut blanked = 0;
    let mut at = 0;
    while let Some(found) = find(xmp, GPS_PROPERTY, at) {
        let name_end = found
            + xmp[found..]
                .iter()
                .position(|&byte| !(byte.is_ascii_alphanumeric() || byte == b':' || byte == b'_'))
                .unwrap_or(xmp.len() - found);
        let preceding = found.checked_sub(1).and_then(|before| xmp.get(before));
        let value = match preceding {
            Some(b'<') => element_text(xmp, found, name_end),
            Some(b'/') => None, // a closing tag, already handled with its opening tag
            _ => attribute_value(xmp, name_end),
        };
        at = name_end;
        if let Some((start, end)) = value {
            blank_text(&mut xmp[start..end]);
            blanked += 1;
            at = end;
        }
    }
    blanked
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|window| window == needle).map(|position| from + position)
}

/// `name = "value"` or `name='value'`: the range of the value between the quotes.
fn attribute_value(xmp: &[u8], name_end: usize) -> Option<(usize, usize)> {
    let mut at = name_end;
    let skip_space = |mut at: usize| {
        while xmp.get(at).is_some_and(|byte| byte.is_ascii_whitespace()) {
            at += 1;
        }
        at
    };
    at = skip_space(at);
    if xmp.get(at) != Some(&b'=') {
        return None;
    }
    at = skip_space(at + 1);
    let quote = *xmp.get(at).filter(|&&byte| byte == b'"' || byte == b'\'')?;
    let start = at + 1;
    let length = xmp.get(start..)?.iter().position(|&byte| byte == quote)?;
    Some((start, start + length))
}

/// `<name …>content</name>`: the range of the content (which may itself hold markup such
/// as an `rdf:Seq`; only text outside tags gets blanked, see [`blank_text`]).
fn element_text(xmp: &[u8], name_start: usize, name_end: usize) -> Option<(usize, usize)> {
    let tag_end = name_end + xmp.get(name_end..)?.iter().position(|&byte| byte == b'>')?;
    if xmp.get(tag_end.checked_sub(1)?) == Some(&b'/') {
        return None; // self-closing, no content
    }
    let mut closing = b"</".to_vec();
    closing.extend_from_slice(xmp.get(name_start..name_end)?);
    let content_end = find(xmp, &closing, tag_end + 1)?;
    Some((tag_end + 1, content_end))
}

/// Replaces character data with spaces, leaving any tags inside intact so the XML stays
/// well-formed.
fn blank_text(region: &mut [u8]) {
    let mut in_tag = false;
    for byte in region {
        match *byte {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            _ if !in_tag => *byte = b' ',
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(xmp: &str) -> (String, usize) {
        let mut bytes = xmp.as_bytes().to_vec();
        let count = blank_gps_fields(&mut bytes);
        (String::from_utf8(bytes).expect("still utf-8"), count)
    }

    #[test]
    fn attributes_and_elements() {
        let (out, count) = blank(
            r#"<d exif:GPSLatitude = '51,30N' exif:GPSAltitudeRef="0" tiff:Orientation="6">
<exif:GPSLongitude>0,7.6W</exif:GPSLongitude><exif:GPSVersionID><rdf:Seq><rdf:li>2</rdf:li></rdf:Seq></exif:GPSVersionID><exif:GPSTrack/></d>"#,
        );
        assert_eq!(count, 4);
        assert_eq!(
            out,
            r#"<d exif:GPSLatitude = '      ' exif:GPSAltitudeRef=" " tiff:Orientation="6">
<exif:GPSLongitude>      </exif:GPSLongitude><exif:GPSVersionID><rdf:Seq><rdf:li> </rdf:li></rdf:Seq></exif:GPSVersionID><exif:GPSTrack/></d>"#
        );
    }

    #[test]
    fn malformed_packets_do_not_panic() {
        for text in ["exif:GPS", "<exif:GPSLat", "<exif:GPSLat>12", "exif:GPSLat=", "exif:GPSLat=\"12", "x exif:GPS"] {
            let (out, _) = blank(text);
            assert_eq!(out.len(), text.len());
        }
    }
}
