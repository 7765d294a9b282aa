//! Scenario tests of the whole pipeline: what goes in, what must come out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};

use super::testimage::jpeg_with_exif;
use super::*;

fn pipeline() -> Pipeline {
    Pipeline::new(MediaLimits::default_for_pi())
}

/// Red, green, blue and yellow quadrants (top-left, top-right, bottom-left, bottom-right).
fn quadrants(width: u32, height: u32) -> impl Fn(u32, u32) -> [u8; 3] {
    move |x, y| match (x < width / 2, y < height / 2) {
        (true, true) => [255, 0, 0],
        (false, true) => [0, 255, 0],
        (true, false) => [0, 0, 255],
        (false, false) => [255, 255, 0],
    }
}

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];

fn decode(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).expect("output decodes").to_rgb8()
}

fn assert_colour_near(image: &RgbImage, x: u32, y: u32, expected: [u8; 3], what: &str) {
    let actual = image.get_pixel(x, y).0;
    let close = actual.iter().zip(expected).all(|(&a, e)| a.abs_diff(e) <= 48);
    assert!(close, "{what}: pixel ({x},{y}) is {actual:?}, expected about {expected:?}");
}

/// True when a JPEG has an APP1 (EXIF or XMP) segment before its first scan.
fn has_app1(jpeg: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        if marker == 0xDA {
            return false;
        }
        if marker == 0xE1 {
            return true;
        }
        at += 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A PNG that is only its signature and an IHDR chunk (with a correct CRC).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
    png
}

#[test]
fn sniffs_by_magic_bytes_only() {
    assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(MediaKind::Jpeg));
    assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(MediaKind::Png));
    assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(MediaKind::Webp));
    assert_eq!(sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
    assert_eq!(sniff(b"GIF89a"), None);
    assert_eq!(sniff(b"<svg xmlns="), None);
    assert_eq!(sniff(&[0xFF, 0xD8]), None);
    assert_eq!(sniff(b""), None);
    assert_eq!(MediaKind::Webp.mime(), "image/webp");
    assert!(matches!(pipeline().process(b"GIF89a\x01\0\x01\0"), Err(MediaError::Unsupported)));
}

#[test]
fn huge_png_header_is_rejected_before_decoding() {
    let png = png_header_only(100_000, 100_000);
    let started = Instant::now();
    let result = pipeline().process(&png);
    let elapsed = started.elapsed();
    match result {
        Err(MediaError::TooManyPixels { width, height, pixels, pixels_max }) => {
            assert_eq!((width, height), (100_000, 100_000));
            assert_eq!(pixels, 10_000_000_000);
            assert_eq!(pixels_max, MediaLimits::default_for_pi().pixels_max);
        }
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
    // Nothing was allocated or decoded; generous bound for a loaded CI machine.
    assert!(elapsed < Duration::from_millis(50), "took {elapsed:?}");
}

#[test]
fn huge_jpeg_and_webp_headers_are_rejected() {
    // SOI, SOF0 declaring 65535x65535, nothing else.
    let jpeg = [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x03];
    assert!(matches!(pipeline().process(&jpeg), Err(MediaError::TooManyPixels { .. })));
    // VP8X canvas 16777216 x 16777216.
    let mut webp = b"RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    webp.extend_from_slice(&[0xFF; 6]);
    assert!(matches!(pipeline().process(&webp), Err(MediaError::TooManyPixels { .. })));
}

#[test]
fn pixel_limit_is_configurable() {
    let limits = MediaLimits { pixels_max: 99, ..MediaLimits::default_for_pi() };
    let jpeg = jpeg_with_exif(10, 10, 1, false, |_, _| [9, 9, 9]);
    assert!(matches!(
        Pipeline::new(limits).process(&jpeg),
        Err(MediaError::TooManyPixels { pixels: 100, pixels_max: 99, .. })
    ));
}

#[test]
fn truncated_and_corrupt_images_are_errors_not_panics() {
    let jpeg = jpeg_with_exif(96, 64, 6, true, quadrants(96, 64));
    let pipeline = pipeline();
    // Every cut fails: in the headers, and in the scan (decoders would fill the rest grey).
    for cut in (0..jpeg.len() - 1).step_by(37).chain([jpeg.len() / 2, jpeg.len() - 2]) {
        assert!(pipeline.process(&jpeg[..cut]).is_err(), "cut at {cut} of {} decoded", jpeg.len());
    }
    assert!(pipeline.process(&jpeg).is_ok(), "the whole JPEG converts");
    let mut progressive_like = jpeg.clone();
    progressive_like.extend_from_slice(b"trailing bytes after EOI are allowed");
    assert!(pipeline.process(&progressive_like).is_ok());

    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&[7u8; 32 * 32 * 3], 32, 32, image::ExtendedColorType::Rgb8)
        .expect("encode png");
    for cut in [9, 20, 33, 40, png.len() - 13] {
        assert!(matches!(pipeline.process(&png[..cut]), Err(MediaError::Undecodable(_))), "png cut {cut}");
    }
    let header_only = png_header_only(32, 32);
    assert!(matches!(pipeline.process(&header_only), Err(MediaError::Undecodable(_))));

    let mut garbage = vec![0xFF, 0xD8, 0xFF];
    garbage.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    assert!(pipeline.process(&garbage).is_err());
    assert!(matches!(pipeline.process(b"RIFF\0\0\0\0WEBP"), Err(MediaError::Undecodable(_))));
}

