//! The pixel work of one conversion: decode with limits, flatten to RGB8, resize, orient,
//! encode metadata-free JPEGs and compute the blurhash.
//!
//! Order matters for memory: the full-size image is resized *before* EXIF orientation is
//! applied (rotating a 12 MP image would copy 36 MB; rotating the 1080 px display copies
//! 3.5 MB), and the full-size buffer is freed before anything is encoded. Both boxes are
//! square, so fitting before rotating gives the same size as fitting after.
//!
//! There is only ever one full-size buffer: decoders write into a buffer already sized
//! for RGB8 and the result is flattened to RGB8 in place (grey expanded from the back,
//! alpha composited from the front). PNG is decoded row by row with 16-bit samples
//! stripped to 8 as each row arrives, so a 16-bit PNG never has a 16-bit copy of the
//! image at all: a 64 MP 16-bit RGBA PNG costs 192 MB of RGB8 instead of 512 MB + 256 MB.
//!
//! The embedded ICC profile is read from the decoder's header before the full-size buffer
//! exists, and the display image is converted to sRGB with it (`colour.rs`) before the
//! thumb is made from it.

use std::io::Cursor;

use image::ColorType;

use edgenode_pixels::{encode_jpeg_rgb8, resize_rgb8};
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, RgbImage};

use super::colour::{self, Samples, ToSrgb};
use super::header::{self, Declared};
use super::{MediaError, MediaKind, Variant};

/// Fixed allowance for the work after the full-size image is gone: the thumb, its resize
/// scratch, the JPEG encoders' buffers and the blurhash.
const AFTER_RESIZE_SLACK_BYTES: u64 = 2 * 1024 * 1024;
// The colour transform is made before any pixel buffer exists, in the room the estimate
// keeps for the slack and the transform.
const _: () = assert!(colour::SETUP_BYTES_MAX <= AFTER_RESIZE_SLACK_BYTES + colour::TRANSFORM_BYTES_MAX);

/// Long edge of the `display` derivative, in pixels.
pub const DISPLAY_EDGE_PIXELS: u32 = 1080;
/// Long edge of the `thumb` derivative, in pixels.
pub const THUMB_EDGE_PIXELS: u32 = 256;
/// Side of the square `avatar` derivative, in pixels.
pub const AVATAR_EDGE_PIXELS: u32 = 256;
const AVATAR_JPEG_QUALITY: u8 = 85;
const DISPLAY_JPEG_QUALITY: u8 = 82;
const THUMB_JPEG_QUALITY: u8 = 80;
const BLURHASH_COMPONENTS_X: u32 = 4;
const BLURHASH_COMPONENTS_Y: u32 = 3;

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
/// gate can be entered, or the image refused, before a decoder exists). Two phases, and
/// the larger one counts:
/// - decoding: the full-size buffer (RGB8, or the decoder's 4-byte RGBA it is flattened
///   from in place) plus the decoder's own scratch (progressive JPEG coefficients, WebP
///   planes);
/// - resizing: the same full-size buffer, fast_image_resize's intermediate image (it runs
///   the vertical pass first for u8 pixels: source width × target height × 3) and the
///   display image;
///
/// then the colour transform, kept until the display is converted (charged to every image:
/// whether it has a profile is not known from the header), the display's rotated copy and
/// a fixed slack for the thumb and encoders. Making the transform happens before any
/// pixel buffer exists, in the room of the slack and the transform.
/// The uploaded bytes are not included: the caller charges them.
pub(crate) fn decoded_bytes_estimate(kind: MediaKind, declared: &Declared) -> u64 {
    let (width, height) = (u64::from(declared.width), u64::from(declared.height));
    let pixels = width * height;
    // PNG is decoded straight to RGB8 whatever its depth; others into a buffer of at
    // least three bytes a pixel that is flattened in place.
    let full_bytes_per_pixel = match kind {
        MediaKind::Png => 3,
        MediaKind::Jpeg | MediaKind::Webp => declared.decoded_bytes_per_pixel.max(3),
    };
    let full = pixels.saturating_mul(full_bytes_per_pixel);
    let decoding = full.saturating_add(declared.decoder_scratch_bytes);
    let (display_width, display_height) = fit(declared.width, declared.height, DISPLAY_EDGE_PIXELS);
    let display = u64::from(display_width) * u64::from(display_height) * 3;
    let resize_intermediate = width.saturating_mul(u64::from(display_height)) * 3;
    let resizing = full.saturating_add(resize_intermediate).saturating_add(display);
    decoding
        .max(resizing)
        .saturating_add(colour::TRANSFORM_BYTES_MAX)
        .saturating_add(display)
        .saturating_add(AFTER_RESIZE_SLACK_BYTES)
}

