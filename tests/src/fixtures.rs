//! Test inputs (camera-like JPEGs, a decompression-bomb PNG) and the checks we run
//! on what the node sends back (hashes, colours, EXIF).

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256, as the media routes name content.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A camera-like JPEG: `width`×`height` stored pixels, an EXIF orientation tag and,
/// when `gps` is set, EXIF GPS coordinates.
pub fn camera_jpeg(
    width: u32,
    height: u32,
    orientation: u16,
    gps: bool,
    pixels: impl Fn(u32, u32) -> [u8; 3],
) -> Vec<u8> {
    edgenode::media::testimage::jpeg_with_exif(width, height, orientation, gps, pixels)
}

pub const RED: [u8; 3] = [220, 30, 30];
pub const BLUE: [u8; 3] = [30, 30, 220];

/// The household's sunset photo as a phone held sideways stores it: 400×200 stored
/// pixels, left half red, right half blue, EXIF orientation 6 ("rotate 90° clockwise
/// to view") and GPS. Upright it is 200×400 with red on top and blue below.
pub fn sideways_sunset_photo() -> Vec<u8> {
    camera_jpeg(400, 200, 6, true, |x, _y| if x < 200 { RED } else { BLUE })
}

/// An upright 300×200 photo with GPS whose pixels depend on `seed`, so every seed
/// gives different bytes (and a different SHA-256).
pub fn distinct_photo(seed: u8) -> Vec<u8> {
    camera_jpeg(300, 200, 1, true, move |x, y| [seed.wrapping_mul(37), (x % 256) as u8, (y % 256) as u8])
}

/// A `width`×`height` photo of noise that depends on `seed`: it hardly compresses,
/// so its files are large and take a moment to copy between nodes.
pub fn noisy_photo(seed: u8, width: u32, height: u32) -> Vec<u8> {
    camera_jpeg(width, height, 1, false, move |x, y| {
        let mut mixed = (u64::from(x) << 32 | u64::from(y)) ^ u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        mixed = (mixed ^ (mixed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed ^= mixed >> 29;
        [mixed as u8, (mixed >> 8) as u8, (mixed >> 16) as u8]
    })
}

/// A PNG whose header claims `width`×`height` pixels and that holds no pixel data:
/// signature, IHDR (8-bit RGB, correct CRC), IEND. A decompression bomb in spirit:
/// a node must refuse it from the header, before allocating anything.
pub fn png_claiming_size(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // bit depth, colour type RGB, compression, filter, interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&png_chunk(b"IHDR", &ihdr));
    png.extend_from_slice(&png_chunk(b"IEND", &[]));
    png
}

/// One PNG chunk: length, type, data and CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    let mut chunk = Vec::with_capacity(12 + data.len());
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    chunk
}

/// True when `bytes` start like a JPEG (SOI marker followed by another marker).
pub fn looks_like_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

/// True when the bytes contain an EXIF block anywhere (the `Exif\0\0` APP1 header).
pub fn contains_exif(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|window| window == b"Exif")
}

pub fn exif_gps_present(jpeg: &[u8]) -> bool {
    edgenode::media::exif_gps_present(jpeg)
}

pub fn exif_orientation(jpeg: &[u8]) -> Option<u16> {
    edgenode::media::exif_orientation(jpeg)
}

/// Decodes an image the node sent back; panics with a clear message if it can't.
pub fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes)
        .unwrap_or_else(|error| panic!("the node sent an image we cannot decode ({error}), {} bytes", bytes.len()))
        .to_rgb8()
}

/// A coarse name for the mean colour of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hue {
    Red,
    Blue,
    Other([u8; 3]),
}

/// The mean colour of rows `top..bottom` (fractions of the height), named.
pub fn hue_of_rows(image: &image::RgbImage, top: f32, bottom: f32) -> Hue {
    let first_row = (image.height() as f32 * top) as u32;
    let end_row = ((image.height() as f32 * bottom) as u32).max(first_row + 1).min(image.height());
    let mut sums = [0u64; 3];
    let mut n = 0u64;
    for y in first_row..end_row {
        for x in 0..image.width() {
            let pixel = image.get_pixel(x, y).0;
            for channel in 0..3 {
                sums[channel] += u64::from(pixel[channel]);
            }
            n += 1;
        }
    }
    let mean = sums.map(|sum| (sum / n.max(1)) as u8);
    let [red, green, blue] = mean.map(i32::from);
    if red > 120 && red > 2 * blue && red > 2 * green {
        Hue::Red
    } else if blue > 120 && blue > 2 * red && blue > 2 * green {
        Hue::Blue
    } else {
        Hue::Other(mean)
    }
}

/// The mean colour of the pixels in columns `x` and rows `y` of `image` (clamped to the
/// image), per channel, unrounded.
pub fn mean_colour(image: &image::RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> [f64; 3] {
    let mut sums = [0u64; 3];
    let mut n = 0u64;
    for row in y.start..y.end.min(image.height()) {
        for column in x.start..x.end.min(image.width()) {
            let pixel = image.get_pixel(column, row).0;
            for channel in 0..3 {
                sums[channel] += u64::from(pixel[channel]);
            }
            n += 1;
        }
    }
    sums.map(|sum| sum as f64 / n.max(1) as f64)
}

/// A python3 whose `import_check` (Python source) runs: $EDGENODE_TEST_PYTHON, else
/// `python3` on the PATH, else Debian's own (`python3` may be a pyenv or virtualenv
/// without Debian's python3-* modules). Panics with `install` (the test fails, it is
/// not skipped) when none has it.
pub fn python_with(import_check: &str, install: &str) -> std::path::PathBuf {
    let candidates: Vec<std::path::PathBuf> = match std::env::var_os("EDGENODE_TEST_PYTHON") {
        Some(python) => vec![python.into()],
        None => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    let mut tried = Vec::new();
    for python in candidates {
        match std::process::Command::new(&python).args(["-c", import_check]).output() {
            Ok(output) if output.status.success() => return python,
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                tried.push(format!("{}: {}", python.display(), stderr.lines().last().unwrap_or("failed")));
            }
            Err(error) => tried.push(format!("{}: {error}", python.display())),
        }
    }
    panic!("no python3 passes `{import_check}` ({}): {install}", tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_bomb_has_valid_chunk_crcs() {
        let png = png_claiming_size(100_000, 100_000);
        assert_eq!(png.len(), 8 + 25 + 12);
        // The IEND CRC is well known; IHDR's is checked the same way.
        assert_eq!(&png[png.len() - 4..], &[0xae, 0x42, 0x60, 0x82]);
        assert_eq!(&png[16..20], &100_000u32.to_be_bytes());
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
