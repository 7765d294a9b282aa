//! Scenario tests of the whole pipeline: what goes in, what must come out.

use std::path::Path;
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
    // Each 600x400 job reserves about 6 MB: 0.7 MB of pixels, as much again for the
    // resize's intermediate, the display (twice), 1 MiB for a colour transform and 2 MiB
    // of slack, plus its upload twice.
    let limits = MediaLimits { workers: 6, decoded_bytes_in_flight_max: 8_000_000, ..MediaLimits::default_for_pi() };
    assert_eq!(most_conversions_at_once(limits), 1);
    let limits = MediaLimits { workers: 6, decoded_bytes_in_flight_max: 13_000_000, ..MediaLimits::default_for_pi() };
    assert_eq!(most_conversions_at_once(limits), 2);
}

#[test]
fn job_larger_than_the_budget_is_refused_before_decoding() {
    let limits = MediaLimits { decoded_bytes_in_flight_max: 1_000_000, ..MediaLimits::default_for_pi() };
    let jpeg = jpeg_with_exif(64, 64, 1, false, |_, _| [1, 2, 3]);
    match Pipeline::new(limits).process(&jpeg) {
        Err(MediaError::TooManyPixels { width: 64, height: 64, pixels: 4096, pixels_max }) => {
            assert!(pixels_max < 4096, "the limit named is what would fit: {pixels_max}")
        }
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
}

/// A PNG of signature, IHDR (with the given depth and colour type) and IEND only.
fn png_header_with(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut png = png_header_only(width, height);
    png[24] = bit_depth;
    png[25] = colour_type;
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn image_bombs_are_refused_by_decoded_bytes_from_the_header() {
    let pipeline = pipeline();
    let budget = MediaLimits::default_for_pi().decoded_bytes_in_flight_max;
    // 8000x8000 16-bit RGBA: 64 MP at the pixel limit, 512 MB as stored, 192 MB of RGB8
    // even decoded row by row; over the 192 MiB budget once the resize is counted.
    let started = Instant::now();
    let bomb = png_header_with(8000, 8000, 16, 6);
    match pipeline.process(&bomb) {
        Err(MediaError::TooManyPixels { pixels, pixels_max, .. }) => {
            assert_eq!(pixels, 64_000_000);
            assert!(pixels_max < pixels, "{pixels_max}");
        }
        other => panic!("expected TooManyPixels for the 16-bit bomb, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(50), "refused from the header alone");
    // A progressive 4:4:4 JPEG of 40 MP needs its coefficients (6 bytes a pixel) on top.
    let mut progressive = vec![0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x11, 0x08];
    progressive.extend_from_slice(&5000u16.to_be_bytes());
    progressive.extend_from_slice(&8000u16.to_be_bytes());
    progressive.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1]);
    let declared = header::declared(MediaKind::Jpeg, &progressive).expect("frame header read");
    assert_eq!(declared.decoder_scratch_bytes, 40_000_000 * 6);
    assert!(matches!(pipeline.process(&progressive), Err(MediaError::TooManyPixels { .. })));
    // The same frame, baseline and 4:2:0, fits: 120 MB of RGB8 and no coefficients.
    progressive[3] = 0xC0;
    progressive[13] = 0x22; // luma sampled 2x2: 4:2:0
    let declared = header::declared(MediaKind::Jpeg, &progressive).expect("frame header read");
    let estimate = convert::decoded_bytes_estimate(MediaKind::Jpeg, &declared);
    assert!(estimate < budget, "{estimate} fits {budget}");
    assert!(matches!(pipeline.process(&progressive), Err(MediaError::Undecodable(_))), "admitted, then cut off");
}

#[test]
fn sixteen_bit_png_with_alpha_decodes_row_by_row() {
    // 16-bit RGBA: left half opaque red, right half fully transparent (white once flattened).
    let (width, height) = (300u32, 200u32);
    let mut samples = Vec::new();
    for _ in 0..height {
        for x in 0..width {
            let pixel: [u16; 4] = if x < width / 2 { [65535, 0, 0, 65535] } else { [0, 0, 65535, 0] };
            for value in pixel {
                samples.extend_from_slice(&value.to_be_bytes());
            }
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&samples, width, height, image::ExtendedColorType::Rgba16)
        .expect("encode 16-bit png");
    let declared = header::declared(MediaKind::Png, &png).expect("IHDR");
    assert_eq!(declared.decoded_bytes_per_pixel, 8);
    let full = convert::decode_rgb8(MediaKind::Png, &png, &declared, image::Limits::default()).expect("decodes").full;
    assert_eq!(full.dimensions(), (width, height));
    assert_eq!(full.get_pixel(10, 10).0, RED);
    assert_eq!(full.get_pixel(width - 10, 10).0, [255, 255, 255]);
    let processed = pipeline().process(&png).expect("converts");
    assert_eq!((processed.display.width, processed.display.height), (300, 200));
}

/// An Adam7-interlaced 8-bit RGB PNG, built by hand (the encoders we have do not
/// interlace): each pass's rows with filter type 0.
fn interlaced_png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    const PASSES: [(u32, u32, u32, u32); 7] =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= width || y0 >= height {
            continue;
        }
        for y in (y0..height).step_by(dy as usize) {
            raw.push(0);
            for x in (x0..width).step_by(dx as usize) {
                raw.extend_from_slice(&pixel(x, y));
            }
        }
    }
    let mut png = png_header_only(width, height);
    png[28] = 1; // interlace method Adam7
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    push_chunk(&mut png, b"IDAT", &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6));
    push_chunk(&mut png, b"IEND", &[]);
    png
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    png.extend_from_slice(&covered);
    png.extend_from_slice(&crc32fast::hash(&covered).to_be_bytes());
}

