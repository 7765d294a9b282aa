//! Colour management: the derivatives are converted to sRGB from the photo's embedded ICC
//! profile, because they are written without metadata and an untagged image is sRGB to
//! every browser (a Display P3 iPhone photo shown as sRGB looks washed out).
//!
//! What is converted, and what is not:
//! - an RGB profile on a colour image: moxcms's 8-bit transform to sRGB (perceptual
//!   intent, which for the usual matrix/TRC profiles is the colorimetric matrix with
//!   out-of-gamut colours clipped, as browsers do);
//! - a grey profile on a grey image: its tone curve mapped to sRGB grey, as a 256-entry
//!   table;
//! - no profile, or one that is sRGB (any vendor's: primaries and curves compared, not
//!   names): nothing, and no transform is built;
//! - anything else (a CMYK profile, whose pixels the JPEG decoder has already turned
//!   into RGB without it; a profile that does not match the pixels; one that is broken,
//!   unsupported or larger than [`PROFILE_BYTES_MAX`]): logged at debug and the pixels
//!   kept as they are. A photo is never refused over its profile.
//!
//! Memory: a profile is used only if its tags, counted each time they are referenced,
//! fit in [`PROFILE_BYTES_MAX`] (parsing expands each reference), so making the
//! transform stays under [`SETUP_BYTES_MAX`]; what is kept is under
//! [`TRANSFORM_BYTES_MAX`]. `convert::decoded_bytes_estimate` charges both.
//!
//! The transform is built once per upload, before any pixel buffer exists, and applied to
//! the `display` image only (the thumb is made from it): 0.9 MP instead of the full size,
//! in place, one row at a time.

use std::sync::Arc;

use image::RgbImage;
use moxcms::{
    ColorProfile, DataColorSpace, Layout, ParsingOptions, RenderingIntent, ToneReprCurve, Transform8BitExecutor,
    TransformOptions,
};
use tracing::debug;

/// Largest embedded profile used, and the most bytes its tags may reference in all. The
/// profiles photos carry are matrix/TRC profiles of 0.5–4 KiB (Display P3, Adobe RGB,
/// ProPhoto, sRGB; the ICC's LUT-based sRGB v4 profile is 60 KiB); what is larger is a
/// LUT profile of a monitor or a printer.
pub(crate) const PROFILE_BYTES_MAX: usize = 64 * 1024;
/// Peak bytes while the transform is made, before the full-size buffer exists: the
/// profile's bytes (three copies at most, while the JPEG decoder joins its APP2 chunks),
/// the parsed profile (its tables as f32: at most 4 bytes per referenced byte) and the
/// transform being built (65 KiB measured for a matrix/TRC profile; a LUT profile's 33³
/// grid of f32 is 0.4 MiB, built once more while it is made).
pub(crate) const SETUP_BYTES_MAX: u64 = 2 * 1024 * 1024;
/// Bytes held from the transform's making to the end of the conversion: the transform
/// itself (see [`SETUP_BYTES_MAX`]), the PNG decoder's copy of the profile (kept until it
/// is dropped) and a row of the display image.
pub(crate) const TRANSFORM_BYTES_MAX: u64 = 1024 * 1024;
/// Entries a tabulated tone curve may have (sRGB's usual table has 1024, others 4096).
const CURVE_ENTRIES_MAX: usize = 4096;
/// Grid points of a `lut8`/`lut16` table (33³, the usual largest grid of RGB profiles).
const LUT_GRID_POINTS_MAX: usize = 33 * 33 * 33;
/// How far a profile's colorant matrix, composed with sRGB's inverse, may be from the
/// identity and still be sRGB: vendors' sRGB profiles differ by ~10⁻⁴, and 10⁻³ moves no
/// 8-bit value by more than half a step.
const SRGB_MATRIX_TOLERANCE: f64 = 1e-3;
/// How far, in 8-bit steps, a tone curve may be from sRGB's and still be sRGB's.
const SRGB_CURVE_TOLERANCE_STEPS: f32 = 0.5;

