//! EXIF in place: find the metadata blocks in JPEG, PNG and WebP containers, remove GPS
//! from them without moving a single byte, and read Orientation and GPS presence back.
//!
//! Why in place: the stored original is the user's photo and must keep its pixels
//! bit-for-bit, and every other tag (Orientation above all) must keep working. Zeroing
//! what the GPS IFD owns and leaving an empty GPS IFD behind keeps the TIFF structure valid
//! for every reader, and nothing after it has to move.
//!
//! Two things cannot be done in place, and are done first, by dropping bytes (never the
//! primary image's): compressed PNG text chunks (see `png_meta.rs`), and whatever follows
//! the images of a file. A JPEG's secondary images after the first end-of-image (MPF
//! previews, gain maps), each with its own EXIF and XMP, are walked and scrubbed like the
//! primary; bytes after the last image we can walk (a motion photo's video, a vendor
//! trailer) are dropped, since we cannot prove they hold no location. Bytes after a PNG's
//! `IEND` or past a WebP's RIFF size are dropped likewise.
//!
//! Everything here reads untrusted bytes: every access is bounds-checked, offsets are
//! checked arithmetic, IFD chains are bounded, and nothing panics.

use std::ops::Range;

use super::{png_meta, sniff, xmp, MediaKind};

const TAG_ORIENTATION: u16 = 0x0112;
const TAG_GPS_IFD: u16 = 0x8825;
/// IFD0, IFD1 (thumbnail) and a little slack; real files have two.
const IFD_CHAIN_MAX: usize = 4;
/// Images walked in one JPEG file: the primary plus MPF previews, gain and depth maps.
/// Anything past them is dropped like any unwalkable trailer.
const JPEG_IMAGES_MAX: usize = 16;
const EXIF_PREFIX: &[u8] = b"Exif\0\0";
const XMP_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
const XMP_EXTENSION_PREFIX: &[u8] = b"http://ns.adobe.com/xmp/extension/\0";

/// What [`strip_gps`] did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpsScrub {
    /// GPS IFDs emptied (entries and out-of-line values zeroed).
    pub gps_ifds_emptied: usize,
    /// EXIF blocks whose TIFF header or IFD0 could not be found, zeroed whole: no reader
    /// can use them, and we cannot prove they hold no location.
    pub exif_blocks_blanked: usize,
    /// Location properties in XMP packets (any prefix) overwritten with spaces.
    pub xmp_gps_fields_blanked: usize,
    /// Whole metadata chunks dropped: compressed PNG text we could not inflate, raw
    /// profiles we could not parse.
    pub metadata_blocks_dropped: usize,
    /// Bytes after the last image (JPEG trailers, data after PNG `IEND` or past a WebP's
    /// RIFF size) dropped.
    pub trailing_bytes_dropped: usize,
}