/// A decoded image: the full-size pixels as the file encodes them, and the conversion of
/// its colour space to sRGB when it is not sRGB already.
pub(crate) struct Decoded {
    pub full: RgbImage,
    pub to_srgb: Option<ToSrgb>,
}

/// Decodes the whole image to RGB8, checking that the data has the size the header
/// declared (the memory reservation was sized from it), and reads its colour profile.
pub(crate) fn decode_rgb8(
    kind: MediaKind,
    bytes: &[u8],
    declared: &Declared,
    limits: image::Limits,
) -> Result<Decoded, MediaError> {
    match kind {
        // The png crate's own allocations are rows and chunk buffers; text chunks are
        // skipped (we do not use them), so rows and the ICC profile are nearly all of it.
        MediaKind::Png => {
            let row_bytes_max = u64::from(declared.width).saturating_mul(8 * 4);
            decode_png_rgb8(bytes, declared, super::METADATA_BYTES_MAX.saturating_add(row_bytes_max))
        }
        MediaKind::Jpeg | MediaKind::Webp => {
            let mut decoder = open_decoder(kind, bytes, limits)?;
            check_dimensions(declared, decoder.dimensions())?;
            let to_srgb = embedded_to_srgb(kind, bytes, &mut decoder);
            Ok(Decoded { full: decode_in_place_rgb8(decoder)?, to_srgb })
        }
    }
}

/// The conversion to sRGB the decoder's embedded ICC profile calls for, made before any
/// pixel buffer exists. A JPEG's profile is measured in its header first, so that an
/// untagged JPEG costs no second header parse and an oversized profile is never copied.
fn embedded_to_srgb(kind: MediaKind, bytes: &[u8], decoder: &mut OpenDecoder<'_>) -> Option<ToSrgb> {
    if kind == MediaKind::Jpeg {
        let profile_bytes = header::jpeg_icc_profile_bytes(bytes);
        if profile_bytes == 0 {
            return None;
        }
        if profile_bytes > colour::PROFILE_BYTES_MAX {
            tracing::debug!(
                profile_bytes,
                profile_bytes_max = colour::PROFILE_BYTES_MAX,
                "embedded ICC profile too large to use; pixels kept as they are"
            );
            return None;
        }
    }
    let samples = match decoder.color_type() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => Samples::Grey,
        _ => Samples::Colour,
    };
    match decoder.icc_profile() {
        Ok(Some(profile)) => colour::to_srgb(&profile, samples),
        Ok(None) => None,
        Err(error) => {
            tracing::debug!(%error, "embedded ICC profile unreadable; pixels kept as they are");
            None
        }
    }
}

fn check_dimensions(declared: &Declared, (width, height): (u32, u32)) -> Result<(), MediaError> {
    if (width, height) != (declared.width, declared.height) {
        return Err(MediaError::Undecodable(format!(
            "header declares {}x{} but the image data is {width}x{height}",
            declared.width, declared.height
        )));
    }
    Ok(())
}

/// A zeroed buffer, or an error instead of an abort when the allocator says no.
fn zeroed_buffer(bytes: u64) -> Result<Vec<u8>, MediaError> {
    let length = usize::try_from(bytes).map_err(|_| internal("allocate", "image too large for this machine"))?;
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(length).map_err(|error| internal("allocate", error))?;
    buffer.resize(length, 0);
    Ok(buffer)
}