#[test]
fn interlaced_png_decodes_to_the_same_pixels() {
    let (width, height) = (37u32, 23u32);
    let colour = |x: u32, y: u32| [(x * 6) as u8, (y * 11) as u8, ((x + y) * 3) as u8];
    let png = interlaced_png(width, height, colour);
    let reference = decode(&png);
    let declared = header::declared(MediaKind::Png, &png).expect("IHDR");
    let full = convert::decode_rgb8(MediaKind::Png, &png, &declared, image::Limits::default()).expect("decodes").full;
    assert_eq!(full.as_raw(), reference.as_raw());
    assert_eq!(full.get_pixel(36, 22).0, colour(36, 22));
}

#[test]
fn process_file_matches_process_and_reads_the_file_inside_the_gate() {
    let jpeg = jpeg_with_exif(500, 300, 6, true, quadrants(500, 300));
    let path = std::env::temp_dir().join(format!("edgenode-media-test-{}.upload", std::process::id()));
    std::fs::write(&path, &jpeg).expect("write upload");
    let pipeline = pipeline();
    let from_file = pipeline.process_file(&path);
    let _ = std::fs::remove_file(&path);
    let from_file = from_file.expect("converts");
    let from_memory = pipeline.process(&jpeg).expect("converts");
    assert_eq!(from_file.original, from_memory.original);
    assert_eq!(from_file.display.bytes, from_memory.display.bytes);
    assert_eq!((from_file.width, from_file.height), (300, 500));
    assert!(!exif_gps_present(&from_file.original));
    assert_eq!(pipeline.gate_stats(), GateStats::default());
    assert!(matches!(pipeline.process_file(Path::new("/nonexistent/edgenode/upload")), Err(MediaError::Unreadable(_))));
}

#[test]
fn jpeg_frame_header_past_the_file_head_is_found_by_seeking() {
    // 40 APP2 segments of 60 KiB before the frame: 2.4 MB of metadata first.
    let jpeg = jpeg_with_exif(40, 30, 1, false, |_, _| [9, 9, 9]);
    let mut padded = jpeg[..2].to_vec();
    for _ in 0..40 {
        padded.extend_from_slice(&[0xFF, 0xE2]);
        padded.extend_from_slice(&(60 * 1024u16 + 2).to_be_bytes());
        padded.extend(std::iter::repeat_n(0x20, 60 * 1024));
    }
    padded.extend_from_slice(&jpeg[2..]);
    let from_reader = header::jpeg_frame_from_reader(&mut std::io::Cursor::new(&padded));
    assert_eq!(from_reader, header::declared(MediaKind::Jpeg, &padded));
    assert_eq!(from_reader.map(|declared| (declared.width, declared.height)), Some((40, 30)));
}

