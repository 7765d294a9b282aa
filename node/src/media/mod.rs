//! Image pipeline: content sniffing, pixel limits before decoding, EXIF orientation,
//! `thumb`/`display` derivatives without metadata, blurhash, GPS removal from the
//! stored original, and a bounded gate so a Raspberry Pi never runs out of memory.
//!
//! INTERFACE CONTRACT (the API layer is written against exactly this; keep it):

mod convert;
pub mod exif;
mod gate;
mod header;
pub mod testimage;
mod xmp;

pub use convert::{DISPLAY_EDGE_PIXELS, THUMB_EDGE_PIXELS};
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
    /// Cap on decoded pixel buffers alive at once across all workers, in bytes.
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
}

// ---------------------------------------------------------------------------------------
// Implementation

impl MediaLimits {
    /// Sized for a Raspberry Pi 4 with 2 GB shared with everything else on the node:
    /// a 48 or 64 MP phone photo is accepted but runs alone; two 12 MP photos
    /// (36 MB decoded each) convert side by side.
    pub fn default_for_pi() -> Self {
        MediaLimits {
            upload_bytes_max: 32 * 1024 * 1024,
            pixels_max: 64 * 1024 * 1024,
            workers: 2,
            decoded_bytes_in_flight_max: 256 * 1024 * 1024,
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

/// Converts uploads. Blocking: runs on the caller's thread, but waits at a gate so at
/// most `limits.workers` conversions run at once and at most
/// `decoded_bytes_in_flight_max` bytes of decoded pixels are alive at once (a job
/// reserves its estimated decoded size before decoding; a job larger than the whole
/// budget runs alone). Thread-safe; share it via `Arc`. Call it from a blocking thread
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

    /// Sniffs, checks the declared pixel count before decoding anything, decodes with
    /// `image::Limits`, applies EXIF orientation, makes `display` (fits 1080) and `thumb`
    /// (fits 256) JPEGs with no metadata, the blurhash (of the thumb, 4×3 components),
    /// and removes GPS from the original.
    ///
    /// Does not check `upload_bytes_max`: the body was already read by then, and the
    /// caller must refuse an oversized body while reading it.
    pub fn process(&self, bytes: &[u8]) -> Result<Processed, MediaError> {
        let kind = sniff(bytes).ok_or(MediaError::Unsupported)?;
        let declared = header::declared(kind, bytes)
            .ok_or_else(|| MediaError::Undecodable(format!("no image size found in the {} header", kind.mime())))?;
        self.check_pixels(declared.width, declared.height)?;
        header::check_complete(kind, bytes).map_err(|missing| MediaError::Undecodable(missing.to_owned()))?;

        // Everything from opening the decoder (it copies the input) to the last derivative
        // runs inside the gate.
        let (width, height, derived) = {
            let _permit = self.gate.acquire(convert::decoded_bytes_estimate(&declared));
            let mut decoder = convert::open_decoder(kind, bytes, Self::decoder_limits(&declared))?;
            // The reservation was sized from our reading of the header; a decoder that reads
            // it differently is looking at a malformed file.
            let (width, height) = decoder.dimensions();
            if (width, height) != (declared.width, declared.height) {
                return Err(MediaError::Undecodable(format!(
                    "header declares {}x{} but the image data is {width}x{height}",
                    declared.width, declared.height
                )));
            }
            // Unreadable orientation metadata is not worth refusing a photo over.
            let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
            let (width, height) = upright(width, height, orientation);
            (width, height, convert::decode_and_derive(decoder, orientation)?)
        };

        let mut original = bytes.to_vec();
        strip_gps(&mut original);
        Ok(Processed {
            kind,
            width,
            height,
            blurhash: derived.blurhash,
            original,
            display: derived.display,
            thumb: derived.thumb,
        })
    }

    /// Makes the derivatives again from a stored original (when a derivative file is
    /// missing). The stored original already has no GPS and still has its orientation,
    /// so this is the same conversion.
    pub fn derive(&self, original: &[u8]) -> Result<Processed, MediaError> {
        self.process(original)
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