/// What the decoder produces, and so what the profile must describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Samples {
    /// Grey (with or without alpha), expanded to equal RGB channels after decoding.
    Grey,
    /// RGB (with or without alpha). A CMYK JPEG arrives here too, already RGB.
    Colour,
}

/// Brings a derivative's pixels from the photo's colour space to sRGB.
pub(crate) enum ToSrgb {
    /// An RGB profile's transform.
    Colour(Arc<Transform8BitExecutor>),
    /// A grey profile's curve: the sRGB pixel for each grey level.
    Grey(Box<[[u8; 3]; 256]>),
}

impl std::fmt::Debug for ToSrgb {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            ToSrgb::Colour(_) => "ToSrgb::Colour",
            ToSrgb::Grey(_) => "ToSrgb::Grey",
        })
    }
}

/// The conversion from an embedded profile to sRGB, or `None` when the pixels are to be
/// kept as they are: the profile is sRGB already, or it cannot be used (logged at debug).
pub(crate) fn to_srgb(profile_bytes: &[u8], samples: Samples) -> Option<ToSrgb> {
    let referenced_bytes = referenced_tag_bytes(profile_bytes);
    if profile_bytes.len() > PROFILE_BYTES_MAX || referenced_bytes.is_none_or(|bytes| bytes > PROFILE_BYTES_MAX) {
        debug!(
            profile_bytes = profile_bytes.len(),
            ?referenced_bytes,
            profile_bytes_max = PROFILE_BYTES_MAX,
            "embedded ICC profile too large or malformed; pixels kept as they are"
        );
        return None;
    }
    let options = ParsingOptions {
        // moxcms refuses a profile of `max_profile_size` bytes or more.
        max_profile_size: PROFILE_BYTES_MAX + 1,
        max_allowed_clut_size: LUT_GRID_POINTS_MAX,
        max_allowed_trc_size: CURVE_ENTRIES_MAX,
    };
    let profile = match ColorProfile::new_from_slice_with_options(profile_bytes, options) {
        Ok(profile) => profile,
        Err(error) => {
            debug!(%error, "embedded ICC profile unreadable; pixels kept as they are");
            return None;
        }
    };
    let made = match (profile.color_space, samples) {
        (DataColorSpace::Rgb, Samples::Colour) if is_srgb(&profile) => return None,
        (DataColorSpace::Gray, Samples::Grey) if profile.gray_trc.as_ref().is_some_and(is_srgb_curve) => return None,
        (DataColorSpace::Rgb, Samples::Colour) => colour_transform(&profile).map(ToSrgb::Colour),
        (DataColorSpace::Gray, Samples::Grey) => grey_table(&profile).map(ToSrgb::Grey),
        (space, samples) => {
            debug!(
                ?space,
                ?samples,
                "embedded ICC profile does not describe the decoded pixels; pixels kept as they are"
            );
            return None;
        }
    };
    made.inspect_err(|error| debug!(%error, "no transform from the embedded ICC profile; pixels kept as they are")).ok()
}

impl ToSrgb {
    /// Converts `image` in place, one row at a time through a one-row scratch buffer.
    pub(crate) fn apply(&self, image: &mut RgbImage) {
        match self {
            ToSrgb::Colour(transform) => {
                let row_bytes = image.width() as usize * 3;
                let mut source = vec![0u8; row_bytes];
                for row in image.chunks_exact_mut(row_bytes) {
                    source.copy_from_slice(row);
                    // Fails only when the lengths are not whole, equal pixel runs; ours are.
                    if let Err(error) = transform.transform(&source, row) {
                        debug!(%error, "colour transform failed; the rest of the image kept as it is");
                        return;
                    }
                }
            }
            ToSrgb::Grey(table) => {
                // A grey image's channels are equal (expanded, then resized alike).
                for pixel in image.pixels_mut() {
                    pixel.0 = table[usize::from(pixel.0[0])];
                }
            }
        }
    }
}

