//! PNG text chunks that can carry a location: XMP (`XML:com.adobe.xmp` in `tEXt`, `zTXt`
//! or `iTXt`, compressed or not) and ImageMagick's hex-encoded raw profiles
//! (`Raw profile type exif`, `… APP1`, `… xmp`), which exiftool reads as EXIF and XMP.
//!
//! Compressed chunks cannot be edited in place, so the file is rebuilt chunk by chunk:
//! a text chunk whose content changed is re-encoded (recompressed when it was
//! compressed), a compressed chunk we cannot inflate within its limit is dropped (we
//! cannot prove it holds no location), and anything after `IEND` is dropped. Every other
//! chunk, IDAT above all, is copied byte for byte, so the pixels stay identical.
//! `eXIf` and uncompressed XMP are left to the in-place pass in `exif.rs`.

use std::ops::Range;

use super::exif::{scrub_tiff, tiff_has_gps, GpsScrub, TiffScrub};
use super::xmp;

const PNG_SIGNATURE_BYTES: usize = 8;
/// Largest inflated text chunk we read: XMP packets are kilobytes, and a raw EXIF
/// profile is under 64 KiB of binary (128 KiB of hex). A chunk that inflates past this
/// is dropped rather than read.
const TEXT_INFLATED_BYTES_MAX: usize = 4 * 1024 * 1024;
/// zlib level for chunks we recompress: the best, so the result is rarely longer.
const DEFLATE_LEVEL: u8 = 9;
const XMP_KEYWORD: &[u8] = b"XML:com.adobe.xmp";
const RAW_PROFILE_PREFIX: &[u8] = b"raw profile type ";

/// What to do with one text chunk.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Keep,
    Replace(Vec<u8>),
    Drop,
}

/// The rebuilt file when any text chunk had to change or be dropped, or when bytes
/// followed `IEND`; `None` when the file needs no rebuild.
pub(crate) fn scrub_text_chunks(png: &[u8], report: &mut GpsScrub) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut copied_to = 0; // bytes of `png` already reflected in `out`
    let mut changed = false;
    let mut at = PNG_SIGNATURE_BYTES;
    // Ends at IEND, or at a cut-off chunk or the end of the file (what is there is kept).
    while let Some(chunk) = Chunk::at(png, at) {
        if chunk.kind == *b"IEND" {
            if chunk.end < png.len() {
                report.trailing_bytes_dropped += png.len() - chunk.end;
                changed = true;
                out.extend_from_slice(&png[copied_to..chunk.end]);
                copied_to = png.len();
            }
            break;
        }
        let action = match &chunk.kind {
            b"tEXt" | b"zTXt" | b"iTXt" => text_chunk_action(&chunk.kind, &png[chunk.data.clone()], report),
            _ => Action::Keep,
        };
        if action != Action::Keep {
            changed = true;
            out.extend_from_slice(&png[copied_to..chunk.start]);
            copied_to = chunk.end;
            match action {
                Action::Replace(data) => push_chunk(&mut out, &chunk.kind, &data),
                Action::Drop => report.metadata_blocks_dropped += 1,
                Action::Keep => {}
            }
        }
        at = chunk.end;
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&png[copied_to..]);
    Some(out)
}

/// One whole chunk: length, type, data and CRC all within the file.
struct Chunk {
    start: usize,
    kind: [u8; 4],
    data: Range<usize>,
    end: usize,
}

impl Chunk {
    fn at(png: &[u8], start: usize) -> Option<Chunk> {
        let length =
            usize::try_from(u32::from_be_bytes(png.get(start..start.checked_add(4)?)?.try_into().ok()?)).ok()?;
        let kind: [u8; 4] = png.get(start + 4..start + 8)?.try_into().ok()?;
        let data = start + 8..(start + 8).checked_add(length)?;
        let end = data.end.checked_add(4)?;
        (end <= png.len()).then_some(Chunk { start, kind, data, end })
    }
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Text we write is never near 4 GiB: it is bounded by TEXT_INFLATED_BYTES_MAX.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    let crc_start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[crc_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// What a text chunk's content is, by its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Xmp,
    RawExif,
    RawXmp,
    Other,
}

fn text_kind(keyword: &[u8]) -> TextKind {
    if keyword == XMP_KEYWORD {
        return TextKind::Xmp;
    }
    let lower = keyword.to_ascii_lowercase();
    match lower.strip_prefix(RAW_PROFILE_PREFIX) {
        Some(b"exif" | b"app1") => TextKind::RawExif,
        Some(b"xmp") => TextKind::RawXmp,
        _ => TextKind::Other,
    }
}

fn text_chunk_action(kind: &[u8; 4], data: &[u8], report: &mut GpsScrub) -> Action {
    let Some(keyword_end) = data.iter().position(|&byte| byte == 0) else {
        // No keyword terminator: not a text chunk any reader will parse.
        return Action::Keep;
    };
    let text_kind = text_kind(&data[..keyword_end]);
    // Where the text starts and whether it is compressed.
    let (text_start, compressed) = match kind {
        b"tEXt" => (keyword_end + 1, false),
        // keyword\0, compression method.
        b"zTXt" => (keyword_end + 2, true),
        _ => {
            // keyword\0, flag, method, language\0, translated keyword\0.
            let Some(&flag) = data.get(keyword_end + 1) else { return Action::Keep };
            let mut offset = keyword_end + 3;
            for _ in 0..2 {
                let Some(terminator) = data.get(offset..).and_then(|rest| rest.iter().position(|&byte| byte == 0))
                else {
                    return if flag == 0 { Action::Keep } else { Action::Drop };
                };
                offset += terminator + 1;
            }
            (offset, flag != 0)
        }
    };
    let Some(stored) = data.get(text_start..) else {
        return if compressed { Action::Drop } else { Action::Keep };
    };
    let mut text = if compressed {
        match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(stored, TEXT_INFLATED_BYTES_MAX) {
            Ok(text) => text,
            // Cannot be read, so cannot be shown to hold no location.
            Err(_) => return Action::Drop,
        }
    } else if text_kind == TextKind::Other {
        return Action::Keep;
    } else {
        stored.to_vec()
    };
    let changed = match text_kind {
        TextKind::Xmp => {
            let blanked = xmp::blank_gps_fields(&mut text);
            report.xmp_gps_fields_blanked += blanked;
            blanked > 0
        }
        TextKind::RawExif | TextKind::RawXmp => match scrub_raw_profile(&mut text, text_kind, report) {
            Some(changed) => changed,
            None => return Action::Drop,
        },
        TextKind::Other => false,
    };
    if !changed {
        return Action::Keep;
    }
    let mut rebuilt = data[..text_start].to_vec();
    if compressed {
        rebuilt.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(&text, DEFLATE_LEVEL));
    } else {
        rebuilt.extend_from_slice(&text);
    }
    // The scrubbed file is never longer than the upload (callers and the fuzz target rely
    // on it); text that recompresses worse than its writer's is dropped instead.
    if rebuilt.len() > data.len() {
        return Action::Drop;
    }
    Action::Replace(rebuilt)
}