/// Removes every GPS coordinate from the EXIF and XMP of a JPEG, PNG or WebP file, in
/// every encoding we know of. The image data stays exactly as it was; metadata is
/// scrubbed in place where it can be, and dropped where it cannot (see the module
/// comment), so the file may get shorter. Files of any other type are left alone.
pub fn strip_gps(bytes: &mut Vec<u8>) -> GpsScrub {
    let mut report = GpsScrub::default();
    let Some(kind) = sniff(bytes) else {
        return report;
    };
    match kind {
        MediaKind::Jpeg => {
            if let (_, Some(images_end)) = jpeg_walk(bytes) {
                drop_after(bytes, images_end, &mut report);
            }
        }
        MediaKind::Png => {
            if let Some(rebuilt) = png_meta::scrub_text_chunks(bytes, &mut report) {
                *bytes = rebuilt;
            }
        }
        MediaKind::Webp => {
            // Readers stop at the RIFF size. One too small to hold even a chunk header is
            // broken, not a boundary: then nothing is dropped.
            let riff_end = le_u32(bytes, 4).and_then(|size| usize::try_from(size).ok()?.checked_add(8));
            if let Some(riff_end) = riff_end.filter(|&end| end >= 20) {
                drop_after(bytes, riff_end, &mut report);
            }
        }
    }
    for block in metadata_blocks(kind, bytes) {
        let Some(payload) = bytes.get_mut(block.payload.clone()) else {
            continue;
        };
        let changed = match block.kind {
            BlockKind::Exif => match scrub_tiff(payload) {
                TiffScrub::Untouched => false,
                // Malformed IFDs can overlap, so zeroing one GPS IFD can make another
                // appear: then nothing of this block is kept.
                TiffScrub::GpsRemoved { .. } if tiff_has_gps(payload) => {
                    payload.fill(0);
                    report.exif_blocks_blanked += 1;
                    true
                }
                TiffScrub::GpsRemoved { gps_ifds } => {
                    report.gps_ifds_emptied += gps_ifds;
                    true
                }
                TiffScrub::Unreadable => {
                    payload.fill(0);
                    report.exif_blocks_blanked += 1;
                    true
                }
            },
            BlockKind::Xmp => {
                let blanked = xmp::blank_gps_fields(payload);
                report.xmp_gps_fields_blanked += blanked;
                blanked > 0
            }
        };
        if changed {
            if let Some(crc) = block.png_crc {
                fix_png_crc(bytes, crc);
            }
        }
    }
    report
}

fn drop_after(bytes: &mut Vec<u8>, end: usize, report: &mut GpsScrub) {
    if end < bytes.len() {
        report.trailing_bytes_dropped += bytes.len() - end;
        bytes.truncate(end);
    }
}

/// The EXIF Orientation (1..=8 when valid) of a JPEG, PNG or WebP file, if it has one.
pub fn exif_orientation(bytes: &[u8]) -> Option<u16> {
    let kind = sniff(bytes)?;
    metadata_blocks(kind, bytes).into_iter().filter(|block| block.kind == BlockKind::Exif).find_map(|block| {
        let tiff = Tiff::parse(bytes.get(block.payload)?)?;
        let (entries, _) = tiff.ifd(tiff.ifd0_offset()?)?;
        let entry = entries.iter().find(|entry| entry.tag == TAG_ORIENTATION)?;
        // SHORT, at least one value: stored inline in the first two bytes.
        (entry.field_type == 3 && entry.count >= 1).then(|| tiff.u16_at(entry.value_at))?
    })
}

/// True when any EXIF block of the file points at a GPS IFD that still has entries.
pub fn exif_gps_present(bytes: &[u8]) -> bool {
    let Some(kind) = sniff(bytes) else {
        return false;
    };
    metadata_blocks(kind, bytes)
        .into_iter()
        .filter(|block| block.kind == BlockKind::Exif)
        .any(|block| bytes.get(block.payload).is_some_and(tiff_has_gps))
}

/// True when a TIFF structure points at a GPS IFD that has entries.
pub(crate) fn tiff_has_gps(payload: &[u8]) -> bool {
    let Some(tiff) = Tiff::parse(payload) else { return false };
    tiff.gps_ifd_offsets().into_iter().any(|offset| tiff.ifd(offset).is_some_and(|(entries, _)| !entries.is_empty()))
}

// ---------------------------------------------------------------------------------------
// Containers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    /// A TIFF structure ("II*\0" or "MM\0*" onwards).
    Exif,
    /// An uncompressed XMP packet.
    Xmp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    kind: BlockKind,
    payload: Range<usize>,
    /// For PNG: the chunk's type+data range covered by its CRC, and where the CRC sits.
    png_crc: Option<PngCrc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PngCrc {
    covered: Range<usize>,
    at: usize,
}

fn metadata_blocks(kind: MediaKind, bytes: &[u8]) -> Vec<Block> {
    match kind {
        MediaKind::Jpeg => jpeg_walk(bytes).0,
        MediaKind::Png => png_blocks(bytes),
        MediaKind::Webp => webp_blocks(bytes),
    }
}