/// The bytes an ICC profile's tag table points at, each tag counted on its own even when
/// tags share their data; `None` when the table is not within the profile.
fn referenced_tag_bytes(profile: &[u8]) -> Option<usize> {
    const TABLE_AT: usize = 128;
    const ENTRY_BYTES: usize = 12;
    let read_u32 = |at: usize| -> Option<usize> {
        let quad = profile.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])).ok()
    };
    let tags = read_u32(TABLE_AT)?;
    // Each entry is 12 bytes of the profile, so a count the profile cannot hold is refused
    // before anything is summed.
    if tags.checked_mul(ENTRY_BYTES)?.checked_add(TABLE_AT + 4)? > profile.len() {
        return None;
    }
    (0..tags).try_fold(0usize, |sum, tag| sum.checked_add(read_u32(TABLE_AT + 4 + tag * ENTRY_BYTES + 8)?))
}

fn transform_options() -> TransformOptions {
    TransformOptions { rendering_intent: RenderingIntent::Perceptual, ..TransformOptions::default() }
}

fn colour_transform(profile: &ColorProfile) -> Result<Arc<Transform8BitExecutor>, moxcms::CmsError> {
    profile.create_transform_8bit(Layout::Rgb, &ColorProfile::new_srgb(), Layout::Rgb, transform_options())
}

fn grey_table(profile: &ColorProfile) -> Result<Box<[[u8; 3]; 256]>, moxcms::CmsError> {
    let transform =
        profile.create_transform_8bit(Layout::Gray, &ColorProfile::new_srgb(), Layout::Rgb, transform_options())?;
    let levels: Vec<u8> = (0..=255).collect();
    let mut pixels = vec![0u8; 256 * 3];
    transform.transform(&levels, &mut pixels)?;
    let mut table = Box::new([[0u8; 3]; 256]);
    for (entry, pixel) in table.iter_mut().zip(pixels.chunks_exact(3)) {
        entry.copy_from_slice(pixel);
    }
    Ok(table)
}

/// Whether converting from `profile` to sRGB would change no 8-bit value: a matrix/TRC
/// profile (no LUTs, which could say anything) whose colorants are sRGB's and whose
/// three curves are sRGB's.
fn is_srgb(profile: &ColorProfile) -> bool {
    let has_luts = profile.lut_a_to_b_perceptual.is_some()
        || profile.lut_a_to_b_colorimetric.is_some()
        || profile.lut_a_to_b_saturation.is_some();
    if has_luts || !profile.is_matrix_shaper() {
        return false;
    }
    let matrix = profile.transform_matrix(&ColorProfile::new_srgb());
    let identity_like = (0..3).all(|row| {
        (0..3).all(|column| {
            let identity = if row == column { 1.0 } else { 0.0 };
            (matrix.v[row][column] - identity).abs() <= SRGB_MATRIX_TOLERANCE
        })
    });
    identity_like
        && [&profile.red_trc, &profile.green_trc, &profile.blue_trc]
            .into_iter()
            .all(|curve| curve.as_ref().is_some_and(is_srgb_curve))
}