// ---------------------------------------------------------------------------------------
// Location privacy: each encoding, before has GPS, after has none, pixels identical.

const GPS_XMP_OTHER_PREFIX: &str = r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:ns1="http://ns.adobe.com/exif/1.0/" xmlns:exifEX="http://cipa.jp/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" ns1:GPSLatitude="51,30.4445N" exifEX:GPSHPositioningError="5"><ns1:GPSLongitude>0,7.6W</ns1:GPSLongitude><dc:format>image/png</dc:format></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#;

/// Every chunk's text, inflated where compressed, and every other chunk's bytes.
fn png_chunk_texts(png: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut texts = Vec::new();
    let mut at = 8;
    while at + 12 <= png.len() {
        let length = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&png[at + 4..at + 8]).into_owned();
        let data = &png[at + 8..at + 8 + length];
        let keyword_end = data.iter().position(|&byte| byte == 0).unwrap_or(0);
        let text = match kind.as_str() {
            "zTXt" => miniz_oxide::inflate::decompress_to_vec_zlib(&data[keyword_end + 2..]).expect("inflates"),
            "iTXt" if data[keyword_end + 1] == 1 => {
                let mut offset = keyword_end + 3;
                for _ in 0..2 {
                    offset += data[offset..].iter().position(|&byte| byte == 0).unwrap() + 1;
                }
                miniz_oxide::inflate::decompress_to_vec_zlib(&data[offset..]).expect("inflates")
            }
            _ => data.to_vec(),
        };
        texts.push((kind, text));
        at += 12 + length;
    }
    texts
}

fn small_png() -> Vec<u8> {
    let rgb: Vec<u8> = (0..40 * 30).flat_map(|i| [(i % 256) as u8, 90, 160]).collect();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, 40, 30, image::ExtendedColorType::Rgb8)
        .expect("encode png");
    png
}

/// `png` with a chunk inserted right after IHDR.
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = Vec::new();
    push_chunk(&mut chunk, kind, data);
    let mut out = png.to_vec();
    out.splice(33..33, chunk);
    out
}

fn hex_profile(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut text = format!("\n{name}\n{:8}\n", bytes.len());
    for (index, byte) in bytes.iter().enumerate() {
        text.push_str(&format!("{byte:02x}"));
        if index % 36 == 35 {
            text.push('\n');
        }
    }
    text.push('\n');
    text.into_bytes()
}

fn texts_mention_gps(png: &[u8]) -> bool {
    png_chunk_texts(png).iter().any(|(_, text)| contains(text, b"GPS"))
}