/// JPEG and WebP through the image crate's decoders, into one buffer sized for the larger
/// of what the decoder writes and RGB8, then flattened in place.
fn decode_in_place_rgb8(decoder: OpenDecoder<'_>) -> Result<RgbImage, MediaError> {
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let channels = match color {
        ColorType::L8 => 1,
        ColorType::La8 => 2,
        ColorType::Rgb8 => 3,
        ColorType::Rgba8 => 4,
        // Not produced by our JPEG and WebP decoders today; take the general road.
        _ => return Ok(flatten_to_rgb8(DynamicImage::from_decoder(decoder).map_err(undecodable)?)),
    };
    let pixels = u64::from(width) * u64::from(height);
    let mut buffer = zeroed_buffer(pixels * channels.max(3))?;
    let decoded_length = usize::try_from(decoder.total_bytes()).map_err(|error| internal("decode", error))?;
    let decoded = buffer.get_mut(..decoded_length).ok_or_else(|| internal("decode", "decoder wants more bytes"))?;
    decoder.read_image(decoded).map_err(undecodable)?;
    flatten_in_place(&mut buffer, usize::try_from(channels).unwrap_or(3));
    buffer.truncate(usize::try_from(pixels * 3).unwrap_or(0));
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| internal("decode", "buffer size mismatch"))
}

/// Turns `channels`-byte pixels at the start of `buffer` (which has room for three bytes
/// a pixel) into RGB8 in the same buffer. Grey (+alpha) grows, so it runs from the back;
/// RGBA shrinks, so it runs from the front: either way no pixel is overwritten before it
/// is read.
fn flatten_in_place(buffer: &mut [u8], channels: usize) {
    let pixels = buffer.len() / channels.max(3);
    match channels {
        1 | 2 => {
            for index in (0..pixels).rev() {
                let grey = buffer[index * channels];
                let alpha = if channels == 2 { buffer[index * channels + 1] } else { 255 };
                let value = over_white(grey, alpha);
                buffer[index * 3..index * 3 + 3].fill(value);
            }
        }
        4 => {
            for index in 0..pixels {
                let pixel: [u8; 4] =
                    [buffer[index * 4], buffer[index * 4 + 1], buffer[index * 4 + 2], buffer[index * 4 + 3]];
                for channel in 0..3 {
                    buffer[index * 3 + channel] = over_white(pixel[channel], pixel[3]);
                }
            }
        }
        _ => {}
    }
}