/// ImageMagick's raw profile: "\n<type>\n<spaces><decimal length>\n<hex digits, wrapped>".
/// Scrubs the decoded profile and writes the hex back in the same places. `Some(changed)`
/// when it could be read; `None` when it cannot (the caller drops the chunk).
fn scrub_raw_profile(text: &mut [u8], kind: TextKind, report: &mut GpsScrub) -> Option<bool> {
    // Skip the leading newline(s) and the type line, then read the decimal length.
    let mut at = text.iter().position(|byte| !byte.is_ascii_whitespace())?;
    at += text[at..].iter().position(|&byte| byte == b'\n')?;
    while text.get(at).is_some_and(|byte| byte.is_ascii_whitespace()) {
        at += 1;
    }
    let digits = text[at..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    let length: usize = std::str::from_utf8(&text[at..at + digits]).ok()?.parse().ok()?;
    at += digits;
    // Positions of the hex digits, two per byte; anything but hex and whitespace is
    // not a profile we understand.
    let mut positions = Vec::with_capacity(length.min(text.len()) * 2);
    for (index, &byte) in text.iter().enumerate().skip(at) {
        if positions.len() == length * 2 {
            break;
        }
        if byte.is_ascii_hexdigit() {
            positions.push(index);
        } else if !byte.is_ascii_whitespace() {
            return None;
        }
    }
    if positions.len() != length * 2 {
        return None;
    }
    let nibble = |byte: u8| (byte as char).to_digit(16).unwrap_or(0) as u8;
    let mut decoded: Vec<u8> =
        positions.chunks_exact(2).map(|pair| nibble(text[pair[0]]) << 4 | nibble(text[pair[1]])).collect();
    let changed = match kind {
        TextKind::RawXmp => {
            let blanked = xmp::blank_gps_fields(&mut decoded);
            report.xmp_gps_fields_blanked += blanked;
            blanked > 0
        }
        _ => {
            let tiff_start = if decoded.starts_with(b"Exif\0\0") { 6 } else { 0 };
            let tiff = &mut decoded[tiff_start..];
            match scrub_tiff(tiff) {
                TiffScrub::Untouched => false,
                TiffScrub::GpsRemoved { .. } if tiff_has_gps(tiff) => return None,
                TiffScrub::GpsRemoved { gps_ifds } => {
                    report.gps_ifds_emptied += gps_ifds;
                    true
                }
                TiffScrub::Unreadable => return None,
            }
        }
    };
    if changed {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (byte, pair) in decoded.iter().zip(positions.chunks_exact(2)) {
            text[pair[0]] = HEX[usize::from(byte >> 4)];
            text[pair[1]] = HEX[usize::from(byte & 0x0F)];
        }
    }
    Some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_profile_round_trips_and_rejects_garbage() {
        let xmp = br#"<x:xmpmeta><rdf:Description exif:GPSLatitude="51,30N" a:b="c"/></x:xmpmeta>"#;
        let hex: String = xmp.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut text = format!("\nxmp\n{:8}\n{}\n{}\n", xmp.len(), &hex[..40], &hex[40..]).into_bytes();
        let mut report = GpsScrub::default();
        assert_eq!(scrub_raw_profile(&mut text, TextKind::RawXmp, &mut report), Some(true));
        assert_eq!(report.xmp_gps_fields_blanked, 1);
        let digits: Vec<u8> = text.iter().copied().skip(14).filter(u8::is_ascii_hexdigit).collect();
        let decoded: Vec<u8> = digits
            .chunks_exact(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect();
        assert!(!String::from_utf8_lossy(&decoded).contains("GPS"));
        assert!(String::from_utf8_lossy(&decoded).contains(r#"a:b="c""#));

        let mut short = b"\nexif\n      99\nabcd\n".to_vec();
        assert_eq!(scrub_raw_profile(&mut short, TextKind::RawExif, &mut report), None);
        let mut not_hex = b"\nexif\n       2\nzz zz\n".to_vec();
        assert_eq!(scrub_raw_profile(&mut not_hex, TextKind::RawExif, &mut report), None);
    }
}