#[test]
fn png_text_chunks_of_every_kind_lose_their_location() {
    use crate::media::testimage::{tiff_exif, ByteOrder};
    let base = small_png();
    let pixels = decode(&base);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&tiff_exif(ByteOrder::Little, 6, true));

    let mut itxt_compressed = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    itxt_compressed.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(GPS_XMP_OTHER_PREFIX.as_bytes(), 6));
    let mut text_xmp = b"XML:com.adobe.xmp\0".to_vec();
    text_xmp.extend_from_slice(GPS_XMP_OTHER_PREFIX.as_bytes());
    let mut ztxt_exif = b"Raw profile type exif\0\0".to_vec();
    ztxt_exif.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(&hex_profile("exif", &exif), 6));
    let mut ztxt_app1 = b"Raw profile type APP1\0\0".to_vec();
    ztxt_app1.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(&hex_profile("APP1", &exif), 6));

    for (name, kind, data) in [
        ("compressed iTXt XMP", b"iTXt", itxt_compressed),
        ("tEXt XMP", b"tEXt", text_xmp),
        ("zTXt raw profile exif", b"zTXt", ztxt_exif),
        ("zTXt raw profile APP1", b"zTXt", ztxt_app1),
    ] {
        let mut png = with_chunk(&base, kind, &data);
        let hex_latitude = "33000000010000001e00000001000000"; // 51/1, 30/1 little-endian
        let has_location = |png: &[u8]| {
            texts_mention_gps(png)
                || png_chunk_texts(png)
                    .iter()
                    .any(|(_, text)| contains(&text.to_ascii_lowercase(), hex_latitude.as_bytes()))
        };
        assert!(has_location(&png), "{name}: the test file has a location");
        let report = strip_gps(&mut png);
        assert!(!has_location(&png), "{name}: location survived: {report:?}");
        assert_eq!(report.metadata_blocks_dropped, 0, "{name}: edited, not dropped");
        assert_eq!(decode(&png), pixels, "{name}: pixels identical");
        // Other XMP survives the edit.
        if name.contains("XMP") {
            assert!(png_chunk_texts(&png).iter().any(|(_, text)| contains(text, b"<dc:format>image/png</dc:format>")));
        }
    }

    // A compressed chunk that does not inflate is dropped whole.
    let mut broken = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    broken.extend_from_slice(b"\x78\x9c not deflate at all GPSLatitude");
    let mut png = with_chunk(&base, b"iTXt", &broken);
    let length = png.len();
    assert_eq!(strip_gps(&mut png).metadata_blocks_dropped, 1);
    assert_eq!(png.len(), length - (12 + broken.len()));
    assert_eq!(decode(&png), pixels);

    // Bytes after IEND go.
    let mut trailing = base.clone();
    trailing.extend_from_slice(b"GPSLatitude=51.5");
    assert_eq!(strip_gps(&mut trailing).trailing_bytes_dropped, 16);
    assert_eq!(trailing, base);
}

#[test]
fn jpeg_secondary_images_after_the_first_end_lose_their_location() {
    let primary = jpeg_with_exif(64, 48, 6, true, quadrants(64, 48));
    let preview = jpeg_with_exif(16, 12, 1, true, |_, _| [200, 10, 10]);
    let mut file = primary.clone();
    file.extend_from_slice(&preview);
    file.extend_from_slice(&preview);
    file.extend_from_slice(b"\0\0ftypmp42 a motion-photo video with a location atom");
    let gps_blocks = |bytes: &[u8]| {
        let tiffs = (0..bytes.len().saturating_sub(6)).filter(|&at| &bytes[at..at + 6] == b"Exif\0\0");
        tiffs
            .filter(|&at| {
                crate::media::exif::exif_gps_present(&{
                    let mut single = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF];
                    single.extend_from_slice(&bytes[at..(at + 0xFFFD).min(bytes.len())]);
                    single
                })
            })
            .count()
    };
    assert_eq!(gps_blocks(&file), 3, "the test file has GPS in all three images");
    let report = strip_gps(&mut file);
    assert_eq!(report.gps_ifds_emptied, 3);
    assert_eq!(gps_blocks(&file), 0);
    assert_eq!(file.len(), primary.len() + 2 * preview.len(), "the unwalkable trailer is dropped");
    assert_eq!(decode(&file), decode(&primary), "primary pixels identical");
    assert_eq!(&file[primary.len()..primary.len() + 2], &[0xFF, 0xD8], "the previews are kept");
    assert_eq!(exif_orientation(&file), Some(6));
}

