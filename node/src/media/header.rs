//! What an image's header declares (size, and enough to bound its decoded size), read
//! straight from the container without a decoder.
//!
//! This runs before anything is allocated for an upload, so a file that merely *claims*
//! to be enormous (a 100000×100000 PNG is 33 bytes) is turned away in microseconds, and
//! the memory gate can be entered before a decoder (which copies the input) exists.
//! Every read is bounds-checked; a header we cannot read returns `None`.

use std::io::{Read, Seek, SeekFrom};

use super::MediaKind;

/// What the header says, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    pub width: u32,
    pub height: u32,
    /// Upper bound on the bytes per pixel the format's decoder produces as stored (before
    /// we flatten to RGB8): 1 for a grey JPEG, 3 for a colour one, up to 8 for a 16-bit
    /// RGBA PNG (which we never decode at 16 bits, see `convert.rs`).
    pub decoded_bytes_per_pixel: u64,
    /// A progressive JPEG keeps every DCT coefficient of the whole image while decoding,
    /// which costs more memory than the decoded pixels themselves.
    pub progressive: bool,
    /// Bytes the format's decoder holds at its peak besides the buffer it decodes into:
    /// a progressive JPEG's coefficients (an i16 per sample of each component, padded to
    /// whole MCUs), a lossy WebP's YUV planes, a lossless WebP's RGBA working copy.
    pub decoder_scratch_bytes: u64,
}

pub(crate) fn declared(kind: MediaKind, bytes: &[u8]) -> Option<Declared> {
    match kind {
        MediaKind::Jpeg => jpeg_frame(bytes),
        MediaKind::Png => png_header(bytes),
        MediaKind::Webp => webp_header(bytes),
    }
}

/// Whether the container holds a whole image: decoders fill in a cut-off image with grey
/// rather than fail, so a half-sent upload would otherwise be stored as a damaged photo.
/// Returns what is missing when it is not whole.
pub(crate) fn check_complete(kind: MediaKind, bytes: &[u8]) -> Result<(), &'static str> {
    let complete = match kind {
        MediaKind::Jpeg => jpeg_has_end(bytes),
        MediaKind::Png => png_has_end(bytes),
        MediaKind::Webp => u32_le(bytes, 4).is_some_and(|riff_bytes| riff_bytes as usize + 8 <= bytes.len()),
    };
    if complete {
        Ok(())
    } else {
        Err(match kind {
            MediaKind::Jpeg => "the JPEG is cut off: it has no end-of-image marker",
            MediaKind::Png => "the PNG is cut off: it has no IEND chunk",
            MediaKind::Webp => "the WebP is cut off: it is shorter than its RIFF header says",
        })
    }
}

/// Walks JPEG segments and entropy-coded scans to the end-of-image marker (FFD9).
/// Inside a scan, FF is followed by 00 (stuffing), D0–D7 (restart) or FF (fill);
/// anything else is the next marker (progressive images have many scans).
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    loop {
        let Some(&0xFF) = bytes.get(at) else { return false };
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else { return false };
        at += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let Some(length) = u16_be(bytes, at) else { return false };
                at += usize::from(length);
                if marker == 0xDA {
                    // Skip entropy-coded data up to the next real marker.
                    loop {
                        let Some(offset) = bytes.get(at..).and_then(|rest| rest.iter().position(|&byte| byte == 0xFF))
                        else {
                            return false;
                        };
                        at += offset;
                        match bytes.get(at + 1) {
                            None => return false,
                            Some(0x00 | 0xD0..=0xD7) => at += 2,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// Walks PNG chunks (length, type, data, CRC) to IEND.
fn png_has_end(bytes: &[u8]) -> bool {
    let mut at = 8; // after the signature
    while let Some(length) = u32_be(bytes, at) {
        let Some(chunk_type) = bytes.get(at + 4..at + 8) else { return false };
        if chunk_type == b"IEND" {
            return true;
        }
        let Some(next) = (length as usize).checked_add(12).and_then(|chunk_bytes| at.checked_add(chunk_bytes)) else {
            return false;
        };
        at = next;
    }
    false
}

fn u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    let quad = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]))
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

/// PNG: IHDR must be the first chunk: width, height, bit depth and colour type sit at
/// fixed offsets 16, 20, 24 and 25.
fn png_header(bytes: &[u8]) -> Option<Declared> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let bit_depth = *bytes.get(24)?;
    // Channels after the decoder expands palettes (to RGBA when a tRNS chunk may follow).
    let channels = match *bytes.get(25)? {
        0 => 1, // grey
        2 => 3, // RGB
        3 => 4, // palette
        4 => 2, // grey + alpha
        6 => 4, // RGBA
        _ => return None,
    };
    let channel_bytes = if bit_depth == 16 { 2 } else { 1 };
    Some(Declared {
        width: u32_be(bytes, 16)?,
        height: u32_be(bytes, 20)?,
        decoded_bytes_per_pixel: channels * channel_bytes,
        progressive: false,
        // Rows only: ours decodes row by row into RGB8.
        decoder_scratch_bytes: 0,
    })
}