/// Whether `curve` decodes every 8-bit value to what sRGB's curve does, within
/// [`SRGB_CURVE_TOLERANCE_STEPS`] once encoded again with sRGB's curve.
fn is_srgb_curve(curve: &ToneReprCurve) -> bool {
    let srgb = ColorProfile::new_srgb();
    let (Ok(linear), Some(Ok(srgb_encode))) =
        (curve.make_linear_evaluator(), srgb.red_trc.as_ref().map(ToneReprCurve::make_gamma_evaluator))
    else {
        return false;
    };
    (0..=255u8).all(|level| {
        let value = f32::from(level) / 255.0;
        let again = srgb_encode.evaluate_value(linear.evaluate_value(value));
        ((again - value) * 255.0).abs() <= SRGB_CURVE_TOLERANCE_STEPS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display_p3() -> Vec<u8> {
        ColorProfile::new_display_p3().encode().expect("moxcms encodes its Display P3 profile")
    }

    fn convert(profile: &[u8], pixels: &[[u8; 3]]) -> Vec<[u8; 3]> {
        let to_srgb = to_srgb(profile, Samples::Colour).expect("a transform");
        let mut image = RgbImage::from_fn(pixels.len() as u32, 1, |x, _| image::Rgb(pixels[x as usize]));
        to_srgb.apply(&mut image);
        image.pixels().map(|pixel| pixel.0).collect()
    }

    /// sRGB's transfer function, both ways (IEC 61966-2-1).
    fn srgb_to_linear(value: f64) -> f64 {
        if value <= 0.04045 {
            value / 12.92
        } else {
            ((value + 0.055) / 1.055).powf(2.4)
        }
    }

    fn linear_to_srgb(value: f64) -> f64 {
        if value <= 0.003_130_8 {
            value * 12.92
        } else {
            1.055 * value.powf(1.0 / 2.4) - 0.055
        }
    }

    /// Display P3 to sRGB done by hand in f64: decode, the linear P3 → linear sRGB matrix
    /// (both D65, from the published primaries), clip, encode.
    fn p3_to_srgb_reference(pixel: [u8; 3]) -> [u8; 3] {
        const P3_TO_SRGB: [[f64; 3]; 3] = [
            [1.224_940_2, -0.224_940_2, 0.0],
            [-0.042_056_955, 1.042_056_955, 0.0],
            [-0.019_637_555, -0.078_636_046, 1.098_273_6],
        ];
        let linear = pixel.map(|value| srgb_to_linear(f64::from(value) / 255.0));
        let mut out = [0u8; 3];
        for (channel, row) in P3_TO_SRGB.iter().enumerate() {
            let mixed: f64 = row.iter().zip(linear).map(|(weight, value)| weight * value).sum();
            out[channel] = (linear_to_srgb(mixed.clamp(0.0, 1.0)) * 255.0).round() as u8;
        }
        out
    }

    #[test]
    fn srgb_profiles_are_passed_through_without_a_transform() {
        let srgb = ColorProfile::new_srgb().encode().expect("encodes");
        assert!(to_srgb(&srgb, Samples::Colour).is_none(), "moxcms's own sRGB profile is recognised");
        // The same primaries with a 1024-entry table instead of the parametric curve, as
        // the classic "sRGB IEC61966-2.1" profile has it.
        let mut tabulated = ColorProfile::new_srgb();
        let table: Vec<u16> =
            (0..1024).map(|index| (srgb_to_linear(f64::from(index) / 1023.0) * 65535.0).round() as u16).collect();
        for curve in [&mut tabulated.red_trc, &mut tabulated.green_trc, &mut tabulated.blue_trc] {
            *curve = Some(ToneReprCurve::Lut(table.clone()));
        }
        let tabulated = tabulated.encode().expect("encodes");
        assert!(to_srgb(&tabulated, Samples::Colour).is_none(), "a tabulated sRGB curve is sRGB");
        let grey_srgb_like = {
            let mut grey = ColorProfile::new_gray_with_gamma(1.0);
            grey.gray_trc = ColorProfile::new_srgb().red_trc;
            grey.encode().expect("encodes")
        };
        assert!(to_srgb(&grey_srgb_like, Samples::Grey).is_none(), "a grey profile with sRGB's curve");
    }

    #[test]
    fn display_p3_is_converted_like_the_published_matrix_says() {
        let red = convert(&display_p3(), &[[255, 0, 0]])[0];
        // P3's red is outside sRGB: it clips to sRGB's own red.
        assert!(red[0] >= 254 && red[1] <= 1 && red[2] <= 1, "P3 red became {red:?}");
        let patches = [[200, 80, 60], [224, 172, 140], [60, 160, 90], [90, 70, 200], [128, 128, 128], [0, 0, 0]];
        let converted = convert(&display_p3(), &patches);
        for (patch, got) in patches.iter().zip(&converted) {
            let expected = p3_to_srgb_reference(*patch);
            let difference = got.iter().zip(expected).map(|(got, expected)| got.abs_diff(expected)).max();
            assert!(difference <= Some(1), "P3 {patch:?} became {got:?}, the matrix says {expected:?}");
        }
        // Saturated colours move: P3 (200, 80, 60) is a stronger red than sRGB can show
        // with the same numbers, and grey stays grey.
        assert!(converted[0][0] > 210 && converted[0][1] < 75, "{:?}", converted[0]);
        assert_eq!(converted[4], [128, 128, 128]);
    }

    #[test]
    fn grey_profiles_map_grey_levels_to_srgb_grey() {
        let gamma_1_8 = ColorProfile::new_gray_with_gamma(1.8).encode().expect("encodes");
        let to_srgb = to_srgb(&gamma_1_8, Samples::Grey).expect("a grey curve that is not sRGB's");
        let mut image = RgbImage::from_fn(3, 1, |x, _| image::Rgb([[0u8, 128, 255][x as usize]; 3]));
        to_srgb.apply(&mut image);
        let expected = (linear_to_srgb((128.0f64 / 255.0).powf(1.8)) * 255.0).round() as u8;
        let middle = image.get_pixel(1, 0).0;
        assert!(middle.iter().all(|&value| value.abs_diff(expected) <= 1), "{middle:?}, expected {expected}");
        assert_eq!((image.get_pixel(0, 0).0, image.get_pixel(2, 0).0), ([0; 3], [255; 3]));
    }

    #[test]
    fn unusable_profiles_keep_the_pixels() {
        assert!(to_srgb(b"not an ICC profile at all", Samples::Colour).is_none());
        let mut truncated = display_p3();
        truncated.truncate(truncated.len() / 2);
        assert!(to_srgb(&truncated, Samples::Colour).is_none());
        // A colour profile on grey pixels, a grey profile on colour ones.
        assert!(to_srgb(&display_p3(), Samples::Grey).is_none());
        let grey = ColorProfile::new_gray_with_gamma(2.2).encode().expect("encodes");
        assert!(to_srgb(&grey, Samples::Colour).is_none());
        let mut huge = display_p3();
        huge.resize(PROFILE_BYTES_MAX + 1, 0);
        assert!(to_srgb(&huge, Samples::Colour).is_none());
    }

    #[test]
    fn tags_sharing_data_count_once_per_reference() {
        let profile = display_p3();
        let referenced = referenced_tag_bytes(&profile).expect("a tag table");
        assert!(referenced > 0 && referenced < PROFILE_BYTES_MAX, "{referenced}");
        // Every tag pointed at one 40 KiB blob: small as a file, too much once parsed.
        let mut shared = profile.clone();
        let tags = u32::from_be_bytes(shared[128..132].try_into().expect("4 bytes")) as usize;
        let blob_at = shared.len() as u32;
        shared.resize(shared.len() + 40 * 1024, 0);
        for tag in 0..tags {
            let entry = 132 + tag * 12;
            shared[entry + 4..entry + 8].copy_from_slice(&blob_at.to_be_bytes());
            shared[entry + 8..entry + 12].copy_from_slice(&(40u32 * 1024).to_be_bytes());
        }
        assert!(shared.len() < PROFILE_BYTES_MAX);
        assert_eq!(referenced_tag_bytes(&shared), Some(tags * 40 * 1024));
        assert!(to_srgb(&shared, Samples::Colour).is_none());
        // A tag count the profile cannot hold.
        let mut lying = profile;
        lying[128..132].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(referenced_tag_bytes(&lying), None);
    }
}