#[test]
fn jpeg_xmp_with_any_prefix_loses_its_location() {
    let jpeg = jpeg_with_exif(32, 32, 1, false, |_, _| [5, 6, 7]);
    let mut segment = vec![0xFF, 0xE1];
    let prefix = b"http://ns.adobe.com/xap/1.0/\0";
    segment.extend_from_slice(&((2 + prefix.len() + GPS_XMP_OTHER_PREFIX.len()) as u16).to_be_bytes());
    segment.extend_from_slice(prefix);
    segment.extend_from_slice(GPS_XMP_OTHER_PREFIX.as_bytes());
    let mut file = jpeg.clone();
    file.splice(2..2, segment);
    assert!(contains(&file, b"GPS"));
    assert_eq!(strip_gps(&mut file).xmp_gps_fields_blanked, 3);
    assert!(!contains(&file, b"GPS"));
    assert!(!contains(&file, b"51,30.4445N"));
    assert!(contains(&file, b"<dc:format>image/png</dc:format>"));
    assert_eq!(decode(&file), decode(&jpeg));
}

#[test]
fn webp_exif_and_xmp_chunks_lose_their_location_and_flags_stay_true() {
    use crate::media::testimage::{tiff_exif, ByteOrder};
    let rgb: Vec<u8> = (0..24 * 16).flat_map(|i| [(i % 200) as u8, 40, 90]).collect();
    let mut simple = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut simple)
        .write_image(&rgb, 24, 16, image::ExtendedColorType::Rgb8)
        .expect("encode webp");
    let image_chunk = &simple[12..];
    let mut body = b"WEBPVP8X".to_vec();
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&[0x08 | 0x04, 0, 0, 0, 23, 0, 0, 15, 0, 0]); // EXIF + XMP, 24x16
    body.extend_from_slice(image_chunk);
    for (fourcc, data) in
        [(b"EXIF", tiff_exif(ByteOrder::Little, 1, true)), (b"XMP ", GPS_XMP_OTHER_PREFIX.as_bytes().to_vec())]
    {
        body.extend_from_slice(fourcc);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
    webp.extend_from_slice(&body);
    let pixels = decode(&webp);
    assert!(exif_gps_present(&webp) && contains(&webp, b"GPS"));
    let report = strip_gps(&mut webp);
    assert_eq!((report.gps_ifds_emptied, report.xmp_gps_fields_blanked), (1, 3));
    assert!(!exif_gps_present(&webp));
    assert!(!contains(&webp, b"GPS"));
    assert_eq!(webp[20] & 0x0C, 0x0C, "both chunks are still there, and flagged");
    assert_eq!(decode(&webp), pixels);
}

// ---------------------------------------------------------------------------------------
// Colour: derivatives in sRGB

/// Display P3 colours that sRGB shows differently with the same numbers, and grey.
const P3_PATCHES: [[u8; 3]; 4] = [[200, 80, 60], [224, 172, 140], [60, 160, 90], [128, 128, 128]];
const PATCH_PIXELS: u32 = 32;

fn p3_profile() -> Vec<u8> {
    moxcms::ColorProfile::new_display_p3().encode().expect("moxcms encodes its Display P3 profile")
}

/// The patches side by side, encoded as `kind` with `profile` embedded (if any).
fn patches_encoded(kind: MediaKind, patches: &[[u8; 3]], profile: Option<Vec<u8>>) -> Vec<u8> {
    let width = PATCH_PIXELS * patches.len() as u32;
    let image = RgbImage::from_fn(width, PATCH_PIXELS, |x, _| image::Rgb(patches[(x / PATCH_PIXELS) as usize]));
    let mut bytes = Vec::new();
    let (raw, colour) = (image.as_raw(), image::ExtendedColorType::Rgb8);
    match kind {
        MediaKind::Jpeg => {
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
            if let Some(profile) = profile {
                encoder.set_icc_profile(profile).expect("JPEG takes a profile");
            }
            encoder.write_image(raw, width, PATCH_PIXELS, colour)
        }
        MediaKind::Png => {
            let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
            if let Some(profile) = profile {
                encoder.set_icc_profile(profile).expect("PNG takes a profile");
            }
            encoder.write_image(raw, width, PATCH_PIXELS, colour)
        }
        MediaKind::Webp => {
            let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut bytes);
            if let Some(profile) = profile {
                encoder.set_icc_profile(profile).expect("WebP takes a profile");
            }
            encoder.write_image(raw, width, PATCH_PIXELS, colour)
        }
    }
    .expect("encode the patches");
    bytes
}