/// JPEG: walk the marker segments up to the first start-of-frame (SOFn) and read its size
/// and whether it is progressive (SOF2, SOF6, SOF10, SOF14).
fn jpeg_frame(bytes: &[u8]) -> Option<Declared> {
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
    let (marker, at) = jpeg_header_segments(bytes)
        .find(|&(marker, _)| matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC))?;
    // Length(2) precision(1) height(2) width(2) components(1), then per component:
    // id(1) sampling factors(1: H high nibble, V low) table(1).
    let height = u16_be(bytes, at + 3)?;
    let width = u16_be(bytes, at + 5)?;
    // A frame header cut short after the size is refused by the decoder; until then,
    // assume three components at full resolution (the most memory for a colour image).
    let components = usize::from(bytes.get(at + 7).copied().unwrap_or(3));
    let mut sampling = Vec::with_capacity(components);
    for index in 0..components {
        let factors = bytes.get(at + 8 + index * 3 + 1).copied().unwrap_or(0x11);
        sampling.push((u64::from(factors >> 4).max(1), u64::from(factors & 0x0F).max(1)));
    }
    let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
    let coefficients =
        if progressive { jpeg_coefficient_bytes(u64::from(width), u64::from(height), &sampling) } else { 0 };
    Some(Declared {
        width: u32::from(width),
        height: u32::from(height),
        // The decoder outputs grey or RGB (CMYK is converted to RGB).
        decoded_bytes_per_pixel: if components == 1 { 1 } else { 3 },
        progressive,
        decoder_scratch_bytes: coefficients,
    })
}

/// Bytes of the ICC profile a JPEG carries in its header (APP2 "ICC_PROFILE" chunks), so
/// that an oversized one is never copied out (see `colour::PROFILE_BYTES_MAX`); 0 when
/// there is none.
pub(crate) fn jpeg_icc_profile_bytes(bytes: &[u8]) -> usize {
    const ICC_PREFIX: &[u8] = b"ICC_PROFILE\0";
    jpeg_header_segments(bytes)
        .filter(|&(marker, at)| {
            marker == 0xE2 && bytes.get(at + 2..).is_some_and(|payload| payload.starts_with(ICC_PREFIX))
        })
        // Length(2), the prefix, then the chunk's sequence number and count (1 + 1).
        .filter_map(|(_, at)| usize::from(u16_be(bytes, at)?).checked_sub(2 + ICC_PREFIX.len() + 2))
        .sum()
}

/// The marker segments of a JPEG's header, from SOI up to its first scan: each segment's
/// marker and the offset of its length field. Standalone markers are skipped and markers
/// may be preceded by any number of 0xFF fill bytes; the walk ends at a start of scan, an
/// end of image, a malformed segment or the end of `bytes`.
fn jpeg_header_segments(bytes: &[u8]) -> impl Iterator<Item = (u8, usize)> + '_ {
    let mut at = 2; // after SOI
    std::iter::from_fn(move || loop {
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
            // End of image or start of scan: the header is over.
            0xD9 | 0xDA => return None,
            _ => {
                let segment = at;
                let length = usize::from(u16_be(bytes, at)?);
                if length < 2 {
                    return None;
                }
                at = at.checked_add(length)?;
                return Some((marker, segment));
            }
        }
    })
}

