//! Declared image dimensions read straight from the container header, without a decoder.
//!
//! This runs before anything is allocated for an upload, so a file that merely *claims*
//! to be enormous (a 100000×100000 PNG is 33 bytes) is turned away in microseconds.
//! Every read is bounds-checked; a header we cannot read returns `None`.

use super::MediaKind;

/// What the header says, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    pub width: u32,
    pub height: u32,
    /// A progressive JPEG keeps every DCT coefficient of the whole image while decoding,
    /// which costs more memory than the decoded pixels themselves.
    pub progressive: bool,
}

pub(crate) fn declared(kind: MediaKind, bytes: &[u8]) -> Option<Declared> {
    let (width, height, progressive) = match kind {
        MediaKind::Jpeg => jpeg_frame(bytes)?,
        MediaKind::Png => png_dimensions(bytes).map(|(width, height)| (width, height, false))?,
        MediaKind::Webp => webp_dimensions(bytes).map(|(width, height)| (width, height, false))?,
    };
    Some(Declared { width, height, progressive })
}

fn u16_be(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

fn u32_be(bytes: &[u8], at: usize) -> Option<u32> {
    let quad = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
}

fn u24_le(bytes: &[u8], at: usize) -> Option<u32> {
    let triple = bytes.get(at..at.checked_add(3)?)?;
    Some(u32::from_le_bytes([triple[0], triple[1], triple[2], 0]))
}

/// PNG: IHDR must be the first chunk, so width and height sit at fixed offsets 16 and 20.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((u32_be(bytes, 16)?, u32_be(bytes, 20)?))
}

/// JPEG: walk the marker segments up to the first start-of-frame (SOFn) and read its size
/// and whether it is progressive (SOF2, SOF6, SOF10, SOF14).
fn jpeg_frame(bytes: &[u8]) -> Option<(u32, u32, bool)> {
    let mut at = 2; // after SOI
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at)?;
        at += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            // End of image or start of scan before any frame header: no dimensions.
            0xD9 | 0xDA => return None,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // Length(2) precision(1) height(2) width(2).
                let height = u16_be(bytes, at + 3)?;
                let width = u16_be(bytes, at + 5)?;
                let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                return Some((u32::from(width), u32::from(height), progressive));
            }
            _ => {
                let length = usize::from(u16_be(bytes, at)?);
                if length < 2 {
                    return None;
                }
                at = at.checked_add(length)?;
            }
        }
    }
}

/// WebP: the first chunk after the RIFF header is `VP8 `, `VP8L` or `VP8X`, each of which
/// states the canvas size in its own way.
fn webp_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let fourcc = bytes.get(12..16)?;
    match fourcc {
        b"VP8X" => {
            // Flags(4), then canvas width-1 and height-1 as 24-bit little-endian.
            let width = u24_le(bytes, 24)? + 1;
            let height = u24_le(bytes, 27)? + 1;
            Some((width, height))
        }
        b"VP8L" => {
            // Signature byte 0x2F, then 14 bits width-1 and 14 bits height-1, LSB first.
            if *bytes.get(20)? != 0x2F {
                return None;
            }
            let packed = bytes.get(21..25)?;
            let bits = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8 " => {
            // Frame tag(3), start code 9D 01 2A, then 14-bit width and height (2 scale bits).
            if bytes.get(23..26)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            let width = u16::from_le_bytes([*bytes.get(26)?, *bytes.get(27)?]) & 0x3FFF;
            let height = u16::from_le_bytes([*bytes.get(28)?, *bytes.get(29)?]) & 0x3FFF;
            Some((u32::from(width), u32::from(height)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_dimensions_skip_app_segments_and_fill_bytes() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x04, 0xAA, 0xBB]); // APP1, 2 bytes payload
        jpeg.extend_from_slice(&[0xFF, 0xFF]); // fill
        jpeg.extend_from_slice(&[0xC2, 0x00, 0x11, 0x08, 0x0B, 0xB8, 0x0F, 0xA0]); // SOF2 3000x4000
        assert_eq!(jpeg_frame(&jpeg), Some((4000, 3000, true)));
        assert_eq!(jpeg_frame(&jpeg[..jpeg.len() - 1]), None);
    }

    #[test]
    fn webp_dimensions_of_each_flavour() {
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x9F, 0x0F, 0x00, 0xB7, 0x0B, 0x00]); // 4000x3000
        assert_eq!(webp_dimensions(&vp8x), Some((4000, 3000)));

        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        let bits: u32 = (99) | (49 << 14); // 100x50
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(webp_dimensions(&vp8l), Some((100, 50)));

        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a".to_vec();
        vp8.extend_from_slice(&[0x40, 0x01, 0xF0, 0x00]); // 320x240
        assert_eq!(webp_dimensions(&vp8), Some((320, 240)));
    }
}
