//! The pixel work of one conversion: decode with limits, flatten to RGB8, resize, orient,
//! encode metadata-free JPEGs and compute the blurhash.
//!
//! Order matters for memory: the full-size image is resized *before* EXIF orientation is
//! applied (rotating a 12 MP image would copy 36 MB; rotating the 1080 px display copies
//! 3.5 MB), and the full-size buffer is freed before anything is encoded. Both boxes are
//! square, so fitting before rotating gives the same size as fitting after.

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageError, RgbImage};

use super::header::Declared;
use super::{MediaError, MediaKind, Variant};

/// Long edge of the `display` derivative, in pixels.
pub const DISPLAY_EDGE_PIXELS: u32 = 1080;
/// Long edge of the `thumb` derivative, in pixels.
pub const THUMB_EDGE_PIXELS: u32 = 256;
const DISPLAY_JPEG_QUALITY: u8 = 82;
const THUMB_JPEG_QUALITY: u8 = 80;
const BLURHASH_COMPONENTS_X: u32 = 4;
const BLURHASH_COMPONENTS_Y: u32 = 3;
/// Lanczos3 is the sharpest of the usual filters for downscaling. With fast_image_resize's
/// SIMD it took 30–50 ms for 12 MP → 1080 px on the 2-core x86 dev box (CatmullRom: ~18 ms,
/// the image crate's own Lanczos3: ~400 ms), against ~130–200 ms for decoding the JPEG.
const RESIZE: ResizeAlg = ResizeAlg::Convolution(FilterType::Lanczos3);

/// A decoder whose header has been read, ready to decode pixels.
pub(crate) type OpenDecoder<'a> = Box<dyn ImageDecoder + 'a>;

/// Opens the format's decoder over `bytes` with `limits` installed (the second line of
/// defence after the header check: it stops allocations the header did not announce).
pub(crate) fn open_decoder(
    kind: MediaKind,
    bytes: &[u8],
    limits: image::Limits,
) -> Result<OpenDecoder<'_>, MediaError> {
    let cursor = Cursor::new(bytes);
    let mut decoder: OpenDecoder<'_> = match kind {
        MediaKind::Jpeg => Box::new(JpegDecoder::new(cursor).map_err(undecodable)?),
        MediaKind::Png => Box::new(PngDecoder::with_limits(cursor, limits.clone()).map_err(undecodable)?),
        MediaKind::Webp => Box::new(WebPDecoder::new(cursor).map_err(undecodable)?),
    };
    decoder.set_limits(limits).map_err(undecodable)?;
    Ok(decoder)
}

/// Bytes of pixel buffers a job holds at its peak, bounded from the header alone (so the
/// gate can be entered before a decoder exists): the decoded image, its RGB8 copy when
/// the decoder may produce something else, a progressive JPEG's coefficients, and the
/// (small, bounded) derivatives.
pub(crate) fn decoded_bytes_estimate(declared: &Declared) -> u64 {
    let pixels = u64::from(declared.width) * u64::from(declared.height);
    let decoded = pixels.saturating_mul(declared.decoded_bytes_per_pixel);
    let flattened = if declared.decoded_bytes_per_pixel == 3 { 0 } else { pixels.saturating_mul(3) };
    // zune-jpeg holds an i16 per component sample for the whole image (upper bound: no
    // chroma subsampling).
    let coefficients = if declared.progressive { pixels.saturating_mul(3 * 2) } else { 0 };
    let display_edge = u64::from(DISPLAY_EDGE_PIXELS);
    // The display buffer, its rotated copy and the resizer's scratch, roughly.
    let derivatives = display_edge * display_edge * 3 * 3;
    decoded.saturating_add(flattened).saturating_add(coefficients).saturating_add(derivatives)
}

/// The derivatives of one image, already upright.
pub(crate) struct Derived {
    pub display: Variant,
    pub thumb: Variant,
    pub blurhash: String,
}

/// Decodes, then makes the derivatives. Consumes the decoder; the full-size pixels are
/// dropped before encoding starts.
pub(crate) fn decode_and_derive(decoder: OpenDecoder<'_>, orientation: Orientation) -> Result<Derived, MediaError> {
    let full = flatten_to_rgb8(DynamicImage::from_decoder(decoder).map_err(undecodable)?);
    let display = resize_to_fit(&full, DISPLAY_EDGE_PIXELS)?;
    drop(full);
    // From the display image, not the source: a few ms for 0.9 MP instead of ~30 ms for
    // 12 MP, and at 1080 px the display still has four times the thumb's resolution, so
    // nothing the thumb could show is lost.
    let thumb = resize_to_fit(&display, THUMB_EDGE_PIXELS)?;

    let display = orient(display, orientation);
    let thumb = orient(thumb, orientation);
    let blurhash = blurhash_of(&thumb);
    Ok(Derived {
        display: encode_jpeg(&display, DISPLAY_JPEG_QUALITY)?,
        thumb: encode_jpeg(&thumb, THUMB_JPEG_QUALITY)?,
        blurhash,
    })
}