/// Payload range that starts after `prefix` if `payload` begins with it.
fn after_prefix(bytes: &[u8], payload: &Range<usize>, prefix: &[u8]) -> Option<Range<usize>> {
    let start = payload.start.checked_add(prefix.len())?;
    (start <= payload.end && bytes.get(payload.start..start)? == prefix).then_some(start..payload.end)
}

/// APP1 EXIF and XMP segments of every image in a JPEG file (the primary, then each
/// image that follows an end-of-image directly, as MPF previews and gain maps do), and
/// where the last whole image ends; `None` when the primary itself has no end (a cut-off
/// upload: its segments are still scrubbed as far as they go).
fn jpeg_walk(bytes: &[u8]) -> (Vec<Block>, Option<usize>) {
    let mut blocks = Vec::new();
    let mut images_end = None;
    let mut image_start = 0;
    for _ in 0..JPEG_IMAGES_MAX {
        if !bytes.get(image_start..).is_some_and(|rest| rest.starts_with(&[0xFF, 0xD8, 0xFF])) {
            break;
        }
        let Some(image_end) = jpeg_image_blocks(bytes, image_start + 2, &mut blocks) else { break };
        images_end = Some(image_end);
        image_start = image_end;
    }
    (blocks, images_end)
}

/// Walks one image's segments from just after its SOI, through its scans, to its
/// end-of-image; pushes its APP1 blocks and returns the offset just past EOI. A segment
/// cut short by a truncated upload is still scrubbed as far as it goes.
fn jpeg_image_blocks(bytes: &[u8], mut at: usize, blocks: &mut Vec<Block>) -> Option<usize> {
    loop {
        if bytes.get(at) != Some(&0xFF) {
            return None;
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes.get(at)?;
        at += 1;
        match marker {
            0xD9 => return Some(at),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let length = usize::from(be_u16(bytes, at)?);
        if length < 2 {
            return None;
        }
        let end = at.saturating_add(length);
        let payload = at + 2..end.min(bytes.len());
        if marker == 0xE1 {
            if let Some(tiff) = after_prefix(bytes, &payload, EXIF_PREFIX) {
                blocks.push(Block { kind: BlockKind::Exif, payload: tiff, png_crc: None });
            } else if let Some(xmp) = after_prefix(bytes, &payload, XMP_PREFIX)
                .or_else(|| after_prefix(bytes, &payload, XMP_EXTENSION_PREFIX))
            {
                blocks.push(Block { kind: BlockKind::Xmp, payload: xmp, png_crc: None });
            }
        }
        at = end;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker: FF followed by anything but
            // 00 (stuffing), D0–D7 (restart) or FF (fill).
            loop {
                at += bytes.get(at..)?.iter().position(|&byte| byte == 0xFF)?;
                match *bytes.get(at + 1)? {
                    0x00 | 0xD0..=0xD7 => at += 2,
                    0xFF => at += 1,
                    _ => break,
                }
            }
        }
    }
}

/// `eXIf` chunks and uncompressed `iTXt` XMP. Chunks after IDAT are walked too: some
/// writers put `eXIf` at the end even though the specification says otherwise.
fn png_blocks(bytes: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut at = 8;
    while let Some(length) = be_u32(bytes, at) {
        // be_u32 succeeded, so `at + 4` is in bounds and `at + 8` cannot overflow.
        let Some(chunk_type) = bytes.get(at + 4..at + 8) else { break };
        let Ok(length) = usize::try_from(length) else { break };
        let data_start = at + 8;
        let data_end = data_start.saturating_add(length);
        let payload = data_start..data_end.min(bytes.len());
        // The CRC can only be rewritten when the chunk is whole.
        let png_crc = (data_end.checked_add(4).is_some_and(|crc_end| crc_end <= bytes.len()))
            .then(|| PngCrc { covered: at + 4..data_end, at: data_end });
        match chunk_type {
            b"eXIf" => blocks.push(Block { kind: BlockKind::Exif, payload, png_crc }),
            b"tEXt" => {
                if let Some(xmp) = after_prefix(bytes, &payload, b"XML:com.adobe.xmp\0") {
                    blocks.push(Block { kind: BlockKind::Xmp, payload: xmp, png_crc });
                }
            }
            b"iTXt" => {
                if let Some(xmp) = png_itxt_xmp(bytes, &payload) {
                    blocks.push(Block { kind: BlockKind::Xmp, payload: xmp, png_crc });
                }
            }
            b"IEND" => break,
            _ => {}
        }
        let Some(next) = data_end.checked_add(4) else { break };
        at = next;
    }
    blocks
}

/// The text of an `iTXt` chunk with keyword `XML:com.adobe.xmp`, if stored uncompressed.
/// Layout: keyword\0, compression flag, method, language\0, translated keyword\0, text.
fn png_itxt_xmp(bytes: &[u8], payload: &Range<usize>) -> Option<Range<usize>> {
    let data = bytes.get(payload.clone())?;
    let keyword = b"XML:com.adobe.xmp\0";
    if !data.starts_with(keyword) || *data.get(keyword.len())? != 0 {
        return None;
    }
    let mut offset = keyword.len() + 2;
    for _ in 0..2 {
        let rest = data.get(offset..)?;
        offset += rest.iter().position(|&byte| byte == 0)? + 1;
    }
    Some(payload.start + offset..payload.end)
}

/// `EXIF` and `XMP ` chunks of an extended (VP8X) WebP. Some writers prefix the EXIF
/// chunk with "Exif\0\0"; both forms are accepted.
fn webp_blocks(bytes: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut at: usize = 12;
    while let Some(size) = at.checked_add(4).and_then(|size_at| le_u32(bytes, size_at)) {
        // le_u32 succeeded, so `at..at + 4` is in bounds.
        let Some(fourcc) = bytes.get(at..at + 4) else { break };
        let Ok(size) = usize::try_from(size) else { break };
        let data_start = at + 8;
        let data_end = data_start.saturating_add(size);
        let payload = data_start..data_end.min(bytes.len());
        match fourcc {
            b"EXIF" => {
                let tiff = after_prefix(bytes, &payload, EXIF_PREFIX).unwrap_or(payload);
                blocks.push(Block { kind: BlockKind::Exif, payload: tiff, png_crc: None });
            }
            b"XMP " => blocks.push(Block { kind: BlockKind::Xmp, payload, png_crc: None }),
            _ => {}
        }
        // Chunks are padded to an even length.
        let Some(next) = data_end.checked_add(size & 1) else { break };
        at = next;
    }
    blocks
}

fn fix_png_crc(bytes: &mut [u8], crc: PngCrc) {
    let Some(covered) = bytes.get(crc.covered) else {
        return;
    };
    let value = crc32fast::hash(covered).to_be_bytes();
    if let Some(slot) = bytes.get_mut(crc.at..crc.at + 4) {
        slot.copy_from_slice(&value);
    }
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------
// TIFF

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TiffScrub {
    /// No GPS IFD with entries.
    Untouched,
    GpsRemoved {
        gps_ifds: usize,
    },
    /// No TIFF header or no IFD0 in bounds.
    Unreadable,
}

/// One 12-byte IFD entry; `value_at` is the offset of its 4-byte value/offset field.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u16,
    field_type: u16,
    count: u32,
    value_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tiff<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl<'a> Tiff<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let big_endian = match bytes.get(..4)? {
            [b'I', b'I', 42, 0] => false,
            [b'M', b'M', 0, 42] => true,
            _ => return None,
        };
        Some(Tiff { bytes, big_endian })
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let pair: [u8; 2] = self.bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian { u16::from_be_bytes(pair) } else { u16::from_le_bytes(pair) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let quad: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian { u32::from_be_bytes(quad) } else { u32::from_le_bytes(quad) })
    }

    fn ifd0_offset(&self) -> Option<usize> {
        let offset = usize::try_from(self.u32_at(4)?).ok()?;
        // IFD0 must at least hold its entry count.
        (offset >= 8 && offset.checked_add(2)? <= self.bytes.len()).then_some(offset)
    }

    /// The entries of the IFD at `offset` that lie within bounds (a truncated IFD yields
    /// the entries that fit, as a lenient reader would), and the next-IFD offset if present.
    fn ifd(&self, offset: usize) -> Option<(Vec<Entry>, Option<usize>)> {
        let count = usize::from(self.u16_at(offset)?);
        let mut entries = Vec::with_capacity(count.min(self.bytes.len() / 12));
        for index in 0..count {
            let at = offset + 2 + index * 12;
            let (Some(tag), Some(field_type), Some(count)) =
                (self.u16_at(at), self.u16_at(at + 2), self.u32_at(at + 4))
            else {
                return Some((entries, None));
            };
            if at + 12 > self.bytes.len() {
                return Some((entries, None));
            }
            entries.push(Entry { tag, field_type, count, value_at: at + 8 });
        }
        let next =
            self.u32_at(offset + 2 + count * 12).and_then(|next| usize::try_from(next).ok()).filter(|&next| next != 0);
        Some((entries, next))
    }

    /// The byte range an entry's value occupies when stored out of line (more than four
    /// bytes), if it lies within the TIFF. Inline values live in the entry itself.
    fn out_of_line_value(&self, entry: &Entry) -> Option<Range<usize>> {
        let unit_bytes: u64 = match entry.field_type {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 => 8,
            _ => return None,
        };
        let size = unit_bytes.checked_mul(u64::from(entry.count))?;
        if size <= 4 {
            return None;
        }
        let start = usize::try_from(self.u32_at(entry.value_at)?).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        // A value running past the end is clipped: whatever part exists is still GPS.
        (start < self.bytes.len()).then(|| start..end.min(self.bytes.len()))
    }

    /// Offsets of every GPS IFD pointed at from the IFD chain (IFD0, IFD1, …).
    fn gps_ifd_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut visited = Vec::new();
        let mut next = self.ifd0_offset();
        while let Some(offset) = next {
            if visited.len() == IFD_CHAIN_MAX || visited.contains(&offset) {
                break;
            }
            visited.push(offset);
            let Some((entries, following)) = self.ifd(offset) else { break };
            offsets.extend(
                entries
                    .iter()
                    .filter(|entry| entry.tag == TAG_GPS_IFD)
                    .filter_map(|entry| self.u32_at(entry.value_at))
                    .filter_map(|gps| usize::try_from(gps).ok())
                    .filter(|&gps| gps < self.bytes.len()),
            );
            next = following;
        }
        offsets
    }

    /// Every byte a GPS IFD owns: its count, entries and next pointer (as far as they are
    /// in bounds) and the out-of-line values its entries point to.
    fn gps_ifd_owned(&self, offset: usize) -> Vec<Range<usize>> {
        let Some((entries, _)) = self.ifd(offset) else {
            return Vec::new();
        };
        if entries.is_empty() {
            return Vec::new();
        }
        let mut owned: Vec<Range<usize>> = entries.iter().filter_map(|entry| self.out_of_line_value(entry)).collect();
        let declared_end = offset + 2 + usize::from(self.u16_at(offset).unwrap_or(0)) * 12 + 4;
        owned.push(offset..declared_end.min(self.bytes.len()));
        owned
    }
}