#[test]
fn orientation_6_turns_the_image_upright() {
    let jpeg = jpeg_with_exif(400, 200, 6, false, quadrants(400, 200));
    let processed = pipeline().process(&jpeg).expect("converts");
    assert_eq!((processed.width, processed.height), (200, 400));
    assert_eq!((processed.display.width, processed.display.height), (200, 400), "not upscaled");
    assert_eq!((processed.thumb.width, processed.thumb.height), (128, 256));

    // Rotating 90° clockwise: the stored top-left ends top-right, bottom-left ends top-left.
    for (variant, name) in [(&processed.display, "display"), (&processed.thumb, "thumb")] {
        let image = decode(&variant.bytes);
        assert_eq!(image.dimensions(), (variant.width, variant.height));
        let (right, bottom) = (image.width() - 1 - image.width() / 10, image.height() - 1 - image.height() / 10);
        let (left, top) = (image.width() / 10, image.height() / 10);
        assert_colour_near(&image, right, top, RED, name);
        assert_colour_near(&image, left, top, BLUE, name);
        assert_colour_near(&image, right, bottom, GREEN, name);
        assert_colour_near(&image, left, bottom, YELLOW, name);
    }
}

#[test]
fn camera_photo_gets_display_thumb_and_blurhash() {
    let jpeg = jpeg_with_exif(4000, 3000, 1, true, |x, y| [(x / 16) as u8, (y / 12) as u8, 128]);
    let processed = pipeline().process(&jpeg).expect("converts");
    assert_eq!(processed.kind, MediaKind::Jpeg);
    assert_eq!((processed.width, processed.height), (4000, 3000));
    assert_eq!((processed.display.width, processed.display.height), (1080, 810));
    assert_eq!((processed.thumb.width, processed.thumb.height), (256, 192));
    assert_eq!(decode(&processed.thumb.bytes).dimensions(), (256, 192));
    // 4x3 components: 1 size + 1 max + 4 DC + 2 per AC (11) characters.
    assert_eq!(processed.blurhash.len(), 28);
    assert!(blurhash::decode(&processed.blurhash, 8, 6, 1.0).is_ok());
}

#[test]
fn outputs_carry_no_metadata_and_original_loses_only_gps() {
    let jpeg = jpeg_with_exif(300, 200, 6, true, quadrants(300, 200));
    let processed = pipeline().process(&jpeg).expect("converts");
    for variant in [&processed.display, &processed.thumb] {
        assert!(!contains(&variant.bytes, b"Exif"));
        assert!(!has_app1(&variant.bytes));
        assert_eq!(exif_orientation(&variant.bytes), None);
    }
    assert!(exif_gps_present(&jpeg));
    assert!(!exif_gps_present(&processed.original));
    assert_eq!(exif_orientation(&processed.original), Some(6));
    assert_eq!(processed.original.len(), jpeg.len());
    assert_eq!(decode(&processed.original), decode(&jpeg), "pixels untouched");
}