/// The colour at the centre of each patch of a derivative.
fn patch_centres(variant: &Variant, patches: usize) -> Vec<[u8; 3]> {
    let image = decode(&variant.bytes);
    (0..patches as u32)
        .map(|index| image.get_pixel(index * PATCH_PIXELS + PATCH_PIXELS / 2, PATCH_PIXELS / 2).0)
        .collect()
}

fn largest_difference(left: &[[u8; 3]], right: &[[u8; 3]]) -> u8 {
    left.iter().flatten().zip(right.iter().flatten()).map(|(left, right)| left.abs_diff(*right)).max().unwrap_or(0)
}

#[test]
fn display_p3_photos_get_srgb_derivatives_in_every_format() {
    // What the P3 colours are in sRGB: the transform on its own is checked against the
    // published matrix in colour.rs; here, that the pipeline applies it to both variants.
    let mut expected = RgbImage::from_fn(P3_PATCHES.len() as u32, 1, |x, _| image::Rgb(P3_PATCHES[x as usize]));
    colour::to_srgb(&p3_profile(), colour::Samples::Colour).expect("P3 is not sRGB").apply(&mut expected);
    let expected: Vec<[u8; 3]> = expected.pixels().map(|pixel| pixel.0).collect();
    assert!(largest_difference(&expected, &P3_PATCHES) > 10, "the patches are ones sRGB shows differently");
    for kind in [MediaKind::Jpeg, MediaKind::Png, MediaKind::Webp] {
        let processed = pipeline().process(&patches_encoded(kind, &P3_PATCHES, Some(p3_profile()))).expect("converts");
        for (name, variant) in [("display", &processed.display), ("thumb", &processed.thumb)] {
            let got = patch_centres(variant, P3_PATCHES.len());
            // JPEG in (quality 95) and out (80–82) moves flat patches by a step or two.
            assert!(largest_difference(&got, &expected) <= 3, "{kind:?} {name}: {got:?}, expected {expected:?}");
            assert!(!contains(&variant.bytes, b"ICC_PROFILE"), "{kind:?} {name}: sRGB needs no profile");
        }
    }
}

#[test]
fn untagged_srgb_and_unusable_profiles_leave_the_derivatives_as_they_were() {
    let untagged = pipeline().process(&patches_encoded(MediaKind::Jpeg, &P3_PATCHES, None)).expect("converts");
    let got = patch_centres(&untagged.display, P3_PATCHES.len());
    assert!(largest_difference(&got, &P3_PATCHES) <= 3, "untagged pixels are kept: {got:?}");
    let srgb = moxcms::ColorProfile::new_srgb().encode().expect("encodes");
    let mut oversized = p3_profile();
    oversized.resize(colour::PROFILE_BYTES_MAX + 1, 0);
    for (what, profile) in
        [("sRGB", srgb), ("not a profile", b"garbage, not an ICC profile".to_vec()), ("oversized", oversized)]
    {
        let jpeg = patches_encoded(MediaKind::Jpeg, &P3_PATCHES, Some(profile));
        let processed = pipeline().process(&jpeg).unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(processed.display.bytes, untagged.display.bytes, "{what}: display as if untagged");
        assert_eq!(processed.thumb.bytes, untagged.thumb.bytes, "{what}: thumb as if untagged");
    }
}

#[test]
fn jpeg_icc_profile_bytes_add_up_every_app2_chunk() {
    let untagged = patches_encoded(MediaKind::Jpeg, &P3_PATCHES, None);
    assert_eq!(header::jpeg_icc_profile_bytes(&untagged), 0);
    let profile = p3_profile();
    let tagged = patches_encoded(MediaKind::Jpeg, &P3_PATCHES, Some(profile.clone()));
    assert_eq!(header::jpeg_icc_profile_bytes(&tagged), profile.len());
    // 150 KB: three APP2 chunks, counted before the decoder is asked for any of it.
    let large = vec![7u8; 150_000];
    let tagged = patches_encoded(MediaKind::Jpeg, &P3_PATCHES, Some(large));
    assert_eq!(header::jpeg_icc_profile_bytes(&tagged), 150_000);
}

