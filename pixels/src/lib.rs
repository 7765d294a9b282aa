//! The image kernels the node runs on plain RGB8 buffers: JPEG encoding and resizing.
//!
//! Why a crate of its own: the encoder and the resizer are generic code of `image` and
//! `fast_image_resize`, so each is compiled in the crate that names its type
//! parameters, with that crate's optimisation level. Named in `edgenode`, they were
//! built unoptimised in debug builds and took most of a test node's time (and a test's
//! own, making photos). Named here, behind functions without type parameters, they are
//! built once at the level Cargo.toml's `[profile.dev.package.edgenode-pixels]` sets.
//! Release builds are the same either way.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, ImageBufferError, PixelType, ResizeAlg, ResizeError, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::error::{ParameterError, ParameterErrorKind};
use image::{ExtendedColorType, ImageError};

/// Lanczos3 is the sharpest of the usual filters for downscaling. With fast_image_resize's
/// SIMD it took 30–50 ms for 12 MP → 1080 px on the 2-core x86 dev box (CatmullRom: ~18 ms,
/// the image crate's own Lanczos3: ~400 ms), against ~130–200 ms for decoding the JPEG.
const RESIZE: ResizeAlg = ResizeAlg::Convolution(FilterType::Lanczos3);

/// A baseline JPEG of `rgb` (`width`×`height` pixels, 3 bytes each, rows top to bottom):
/// SOI, a JFIF APP0, the tables and one scan; no EXIF, ICC or XMP.
///
/// # Errors
/// When the dimensions are 0, above JPEG's 65,535, or do not match `rgb`'s length.
pub fn encode_jpeg_rgb8(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, ImageError> {
    // The encoder asserts this; a caller's mistake is an error here, not a panic.
    if u64::try_from(rgb.len()) != Ok(u64::from(width) * u64::from(height) * 3) {
        return Err(ImageError::Parameter(ParameterError::from_kind(ParameterErrorKind::DimensionMismatch)));
    }
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, quality).encode(rgb, width, height, ExtendedColorType::Rgb8)?;
    Ok(jpeg)
}

/// Why [`resize_rgb8`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResizeFailed {
    #[error("source buffer: {0}")]
    Source(#[from] ImageBufferError),
    #[error("resize: {0}")]
    Resize(#[from] ResizeError),
}

/// `rgb` (`width`×`height`, 3 bytes a pixel) resized to `to_width`×`to_height` with
/// Lanczos3.
///
/// # Errors
/// When `rgb`'s length does not match its dimensions, or a dimension is 0.
pub fn resize_rgb8(
    rgb: &[u8],
    (width, height): (u32, u32),
    (to_width, to_height): (u32, u32),
) -> Result<Vec<u8>, ResizeFailed> {
    let source = ImageRef::new(width, height, rgb, PixelType::U8x3)?;
    let mut target = Image::new(to_width, to_height, PixelType::U8x3);
    Resizer::new().resize(&source, &mut target, &ResizeOptions::new().resize_alg(RESIZE))?;
    Ok(target.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_decodes_to_the_size_it_was_given() {
        let rgb: Vec<u8> = (0..40 * 30 * 3).map(|index| (index % 251) as u8).collect();
        let jpeg = encode_jpeg_rgb8(&rgb, 40, 30, 80).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]), "starts with SOI");
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (40, 30));
    }

    #[test]
    fn a_buffer_of_the_wrong_length_is_an_error_not_a_panic() {
        assert!(encode_jpeg_rgb8(&[0; 10], 40, 30, 80).is_err());
        assert!(resize_rgb8(&[0; 10], (40, 30), (20, 15)).is_err());
    }

    #[test]
    fn resizing_a_flat_colour_keeps_it() {
        let rgb = [200u8, 60, 40].repeat(64 * 48);
        let small = resize_rgb8(&rgb, (64, 48), (16, 12)).unwrap();
        assert_eq!(small.len(), 16 * 12 * 3);
        assert!(small.chunks_exact(3).all(|pixel| pixel == [200, 60, 40]), "{:?}", &small[..6]);
    }
}