#[test]
fn derive_from_stored_original_matches_process() {
    let jpeg = jpeg_with_exif(500, 300, 8, true, quadrants(500, 300));
    let pipeline = pipeline();
    let processed = pipeline.process(&jpeg).expect("converts");
    let derived = pipeline.derive(&processed.original).expect("derives");
    assert_eq!((derived.width, derived.height), (300, 500));
    assert_eq!(derived.display.bytes, processed.display.bytes);
    assert_eq!(derived.thumb.bytes, processed.thumb.bytes);
    assert_eq!(derived.blurhash, processed.blurhash);
    assert_eq!(derived.original, processed.original);
}

#[test]
fn png_with_alpha_and_webp_convert() {
    let rgba: Vec<u8> = (0..64 * 48).flat_map(|i| [200, 30, 30, if i % 2 == 0 { 0 } else { 255 }]).collect();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgba, 64, 48, image::ExtendedColorType::Rgba8)
        .expect("encode png");
    let processed = pipeline().process(&png).expect("png converts");
    assert_eq!(processed.kind, MediaKind::Png);
    assert_eq!((processed.display.width, processed.display.height), (64, 48));
    assert_eq!(processed.original, png);

    let rgb: Vec<u8> = (0..300 * 2000).flat_map(|i| [(i % 251) as u8, 90, 160]).collect();
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(&rgb, 300, 2000, image::ExtendedColorType::Rgb8)
        .expect("encode webp");
    let processed = pipeline().process(&webp).expect("webp converts");
    assert_eq!(processed.kind, MediaKind::Webp);
    assert_eq!((processed.display.width, processed.display.height), (162, 1080));
    assert_eq!((processed.thumb.width, processed.thumb.height), (38, 256));
}

#[test]
fn grayscale_jpeg_converts() {
    let gray: Vec<u8> = (0..50 * 40).map(|i| (i % 256) as u8).collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .write_image(&gray, 50, 40, image::ExtendedColorType::L8)
        .expect("encode gray jpeg");
    let processed = pipeline().process(&jpeg).expect("converts");
    assert_eq!((processed.thumb.width, processed.thumb.height), (50, 40));
}

/// Converts six photos on six threads through one pipeline and returns the most
/// conversions seen inside the gate at once.
fn most_conversions_at_once(limits: MediaLimits) -> usize {
    let pipeline = Arc::new(Pipeline::new(limits));
    // Small enough to keep the test quick in an unoptimised build, big enough to need a resize.
    let jpeg = Arc::new(jpeg_with_exif(600, 400, 1, false, |x, y| [(x % 256) as u8, (y % 256) as u8, 0]));
    let done = Arc::new(AtomicBool::new(false));
    let running_max = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (pipeline, done, running_max) = (Arc::clone(&pipeline), Arc::clone(&done), Arc::clone(&running_max));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                running_max.fetch_max(pipeline.gate_stats().jobs_running, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (pipeline, jpeg) = (Arc::clone(&pipeline), Arc::clone(&jpeg));
            std::thread::spawn(move || pipeline.process(&jpeg).map(|processed| processed.display.width))
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().expect("no panic").expect("converts"), 600);
    }
    done.store(true, Ordering::SeqCst);
    monitor.join().expect("monitor");
    assert_eq!(pipeline.gate_stats(), GateStats::default(), "every permit returned");
    running_max.load(Ordering::SeqCst)
}

#[test]
fn pipeline_runs_at_most_workers_conversions_at_once() {
    let observed = most_conversions_at_once(MediaLimits { workers: 2, ..MediaLimits::default_for_pi() });
    assert!((1..=2).contains(&observed), "saw {observed} conversions at once");
}

#[test]
fn decoded_bytes_budget_limits_conversions_at_once() {
    // Each 600x400 job reserves 0.7 MB of pixels plus about 10.5 MB for its derivatives.
    let limits = MediaLimits { workers: 6, decoded_bytes_in_flight_max: 15_000_000, ..MediaLimits::default_for_pi() };
    assert_eq!(most_conversions_at_once(limits), 1);
}

#[test]
fn job_larger_than_the_budget_still_runs() {
    let limits = MediaLimits { decoded_bytes_in_flight_max: 1, ..MediaLimits::default_for_pi() };
    let jpeg = jpeg_with_exif(64, 64, 1, false, |_, _| [1, 2, 3]);
    assert!(Pipeline::new(limits).process(&jpeg).is_ok());
}