/// The JPEG frame header of a file too large to hold, found by reading only segment
/// headers (metadata such as extended XMP can put SOF megabytes into the file). A
/// bounded number of segments is walked.
pub(crate) fn jpeg_frame_from_reader<R: Read + Seek>(reader: &mut R) -> Option<Declared> {
    const SEGMENTS_MAX: usize = 4096;
    let mut at: u64 = 2;
    for _ in 0..SEGMENTS_MAX {
        let mut marker = [0u8; 4];
        reader.seek(SeekFrom::Start(at)).ok()?;
        reader.read_exact(&mut marker).ok()?;
        if marker[0] != 0xFF {
            return None;
        }
        if marker[1] == 0xFF {
            at += 1; // a fill byte
            continue;
        }
        let length = u16::from_be_bytes([marker[2], marker[3]]);
        if matches!(marker[1], 0xC0..=0xCF) && !matches!(marker[1], 0xC4 | 0xC8 | 0xCC) {
            // SOI, then this segment whole: jpeg_frame reads it as it reads any file.
            let mut synthetic = vec![0xFF, 0xD8, 0xFF, marker[1], marker[2], marker[3]];
            let mut segment = vec![0u8; usize::from(length.saturating_sub(2))];
            reader.read_exact(&mut segment).ok()?;
            synthetic.extend_from_slice(&segment);
            return jpeg_frame(&synthetic);
        }
        if matches!(marker[1], 0xD9 | 0xDA) || length < 2 {
            return None;
        }
        at += 2 + u64::from(length);
    }
    None
}

/// A progressive JPEG's coefficient store: per component, an i16 for each of its samples
/// over the image padded to whole MCUs (zune-jpeg's layout).
fn jpeg_coefficient_bytes(width: u64, height: u64, sampling: &[(u64, u64)]) -> u64 {
    let horizontal_max = sampling.iter().map(|&(horizontal, _)| horizontal).max().unwrap_or(1);
    let vertical_max = sampling.iter().map(|&(_, vertical)| vertical).max().unwrap_or(1);
    let mcus_across = width.div_ceil(8 * horizontal_max);
    let mcus_down = height.div_ceil(8 * vertical_max);
    sampling
        .iter()
        .map(|&(horizontal, vertical)| mcus_across * mcus_down * 64 * horizontal * vertical * 2)
        .fold(0u64, u64::saturating_add)
}