/// A channel composited over white: channel·α + 255·(1−α), rounded, all in 0..=255.
fn over_white(channel: u8, alpha: u8) -> u8 {
    let alpha = u32::from(alpha);
    ((u32::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255) as u8
}

/// PNG through the png crate directly, one row at a time: palettes and low bit depths
/// expanded, 16-bit samples stripped to 8, each row flattened to RGB8 and written (or, for
/// an Adam7-interlaced image, spread by its pass) into the one full-size buffer. The
/// colour profile is the iCCP chunk's, unless an sRGB chunk says the image is sRGB.
fn decode_png_rgb8(bytes: &[u8], declared: &Declared, metadata_bytes_max: u64) -> Result<Decoded, MediaError> {
    let png_error = |error: png::DecodingError| MediaError::Undecodable(error.to_string());
    let limits = png::Limits { bytes: usize::try_from(metadata_bytes_max).unwrap_or(usize::MAX) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let (width, height) = (reader.info().width, reader.info().height);
    check_dimensions(declared, (width, height))?;
    let (color, _) = reader.output_color_type();
    let samples = match color {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => Samples::Grey,
        png::ColorType::Rgb | png::ColorType::Rgba | png::ColorType::Indexed => Samples::Colour,
    };
    let to_srgb = match (&reader.info().srgb, &reader.info().icc_profile) {
        (None, Some(profile)) => colour::to_srgb(profile, samples),
        _ => None,
    };
    let channels = color.samples();
    let row_stride = usize::try_from(width).unwrap_or(usize::MAX).saturating_mul(3);
    let mut image = zeroed_buffer(u64::from(width) * u64::from(height) * 3)?;
    let mut row_rgb = zeroed_buffer(u64::from(width) * 4)?;
    let mut next_line = 0usize;
    // Bounded by the image's rows (over all Adam7 passes); the decoder ends the frame.
    while let Some(row) = reader.next_interlaced_row().map_err(png_error)? {
        let samples = row.data();
        let row_pixels = samples.len() / channels.max(1);
        let row_bytes = row_pixels * 3;
        let target = row_rgb.get_mut(..row_bytes).ok_or_else(|| internal("png row", "row wider than the image"))?;
        for (pixel, source) in target.chunks_exact_mut(3).zip(samples.chunks_exact(channels.max(1))) {
            match *source {
                [grey] => pixel.fill(grey),
                [grey, alpha] => pixel.fill(over_white(grey, alpha)),
                [red, green, blue] => pixel.copy_from_slice(&[red, green, blue]),
                [red, green, blue, alpha] => {
                    pixel.copy_from_slice(&[over_white(red, alpha), over_white(green, alpha), over_white(blue, alpha)])
                }
                _ => {}
            }
        }
        match row.interlace() {
            png::InterlaceInfo::Null(_) => {
                let start = next_line.saturating_mul(row_stride);
                let line = image
                    .get_mut(start..start.saturating_add(row_bytes))
                    .ok_or_else(|| internal("png row", "more rows than the image has"))?;
                line.copy_from_slice(&row_rgb[..row_bytes]);
                next_line += 1;
            }
            png::InterlaceInfo::Adam7(info) => {
                png::expand_interlaced_row(&mut image, row_stride, &row_rgb[..row_bytes], info, 24)
            }
        }
    }
    let full = RgbImage::from_raw(width, height, image).ok_or_else(|| internal("png", "buffer size mismatch"))?;
    Ok(Decoded { full, to_srgb })
}

/// The derivatives of one image, already upright.
pub(crate) struct Derived {
    pub display: Variant,
    pub thumb: Variant,
    pub blurhash: String,
}

/// Makes the derivatives from the full-size image, which is dropped before encoding starts.
/// The display is converted to sRGB once resized (14 times fewer pixels than the full
/// size on a 12 MP photo), and the thumb is made from it.
pub(crate) fn derive(decoded: Decoded, orientation: Orientation) -> Result<Derived, MediaError> {
    let Decoded { full, to_srgb } = decoded;
    let mut display = resize_to_fit(&full, DISPLAY_EDGE_PIXELS)?;
    drop(full);
    if let Some(to_srgb) = to_srgb {
        to_srgb.apply(&mut display);
    }
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

/// The avatar of an upright sRGB image: its largest centred square, fitted into
/// `AVATAR_EDGE_PIXELS` square (never upscaled), as a JPEG with no metadata.
pub(crate) fn square_avatar(image: &RgbImage) -> Result<Variant, MediaError> {
    let (x, y, side) = centred_square(image.width(), image.height());
    let square = image::imageops::crop_imm(image, x, y, side, side).to_image();
    encode_jpeg(&resize_to_fit(&square, AVATAR_EDGE_PIXELS)?, AVATAR_JPEG_QUALITY)
}

/// The largest square centred in `width`×`height`: (left, top, side). An odd
/// leftover pixel goes to the right or bottom.
pub(crate) fn centred_square(width: u32, height: u32) -> (u32, u32, u32) {
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side)
}

/// RGB8, with any transparency composited over white: dropping alpha would show
/// whatever colour transparent pixels happen to hold (usually black).
fn flatten_to_rgb8(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut buffer = rgba.into_raw();
    flatten_in_place(&mut buffer, 4);
    buffer.truncate(buffer.len() / 4 * 3);
    // Same dimensions and three bytes per pixel: the buffer always fits.
    RgbImage::from_raw(width, height, buffer).unwrap_or_else(|| RgbImage::new(width, height))
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

/// `source` scaled down (Lanczos3, `edgenode_pixels::resize_rgb8`) to fit `edge`.
fn resize_to_fit(source: &RgbImage, edge: u32) -> Result<RgbImage, MediaError> {
    let (width, height) = source.dimensions();
    let (target_width, target_height) = fit(width, height, edge);
    if (target_width, target_height) == (width, height) {
        return Ok(source.clone());
    }
    let resized = resize_rgb8(source.as_raw(), (width, height), (target_width, target_height))
        .map_err(|error| internal("resize", error))?;
    RgbImage::from_raw(target_width, target_height, resized).ok_or_else(|| internal("resize", "buffer size mismatch"))
}

fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    image.into_rgb8()
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Variant, MediaError> {
    // A fresh encoder writes SOI, JFIF APP0, tables and the scan: no EXIF, ICC or XMP.
    let bytes = encode_jpeg_rgb8(image.as_raw(), image.width(), image.height(), quality)
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
    fn the_centred_square_is_the_largest_one_in_the_middle() {
        assert_eq!(centred_square(400, 300), (50, 0, 300));
        assert_eq!(centred_square(300, 400), (0, 50, 300));
        assert_eq!(centred_square(256, 256), (0, 0, 256));
        assert_eq!(centred_square(5, 2), (1, 0, 2));
        assert_eq!(centred_square(1, 1000), (0, 499, 1));
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