/// RGB8, with any transparency composited over white: dropping alpha would show
/// whatever colour transparent pixels happen to hold (usually black).
fn flatten_to_rgb8(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for pixel in rgba.as_raw().chunks_exact(4) {
        let alpha = u32::from(pixel[3]);
        for &channel in &pixel[..3] {
            // channel·α + 255·(1−α), rounded, all in 0..=255.
            let blended = (u32::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255;
            rgb.push(blended as u8);
        }
    }
    // Same dimensions and three bytes per pixel: the buffer always fits.
    RgbImage::from_raw(width, height, rgb).unwrap_or_else(|| RgbImage::new(width, height))
}

/// Fits `(width, height)` inside `edge`×`edge` keeping the aspect ratio; never upscales,
/// never returns a zero side.
pub(crate) fn fit(width: u32, height: u32, edge: u32) -> (u32, u32) {
    if width <= edge && height <= edge {
        return (width.max(1), height.max(1));
    }
    let scaled = |short: u32, long: u32| -> u32 {
        let value = (u64::from(short) * u64::from(edge) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(value).unwrap_or(edge).clamp(1, edge)
    };
    if width >= height {
        (edge, scaled(height, width))
    } else {
        (scaled(width, height), edge)
    }
}

fn resize_to_fit(source: &RgbImage, edge: u32) -> Result<RgbImage, MediaError> {
    let (width, height) = source.dimensions();
    let (target_width, target_height) = fit(width, height, edge);
    if (target_width, target_height) == (width, height) {
        return Ok(source.clone());
    }
    let source_view = ImageRef::new(width, height, source.as_raw(), PixelType::U8x3)
        .map_err(|error| internal("resize source", error))?;
    let mut target = Image::new(target_width, target_height, PixelType::U8x3);
    Resizer::new()
        .resize(&source_view, &mut target, &ResizeOptions::new().resize_alg(RESIZE))
        .map_err(|error| internal("resize", error))?;
    RgbImage::from_raw(target_width, target_height, target.into_vec())
        .ok_or_else(|| internal("resize", "buffer size mismatch"))
}

fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    image.into_rgb8()
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Variant, MediaError> {
    let mut bytes = Vec::new();
    // A fresh encoder writes SOI, JFIF APP0, tables and the scan: no EXIF, ICC or XMP.
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(image.as_raw(), image.width(), image.height(), ExtendedColorType::Rgb8)
        .map_err(|error| internal("jpeg encode", error))?;
    Ok(Variant { bytes, width: image.width(), height: image.height() })
}

fn blurhash_of(thumb: &RgbImage) -> String {
    let rgba: Vec<u8> = thumb.as_raw().chunks_exact(3).flat_map(|pixel| [pixel[0], pixel[1], pixel[2], 255]).collect();
    blurhash::encode(BLURHASH_COMPONENTS_X, BLURHASH_COMPONENTS_Y, thumb.width(), thumb.height(), &rgba)
        // Fails only for component counts outside 1..=9, and ours are constants.
        .expect("blurhash component counts are within 1..=9")
}

pub(crate) fn undecodable(error: ImageError) -> MediaError {
    MediaError::Undecodable(error.to_string())
}

/// Failures that valid input cannot cause (our own buffer bookkeeping). The interface has
/// no variant for them, and to the uploader the outcome is the same: not converted.
fn internal(step: &str, error: impl std::fmt::Display) -> MediaError {
    MediaError::Undecodable(format!("{step} failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(4000, 3000, 256), (256, 192));
        assert_eq!(fit(3000, 4000, 1080), (810, 1080));
        assert_eq!(fit(1080, 1080, 1080), (1080, 1080));
        assert_eq!(fit(200, 100, 1080), (200, 100));
        assert_eq!(fit(100_000, 1, 256), (256, 1));
        assert_eq!(fit(1, 65_535, 256), (1, 256));
    }

    #[test]
    fn transparent_pixels_become_white() {
        let mut image = image::RgbaImage::new(2, 1);
        image.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        image.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        let rgb = flatten_to_rgb8(DynamicImage::ImageRgba8(image));
        assert_eq!(rgb.as_raw(), &[255, 255, 255, 10, 20, 30]);
    }
}