#[test]
fn grey_photos_follow_their_grey_profile() {
    let levels: Vec<u8> = (0..64 * 8).map(|index| [64u8, 128, 192, 255][(index % 64) / 16]).collect();
    let grey_jpeg = |profile: Option<Vec<u8>>| {
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        if let Some(profile) = profile {
            encoder.set_icc_profile(profile).expect("JPEG takes a profile");
        }
        encoder.write_image(&levels, 64, 8, image::ExtendedColorType::L8).expect("encode grey");
        jpeg
    };
    let centres = |jpeg: &[u8]| -> Vec<[u8; 3]> {
        let display = decode(&pipeline().process(jpeg).expect("converts").display.bytes);
        (0..4).map(|index| display.get_pixel(index * 16 + 8, 4).0).collect()
    };
    let plain = centres(&grey_jpeg(None));
    let gamma = moxcms::ColorProfile::new_gray_with_gamma(1.8).encode().expect("encodes");
    let converted = centres(&grey_jpeg(Some(gamma)));
    for (index, (plain, converted)) in plain.iter().zip(&converted).enumerate() {
        // Gamma 1.8 is lighter than sRGB in the midtones; white stays white.
        let level = f64::from([64u8, 128, 192, 255][index]) / 255.0;
        let linear = level.powf(1.8);
        let srgb = if linear <= 0.003_130_8 { linear * 12.92 } else { 1.055 * linear.powf(1.0 / 2.4) - 0.055 };
        let expected = (srgb * 255.0).round() as u8;
        assert!(converted.iter().all(|&value| value.abs_diff(expected) <= 2), "{converted:?}, expected {expected}");
        assert!(plain.iter().all(|&value| value.abs_diff([64u8, 128, 192, 255][index]) <= 2), "{plain:?}");
    }
}

#[test]
fn avatar_is_the_centred_square_fitted_to_256_without_metadata() {
    // Landscape 600x400 with EXIF orientation 6 (upright it is portrait 400x600): left
    // third red, middle third green, right third blue before turning.
    let jpeg = jpeg_with_exif(600, 400, 6, true, |x, _| match x {
        0..200 => RED,
        200..400 => GREEN,
        _ => BLUE,
    });
    let processed = pipeline().process(&jpeg).unwrap();
    let avatar = pipeline().avatar(&processed.display.bytes).unwrap();
    assert_eq!((avatar.width, avatar.height), (AVATAR_EDGE_PIXELS, AVATAR_EDGE_PIXELS));
    assert!(!has_app1(&avatar.bytes), "no EXIF or XMP");
    assert!(!contains(&avatar.bytes, b"ICC_PROFILE"));
    let image = decode(&avatar.bytes);
    assert_eq!(image.dimensions(), (256, 256));
    // Upright, the stripes run top to bottom: red, green, blue. The centred square of
    // 400x600 is rows 100..500, so its top sixth is red, its middle green and its
    // bottom sixth blue.
    assert_colour_near(&image, 128, 8, RED, "top");
    assert_colour_near(&image, 128, 128, GREEN, "middle");
    assert_colour_near(&image, 128, 248, BLUE, "bottom");
}

#[test]
fn small_photos_give_a_small_square_avatar_never_upscaled() {
    let jpeg = jpeg_with_exif(90, 40, 1, false, quadrants(90, 40));
    let processed = pipeline().process(&jpeg).unwrap();
    let avatar = pipeline().avatar(&processed.display.bytes).unwrap();
    assert_eq!((avatar.width, avatar.height), (40, 40));
    assert!(matches!(pipeline().avatar(b"not an image"), Err(MediaError::Unsupported)));
    let truncated = &processed.display.bytes[..processed.display.bytes.len() / 2];
    assert!(pipeline().avatar(truncated).is_err());
}