pub(crate) fn scrub_tiff(bytes: &mut [u8]) -> TiffScrub {
    // Find everything first (shared borrow), then zero it (exclusive borrow).
    let (owned, gps_ifds) = {
        let Some(tiff) = Tiff::parse(bytes) else {
            return TiffScrub::Unreadable;
        };
        if tiff.ifd0_offset().is_none() {
            return TiffScrub::Unreadable;
        }
        let mut gps_offsets = tiff.gps_ifd_offsets();
        gps_offsets.sort_unstable();
        gps_offsets.dedup();
        let owned: Vec<Vec<Range<usize>>> = gps_offsets.iter().map(|&offset| tiff.gps_ifd_owned(offset)).collect();
        let gps_ifds = owned.iter().filter(|ranges| !ranges.is_empty()).count();
        (owned, gps_ifds)
    };
    if gps_ifds == 0 {
        return TiffScrub::Untouched;
    }
    // Zeroing the count makes each GPS IFD empty, which keeps the IFD0 pointer valid.
    for range in owned.into_iter().flatten() {
        if let Some(slice) = bytes.get_mut(range) {
            slice.fill(0);
        }
    }
    TiffScrub::GpsRemoved { gps_ifds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testimage::{jpeg_with_exif, tiff_exif, ByteOrder, TEST_CAMERA_MAKE};

    /// The GPS latitude rationals of the test image, as they appear in a little- or
    /// big-endian TIFF; finding them anywhere after the scrub means the data survived.
    fn latitude_bytes(order: ByteOrder) -> Vec<u8> {
        let mut pattern = Vec::new();
        for value in [51u32, 1, 30, 1, 2667, 100] {
            match order {
                ByteOrder::Little => pattern.extend_from_slice(&value.to_le_bytes()),
                ByteOrder::Big => pattern.extend_from_slice(&value.to_be_bytes()),
            }
        }
        pattern
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|window| window == needle)
    }

    fn decode_rgb(bytes: &[u8]) -> Vec<u8> {
        image::load_from_memory(bytes).expect("test image decodes").to_rgb8().into_raw()
    }

    /// Found by the `image_front_door` fuzz target: a GPS IFD that overlaps IFD0, so
    /// zeroing it leaves another GPS IFD with entries.
    #[test]
    fn overlapping_gps_ifds_leave_no_gps() {
        let hex = "ffd8ffe100c24578696600004d4d002a000000080003010f0002000000150000003201120003000000010003000088250004000000010000002400250000fe00456467656e6f646520746573742000000000000000bc9d9e929a8d9efffd000500000001000000040203000000010002000000024e004578";
        let mut bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|index| u8::from_str_radix(&hex[index..index + 2], 16).unwrap()).collect();
        let length = bytes.len();
        strip_gps(&mut bytes);
        assert_eq!(bytes.len(), length);
        assert!(!exif_gps_present(&bytes), "GPS survived the scrub");
    }

    #[test]
    fn jpeg_gps_removed_orientation_and_pixels_kept() {
        let original = jpeg_with_exif(64, 48, 6, true, |x, y| [(x * 4) as u8, (y * 5) as u8, 90]);
        assert!(exif_gps_present(&original));
        assert_eq!(exif_orientation(&original), Some(6));
        assert!(contains(&original, &latitude_bytes(ByteOrder::Little)));

        let mut scrubbed = original.clone();
        let report = strip_gps(&mut scrubbed);
        assert_eq!(report.gps_ifds_emptied, 1);
        assert_eq!(report.exif_blocks_blanked, 0);
        assert_eq!(scrubbed.len(), original.len());
        assert!(!exif_gps_present(&scrubbed));
        assert!(!contains(&scrubbed, &latitude_bytes(ByteOrder::Little)));
        assert_eq!(exif_orientation(&scrubbed), Some(6));
        assert!(contains(&scrubbed, TEST_CAMERA_MAKE.as_bytes()), "other tags untouched");

        // The image crate's own EXIF reader agrees, and the pixels are bit-identical.
        let mut decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&scrubbed))
            .expect("scrubbed JPEG has valid headers");
        use image::ImageDecoder;
        assert_eq!(decoder.orientation().ok(), Some(image::metadata::Orientation::Rotate90));
        assert_eq!(decode_rgb(&scrubbed), decode_rgb(&original));

        // Scrubbing twice changes nothing more.
        let mut twice = scrubbed.clone();
        assert_eq!(strip_gps(&mut twice), GpsScrub::default());
        assert_eq!(twice, scrubbed);
    }

    #[test]
    fn big_endian_tiff_is_scrubbed() {
        let mut tiff = tiff_exif(ByteOrder::Big, 3, true);
        assert!(contains(&tiff, &latitude_bytes(ByteOrder::Big)));
        assert_eq!(scrub_tiff(&mut tiff), TiffScrub::GpsRemoved { gps_ifds: 1 });
        assert!(!contains(&tiff, &latitude_bytes(ByteOrder::Big)));
        let parsed = Tiff::parse(&tiff).expect("header kept");
        let gps = parsed.gps_ifd_offsets();
        assert_eq!(gps.len(), 1, "pointer kept, so the TIFF stays valid");
        assert_eq!(parsed.ifd(gps[0]).map(|(entries, _)| entries.len()), Some(0));
        assert_eq!(image::metadata::Orientation::from_exif_chunk(&tiff).map(|o| o.to_exif()), Some(3));
    }

    #[test]
    fn no_gps_leaves_bytes_alone() {
        let original = jpeg_with_exif(16, 16, 1, false, |_, _| [10, 20, 30]);
        let mut scrubbed = original.clone();
        assert_eq!(strip_gps(&mut scrubbed), GpsScrub::default());
        assert_eq!(scrubbed, original);
        assert!(!exif_gps_present(&original));
        assert_eq!(exif_orientation(&original), Some(1));
    }

    #[test]
    fn png_exif_chunk_is_scrubbed_and_crc_fixed() {
        use image::ImageEncoder;
        let tiff = tiff_exif(ByteOrder::Little, 8, true);
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[200u8; 4 * 4 * 3], 4, 4, image::ExtendedColorType::Rgb8)
            .expect("encode png");
        // Insert eXIf right after IHDR (8 signature + 25 IHDR bytes).
        let mut chunk = Vec::new();
        chunk.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
        chunk.extend_from_slice(b"eXIf");
        chunk.extend_from_slice(&tiff);
        chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
        png.splice(33..33, chunk);
        assert!(exif_gps_present(&png));

        let before = decode_rgb(&png);
        let report = strip_gps(&mut png);
        assert_eq!(report.gps_ifds_emptied, 1);
        assert!(!exif_gps_present(&png));
        assert_eq!(exif_orientation(&png), Some(8));
        // The png crate verifies CRCs of ancillary chunks it reads, eXIf included.
        assert_eq!(decode_rgb(&png), before);
        let block = &png_blocks(&png)[0];
        let crc = block.png_crc.clone().expect("whole chunk");
        assert_eq!(be_u32(&png, crc.at), Some(crc32fast::hash(&png[crc.covered])));
    }

    #[test]
    fn webp_exif_chunk_with_and_without_prefix() {
        for prefix in [&b""[..], EXIF_PREFIX] {
            let mut tiff = prefix.to_vec();
            tiff.extend_from_slice(&tiff_exif(ByteOrder::Little, 6, true));
            let mut webp = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
            webp.extend_from_slice(&10u32.to_le_bytes());
            webp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // EXIF flag, 1x1
            webp.extend_from_slice(b"EXIF");
            webp.extend_from_slice(&(tiff.len() as u32).to_le_bytes());
            webp.extend_from_slice(&tiff);
            if tiff.len() % 2 == 1 {
                webp.push(0);
            }
            assert!(exif_gps_present(&webp));
            let length = webp.len();
            assert_eq!(strip_gps(&mut webp).gps_ifds_emptied, 1);
            assert_eq!(webp.len(), length);
            assert!(!exif_gps_present(&webp));
            assert_eq!(exif_orientation(&webp), Some(6));
        }
    }

    #[test]
    fn xmp_gps_in_jpeg_is_blanked() {
        let xmp = br#"<x:xmpmeta><rdf:Description exif:GPSLatitude="51,30.4N" exif:GPSLongitude="0,7.6W" tiff:Make="Cam"/></x:xmpmeta>"#;
        let mut jpeg = jpeg_with_exif(8, 8, 1, false, |_, _| [1, 2, 3]);
        let mut segment = vec![0xFF, 0xE1];
        segment.extend_from_slice(&((2 + XMP_PREFIX.len() + xmp.len()) as u16).to_be_bytes());
        segment.extend_from_slice(XMP_PREFIX);
        segment.extend_from_slice(xmp);
        jpeg.splice(2..2, segment);
        let length = jpeg.len();
        assert_eq!(strip_gps(&mut jpeg).xmp_gps_fields_blanked, 2);
        assert_eq!(jpeg.len(), length);
        assert!(!contains(&jpeg, b"51,30.4N"));
        assert!(contains(&jpeg, br#"tiff:Make="Cam""#));
    }

    #[test]
    fn xmp_gps_in_png_itxt_is_blanked_and_crc_fixed() {
        use image::ImageEncoder;
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[90u8; 2 * 2 * 3], 2, 2, image::ExtendedColorType::Rgb8)
            .expect("encode png");
        let mut chunk = b"iTXt".to_vec();
        chunk.extend_from_slice(b"XML:com.adobe.xmp\0\0\0en\0\0");
        chunk.extend_from_slice(br#"<rdf:Description exif:GPSLatitude="51,30.4N"/>"#);
        let mut framed = ((chunk.len() - 4) as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        png.splice(33..33, framed);
        let before = decode_rgb(&png);
        assert_eq!(strip_gps(&mut png).xmp_gps_fields_blanked, 1);
        assert!(!contains(&png, b"51,30.4N"));
        let block = &png_blocks(&png)[0];
        let crc = block.png_crc.clone().expect("whole chunk");
        assert_eq!(be_u32(&png, crc.at), Some(crc32fast::hash(&png[crc.covered])));
        assert_eq!(decode_rgb(&png), before);
    }

    #[test]
    fn malformed_exif_never_panics() {
        let good = tiff_exif(ByteOrder::Little, 6, true);
        // Every truncation and a sweep of single-byte corruptions.
        for cut in 0..good.len() {
            let mut tiff = good[..cut].to_vec();
            let _ = scrub_tiff(&mut tiff);
            assert!(!contains(&tiff, &latitude_bytes(ByteOrder::Little)), "latitude survived a cut at {cut}");
        }
        for at in 0..good.len() {
            for value in [0x00, 0x01, 0x7F, 0xFF] {
                let mut tiff = good.clone();
                tiff[at] = value;
                let _ = scrub_tiff(&mut tiff);
                let _ = Tiff::parse(&tiff).map(|t| t.gps_ifd_offsets());
            }
        }
        // Bad header: blanked whole.
        let mut not_tiff = b"XX*\0\x08\0\0\0GPSGPSGPS".to_vec();
        assert_eq!(scrub_tiff(&mut not_tiff), TiffScrub::Unreadable);
        // Containers cut anywhere.
        let jpeg = jpeg_with_exif(8, 8, 6, true, |_, _| [0, 0, 0]);
        for cut in 0..jpeg.len().min(400) {
            let mut piece = jpeg[..cut].to_vec();
            let _ = strip_gps(&mut piece);
            let _ = exif_orientation(&piece);
            let _ = exif_gps_present(&piece);
        }
    }

    #[test]
    fn self_referencing_ifd_chain_terminates() {
        let mut tiff = tiff_exif(ByteOrder::Little, 1, true);
        let ifd0 = Tiff::parse(&tiff).and_then(|t| t.ifd0_offset()).expect("ifd0");
        let count = usize::from(u16::from_le_bytes([tiff[ifd0], tiff[ifd0 + 1]]));
        let next_at = ifd0 + 2 + count * 12;
        tiff[next_at..next_at + 4].copy_from_slice(&(ifd0 as u32).to_le_bytes());
        assert_eq!(scrub_tiff(&mut tiff), TiffScrub::GpsRemoved { gps_ifds: 1 });
    }
}
