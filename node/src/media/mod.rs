//! Image pipeline: content sniffing, pixel limits before decoding, EXIF orientation,
//! `thumb`/`display` derivatives in sRGB without metadata, the square `avatar` of a
//! profile photo, blurhash, GPS removal from the
//! stored original, and a bounded gate so a Raspberry Pi never runs out of memory.
//!
//! INTERFACE CONTRACT (the API layer is written against exactly this; keep it):

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

mod colour;
mod convert;
pub mod exif;
mod gate;
mod header;
mod png_meta;
pub mod testimage;
mod xmp;

pub use convert::{AVATAR_EDGE_PIXELS, DISPLAY_EDGE_PIXELS, THUMB_EDGE_PIXELS};
pub use exif::{exif_gps_present, exif_orientation, strip_gps, GpsScrub};
pub use gate::GateStats;

// ---------------------------------------------------------------------------------------
// Interface contract

/// Limits on every input to the pipeline.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Largest upload body accepted, in bytes.
    pub upload_bytes_max: usize,
    /// Largest image accepted, in pixels (width × height as the header declares it).
    pub pixels_max: u64,
    /// Conversions running at once.
    pub workers: usize,
    /// Cap on decoded pixel buffers (and the uploaded bytes being converted) alive at
    /// once across all workers, in bytes. Also the most one image may need: an image
    /// whose conversion alone would need more is refused before decoding.
    pub decoded_bytes_in_flight_max: u64,
}

/// The image formats we accept, detected from content, never from a header or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Jpeg,
    Png,
    Webp,
}

/// One derivative: a freshly encoded JPEG carrying no metadata at all.
#[derive(Debug, Clone)]
pub struct Variant {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// The result of converting one upload.
#[derive(Debug, Clone)]
pub struct Processed {
    pub kind: MediaKind,
    /// Upright dimensions (after EXIF orientation).
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
    /// The uploaded bytes with GPS tags removed; pixels untouched.
    pub original: Vec<u8>,
    /// Fits 1080 × 1080, never upscaled.
    pub display: Variant,
    /// Fits 256 × 256, never upscaled.
    pub thumb: Variant,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("unsupported media type: send a JPEG, PNG or WebP image")]
    Unsupported,
    #[error("image is {width}x{height} = {pixels} pixels; the limit is {pixels_max}")]
    TooManyPixels { width: u32, height: u32, pixels: u64, pixels_max: u64 },
    #[error("image could not be decoded: {0}")]
    Undecodable(String),
    /// The upload's file could not be read (the node's storage, not the image).
    #[error("the upload could not be read: {0}")]
    Unreadable(String),
}

// ---------------------------------------------------------------------------------------
// Implementation

impl MediaLimits {
    /// Sized for a 1 GB board shared with everything else on the node: 2 workers ×
    /// 96 MiB. Two 12 MP photos (~50 MiB each with their resize buffers) convert side by
    /// side; a photo of up to ~45 MP runs alone; larger ones, and 16-bit or lossless
    /// images whose decoders need more, are refused (413) before decoding.
    pub fn default_for_pi() -> Self {
        MediaLimits {
            upload_bytes_max: 32 * 1024 * 1024,
            pixels_max: 64 * 1024 * 1024,
            workers: 2,
            decoded_bytes_in_flight_max: 192 * 1024 * 1024,
        }
    }
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self::default_for_pi()
    }
}

impl MediaKind {
    pub fn mime(&self) -> &'static str {
        match self {
            MediaKind::Jpeg => "image/jpeg",
            MediaKind::Png => "image/png",
            MediaKind::Webp => "image/webp",
        }
    }

    pub fn extension(&self) -> &'static str {
        match self {
            MediaKind::Jpeg => "jpg",
            MediaKind::Png => "png",
            MediaKind::Webp => "webp",
        }
    }
}

/// The format of `bytes`, from its magic bytes alone.
pub fn sniff(bytes: &[u8]) -> Option<MediaKind> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(MediaKind::Jpeg)
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(MediaKind::Png)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(MediaKind::Webp)
    } else {
        None
    }
}

/// Allocation allowed to a decoder beyond the pixels themselves (ICC profile, text chunks).
const METADATA_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// How much of an uploaded file is read, outside the gate, to find its header. A JPEG
/// whose frame header lies further in is searched segment by segment.
const FILE_HEAD_BYTES_MAX: u64 = 64 * 1024;
/// Copies of the uploaded bytes alive during a conversion, charged to the budget: the
/// upload itself (or the original we copy from it), plus the JPEG decoder's own copy of
/// its input or the PNG scrubber's rebuilt file.
const UPLOAD_COPIES: u64 = 2;