/// WebP: the first chunk after the RIFF header is `VP8 `, `VP8L` or `VP8X`, each of which
/// states the canvas size in its own way. The decoder outputs RGBA when there may be alpha.
fn webp_header(bytes: &[u8]) -> Option<Declared> {
    let fourcc = bytes.get(12..16)?;
    let (width, height, alpha) = match fourcc {
        b"VP8X" => {
            // Flags(4; bit 4 = alpha), then canvas width-1 and height-1 as 24-bit LE.
            let alpha = *bytes.get(20)? & 0x10 != 0;
            (u24_le(bytes, 24)? + 1, u24_le(bytes, 27)? + 1, alpha)
        }
        b"VP8L" => {
            // Signature byte 0x2F, then 14 bits width-1, 14 bits height-1, 1 bit alpha used.
            if *bytes.get(20)? != 0x2F {
                return None;
            }
            let packed = bytes.get(21..25)?;
            let bits = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bits & (1 << 28) != 0)
        }
        b"VP8 " => {
            // Frame tag(3), start code 9D 01 2A, then 14-bit width and height (2 scale bits).
            if bytes.get(23..26)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            let width = u16::from_le_bytes([*bytes.get(26)?, *bytes.get(27)?]) & 0x3FFF;
            let height = u16::from_le_bytes([*bytes.get(28)?, *bytes.get(29)?]) & 0x3FFF;
            (u32::from(width), u32::from(height), false)
        }
        _ => return None,
    };
    let pixels = u64::from(width) * u64::from(height);
    // image-webp's working memory beside its output: a lossy frame's YUV planes (1.5
    // bytes a pixel, padded to macroblocks) plus the alpha plane; a lossless image without
    // alpha decodes into an RGBA copy first; an animation keeps a canvas and a frame.
    // When the image chunk is not found (a VP8X file whose metadata comes first and is
    // cut off here), the largest of these.
    let padded_pixels = u64::from(width.div_ceil(16) * 16) * u64::from(height.div_ceil(16) * 16);
    let scratch = match webp_image_chunk(bytes) {
        Some(WebpImage::Lossy) => padded_pixels * 3 / 2 + if alpha { pixels } else { 0 },
        Some(WebpImage::Lossless) if alpha => 0,
        Some(WebpImage::Lossless) => pixels * 4,
        Some(WebpImage::Animated) | None => pixels * 8,
    };
    Some(Declared {
        width,
        height,
        decoded_bytes_per_pixel: if alpha { 4 } else { 3 },
        progressive: false,
        decoder_scratch_bytes: scratch,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WebpImage {
    Lossy,
    Lossless,
    Animated,
}

/// Which kind of image data a WebP holds: walks its chunk headers (a bounded number).
fn webp_image_chunk(bytes: &[u8]) -> Option<WebpImage> {
    const CHUNKS_MAX: usize = 64;
    let mut at: usize = 12;
    for _ in 0..CHUNKS_MAX {
        let fourcc = bytes.get(at..at.checked_add(4)?)?;
        match fourcc {
            b"VP8 " => return Some(WebpImage::Lossy),
            b"VP8L" => return Some(WebpImage::Lossless),
            b"ANIM" | b"ANMF" => return Some(WebpImage::Animated),
            _ => {}
        }
        let size = usize::try_from(u32_le(bytes, at + 4)?).ok()?;
        at = at.checked_add(8)?.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(declared: Option<Declared>) -> Option<(u32, u32)> {
        declared.map(|declared| (declared.width, declared.height))
    }

    #[test]
    fn jpeg_frame_skips_app_segments_and_fill_bytes() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x04, 0xAA, 0xBB]); // APP1, 2 bytes payload
        jpeg.extend_from_slice(&[0xFF, 0xFF]); // fill
        jpeg.extend_from_slice(&[0xC2, 0x00, 0x11, 0x08, 0x0B, 0xB8, 0x0F, 0xA0]); // SOF2 3000x4000
        let declared = jpeg_frame(&jpeg).expect("frame found");
        assert_eq!((declared.width, declared.height, declared.progressive), (4000, 3000, true));
        assert_eq!(jpeg_frame(&jpeg[..jpeg.len() - 1]), None);
    }

    #[test]
    fn png_bytes_per_pixel_follow_colour_type_and_depth() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 5, 16, 6, 0, 0, 0]);
        let declared = png_header(&png).expect("IHDR read");
        assert_eq!((declared.width, declared.height, declared.decoded_bytes_per_pixel), (7, 5, 8));
        png[25] = 1; // not a PNG colour type
        assert_eq!(png_header(&png), None);
    }

    #[test]
    fn webp_dimensions_of_each_flavour() {
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\x10\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x9F, 0x0F, 0x00, 0xB7, 0x0B, 0x00]); // 4000x3000
        assert_eq!(size(webp_header(&vp8x)), Some((4000, 3000)));
        assert_eq!(webp_header(&vp8x).map(|declared| declared.decoded_bytes_per_pixel), Some(4));

        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        let bits: u32 = 99 | (49 << 14); // 100x50, no alpha
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(size(webp_header(&vp8l)), Some((100, 50)));

        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a".to_vec();
        vp8.extend_from_slice(&[0x40, 0x01, 0xF0, 0x00]); // 320x240
        assert_eq!(size(webp_header(&vp8)), Some((320, 240)));
    }
}