/// Converts uploads. Blocking: runs on the caller's thread, but waits at a gate so at
/// most `limits.workers` conversions run at once and at most
/// `decoded_bytes_in_flight_max` bytes of decoded pixels are alive at once (a job
/// reserves its estimated decoded size before decoding; a job larger than the whole
/// budget runs alone; a small image has one slot more, so it never waits behind a large
/// one). Thread-safe; share it via `Arc`. Call it from a blocking thread
/// (`tokio::task::spawn_blocking`), never from an async task.
#[derive(Debug)]
pub struct Pipeline {
    limits: MediaLimits,
    gate: gate::Gate,
}

impl Pipeline {
    pub fn new(limits: MediaLimits) -> Self {
        let gate = gate::Gate::new(limits.workers, limits.decoded_bytes_in_flight_max);
        Pipeline { limits, gate }
    }

    pub fn limits(&self) -> &MediaLimits {
        &self.limits
    }

    /// Jobs running and waiting and bytes reserved right now, for `/metrics`.
    pub fn gate_stats(&self) -> GateStats {
        self.gate.stats()
    }

    /// Sniffs, checks the declared pixel count and the memory the conversion will need
    /// before decoding anything, decodes with limits, applies EXIF orientation, makes
    /// `display` (fits 1080) and `thumb` (fits 256) JPEGs with no metadata, the blurhash
    /// (of the thumb, 4×3 components), and removes GPS from the original.
    ///
    /// Does not check `upload_bytes_max`: the body was already read by then, and the
    /// caller must refuse an oversized body while reading it.
    pub fn process(&self, bytes: &[u8]) -> Result<Processed, MediaError> {
        let kind = sniff(bytes).ok_or(MediaError::Unsupported)?;
        let declared = header::declared(kind, bytes)
            .ok_or_else(|| MediaError::Undecodable(format!("no image size found in the {} header", kind.mime())))?;
        let reservation = self.admit(kind, &declared, bytes.len() as u64)?;
        header::check_complete(kind, bytes).map_err(|missing| MediaError::Undecodable(missing.to_owned()))?;
        // Everything from copying the original to the last derivative runs inside the gate.
        let _permit = self.gate.acquire(reservation);
        let converted = self.convert(kind, &declared, bytes)?;
        let mut original = bytes.to_vec();
        strip_gps(&mut original);
        Ok(converted.into_processed(kind, original))
    }

    /// [`Pipeline::process`] for an upload spooled to a file: only the file's head is read
    /// before the gate; the whole file is read inside the gate slot (so at most `workers`
    /// uploads are in memory at once) and its size is charged to the budget. The file's
    /// bytes become the original (scrubbed in place), so they are held once.
    pub fn process_file(&self, path: &Path) -> Result<Processed, MediaError> {
        let read_error =
            |error: std::io::Error| MediaError::Unreadable(format!("reading {} failed: {error}", path.display()));
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let file_bytes = file.metadata().map_err(read_error)?.len();
        let mut head = Vec::new();
        (&mut file).take(FILE_HEAD_BYTES_MAX).read_to_end(&mut head).map_err(read_error)?;
        let kind = sniff(&head).ok_or(MediaError::Unsupported)?;
        let declared = match header::declared(kind, &head) {
            Some(declared) => Some(declared),
            None if kind == MediaKind::Jpeg => header::jpeg_frame_from_reader(&mut file),
            None => None,
        }
        .ok_or_else(|| MediaError::Undecodable(format!("no image size found in the {} header", kind.mime())))?;
        let reservation = self.admit(kind, &declared, file_bytes)?;
        drop(head);

        let _permit = self.gate.acquire(reservation);
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(usize::try_from(file_bytes).unwrap_or(usize::MAX)).map_err(|error| {
            MediaError::Undecodable(format!("no memory to read the {file_bytes}-byte upload: {error}"))
        })?;
        file.seek(SeekFrom::Start(0)).map_err(read_error)?;
        // The spooled file is ours and complete; `take` keeps a file that grew from
        // outrunning the reservation.
        file.take(file_bytes).read_to_end(&mut bytes).map_err(read_error)?;
        // The reservation was sized from the head; the whole file must say the same.
        let whole = header::declared(kind, &bytes);
        if whole.map(|whole| (whole.width, whole.height, whole.decoded_bytes_per_pixel))
            != Some((declared.width, declared.height, declared.decoded_bytes_per_pixel))
        {
            return Err(MediaError::Undecodable("the image header is inconsistent".to_owned()));
        }
        header::check_complete(kind, &bytes).map_err(|missing| MediaError::Undecodable(missing.to_owned()))?;
        let converted = self.convert(kind, &declared, &bytes)?;
        strip_gps(&mut bytes);
        Ok(converted.into_processed(kind, bytes))
    }

    /// Refuses what may not be converted at all (too many pixels, or more memory than the
    /// whole budget); returns the bytes to reserve at the gate.
    fn admit(&self, kind: MediaKind, declared: &header::Declared, upload_bytes: u64) -> Result<u64, MediaError> {
        let (width, height) = (declared.width, declared.height);
        self.check_pixels(width, height)?;
        let reservation =
            convert::decoded_bytes_estimate(kind, declared).saturating_add(upload_bytes.saturating_mul(UPLOAD_COPIES));
        let budget = self.limits.decoded_bytes_in_flight_max;
        if reservation > budget {
            let pixels = u64::from(width) * u64::from(height);
            // The largest image of this shape and kind that would fit, in pixels.
            let pixels_max = u64::try_from(u128::from(pixels) * u128::from(budget) / u128::from(reservation))
                .unwrap_or(u64::MAX)
                .min(self.limits.pixels_max);
            return Err(MediaError::TooManyPixels { width, height, pixels, pixels_max });
        }
        Ok(reservation)
    }

    /// The pixel work, inside the gate.
    fn convert(&self, kind: MediaKind, declared: &header::Declared, bytes: &[u8]) -> Result<Converted, MediaError> {
        let decoded = convert::decode_rgb8(kind, bytes, declared, Self::decoder_limits(declared))?;
        // Unreadable orientation metadata is not worth refusing a photo over.
        let orientation = exif_orientation(bytes)
            .and_then(|value| u8::try_from(value).ok())
            .and_then(image::metadata::Orientation::from_exif)
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        let (width, height) = upright(decoded.full.width(), decoded.full.height(), orientation);
        let derived = convert::derive(decoded, orientation)?;
        Ok(Converted { width, height, derived })
    }

    /// Makes the derivatives again from a stored original (when a derivative file is
    /// missing). The stored original already has no GPS and still has its orientation,
    /// so this is the same conversion.
    pub fn derive(&self, original: &[u8]) -> Result<Processed, MediaError> {
        self.process(original)
    }

    /// The square avatar derivative of a photo, made from its `display` derivative
    /// (which this pipeline made: upright, sRGB, no metadata, at most 1080 px, so
    /// nothing is lost at 256 px): the largest centred square, fitted into
    /// `AVATAR_EDGE_PIXELS` square, a JPEG with no metadata. Checked and decoded with
    /// the same limits as an upload, inside the gate.
    pub fn avatar(&self, display: &[u8]) -> Result<Variant, MediaError> {
        let kind = sniff(display).ok_or(MediaError::Unsupported)?;
        let declared = header::declared(kind, display)
            .ok_or_else(|| MediaError::Undecodable(format!("no image size found in the {} header", kind.mime())))?;
        let reservation = self.admit(kind, &declared, display.len() as u64)?;
        header::check_complete(kind, display).map_err(|missing| MediaError::Undecodable(missing.to_owned()))?;
        let _permit = self.gate.acquire(reservation);
        let decoded = convert::decode_rgb8(kind, display, &declared, Self::decoder_limits(&declared))?;
        convert::square_avatar(&decoded.full)
    }

    fn check_pixels(&self, width: u32, height: u32) -> Result<(), MediaError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.limits.pixels_max {
            return Err(MediaError::TooManyPixels { width, height, pixels, pixels_max: self.limits.pixels_max });
        }
        if pixels == 0 {
            return Err(MediaError::Undecodable(format!("image is {width}x{height}: it has no pixels")));
        }
        Ok(())
    }

    /// The image must be exactly what the header declared, and the decoder may allocate
    /// its decoded size plus a little for metadata chunks (ICC profiles, text) — nothing
    /// the header did not announce.
    fn decoder_limits(declared: &header::Declared) -> image::Limits {
        let decoded_bytes =
            (u64::from(declared.width) * u64::from(declared.height)).saturating_mul(declared.decoded_bytes_per_pixel);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(declared.width);
        limits.max_image_height = Some(declared.height);
        limits.max_alloc = Some(decoded_bytes.saturating_add(METADATA_BYTES_MAX));
        limits
    }
}

/// A conversion's results before the original is attached.
struct Converted {
    width: u32,
    height: u32,
    derived: convert::Derived,
}

impl Converted {
    fn into_processed(self, kind: MediaKind, original: Vec<u8>) -> Processed {
        Processed {
            kind,
            width: self.width,
            height: self.height,
            blurhash: self.derived.blurhash,
            original,
            display: self.derived.display,
            thumb: self.derived.thumb,
        }
    }
}

/// Dimensions once `orientation` is applied: the four orientations that turn the image
/// a quarter swap width and height.
fn upright(width: u32, height: u32, orientation: image::metadata::Orientation) -> (u32, u32) {
    use image::metadata::Orientation::*;
    match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (height, width),
        NoTransforms | Rotate180 | FlipHorizontal | FlipVertical => (width, height),
    }
}

#[cfg(test)]
mod tests;
