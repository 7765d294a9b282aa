//! Location privacy, with exiftool as the oracle: the test makes a corpus of photos that
//! carry GPS in every encoding we know of (EXIF and XMP in JPEG, PNG and WebP; XMP under
//! a prefix other than `exif:`; compressed PNG text; ImageMagick raw profiles; a
//! secondary MPF image after the primary's end), checks with exiftool that each file
//! really has GPS, uploads each to a real node, and checks with exiftool that the
//! `original` the owner downloads has no GPS field at all and that `thumb` and `display`
//! carry no EXIF or XMP whatsoever. The original's pixels must be those uploaded.
//!
//! Needs exiftool (Debian `libimage-exiftool-perl`) and perl's Compress::Zlib (which
//! comes with perl); without them the test fails and says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgenode_tests::checks::{expect_status, id_of};
use edgenode_tests::fixtures::{decode, sha256_hex};
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use image::{ExtendedColorType, ImageEncoder};
use serde_json::Value;

const INSTALL_EXIFTOOL: &str =
    "this test needs exiftool as its oracle: install the Debian package libimage-exiftool-perl \
     (apt-get install libimage-exiftool-perl)";
const LATITUDE: &str = "51.50735";
const LONGITUDE: &str = "-0.12776";
/// XMP whose exif namespace is bound to `ns1` (as some libraries write it), with the CIPA
/// namespace too, GPS as an attribute and as an element, and a field that must survive.
const XMP_OTHER_PREFIXES: &str = r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:ns1="http://ns.adobe.com/exif/1.0/" xmlns:exifEX="http://cipa.jp/exif/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" ns1:GPSLatitude="51,30.441N" exifEX:GPSHPositioningError="5/1">
<ns1:GPSLongitude>0,7.666W</ns1:GPSLongitude>
<ns1:GPSVersionID>2.3.0.0</ns1:GPSVersionID>
<dc:format>image/jpeg</dc:format>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"#;

struct CorpusFile {
    name: &'static str,
    content_type: &'static str,
    path: PathBuf,
}

#[test]
fn no_gps_survives_in_any_encoding() {
    exiftool_is_installed();
    let workdir = unique_dir("edgenode-location-privacy");
    let corpus = make_corpus(&workdir);

    // Every corpus file really has GPS, or this test could not fail.
    let before = exiftool_json(&["-n", "-G", "-a", "-GPS:all", "-XMP:all", "-ee"], &paths(&corpus));
    for (file, tags) in corpus.iter().zip(&before) {
        let gps = gps_fields(tags);
        assert!(!gps.is_empty(), "corpus file {} has no GPS according to exiftool: {tags}", file.name);
        eprintln!("corpus {}: {} GPS fields before upload", file.name, gps.len());
    }

    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let mut originals = Vec::new();
    let mut variants = Vec::new();
    for file in &corpus {
        let bytes = std::fs::read(&file.path).expect("reading a corpus file");
        let path = format!("/api/v1/media/{}", sha256_hex(&bytes));
        let what = format!("alice uploads {}", file.name);
        let media =
            expect_status(&what, client.put_bytes(&path, Some(&alice.token), file.content_type, bytes.clone()), 201);
        let media_id = id_of(&media);
        for variant in ["original", "thumb", "display"] {
            let response = client.fetch_media(Some(&alice), &media_id, variant);
            assert_eq!(response.status, 200, "alice fetches the {variant} of {}: {}", file.name, response.body_text());
            let saved = workdir.join(format!("{}.{variant}", file.name));
            std::fs::write(&saved, &response.body).expect("saving a download");
            if variant == "original" {
                assert_eq!(
                    decode(&response.body).as_raw(),
                    decode(&bytes).as_raw(),
                    "the original of {} keeps its pixels exactly",
                    file.name
                );
                originals.push((file.name, saved));
            } else {
                variants.push((format!("{} {variant}", file.name), saved));
            }
        }
    }

    let original_paths: Vec<&Path> = originals.iter().map(|(_, path)| path.as_path()).collect();
    let after = exiftool_json(&["-n", "-G", "-a", "-GPS:all", "-XMP:all", "-ee"], &original_paths);
    let mut leaks = Vec::new();
    for ((name, _), tags) in originals.iter().zip(&after) {
        let gps = gps_fields(tags);
        eprintln!("original {name}: {} GPS fields after upload", gps.len());
        if !gps.is_empty() {
            leaks.push(format!("{name}: {gps:?}"));
        }
    }
    assert!(leaks.is_empty(), "GPS survived in these originals:\n{}", leaks.join("\n"));

    let variant_paths: Vec<&Path> = variants.iter().map(|(_, path)| path.as_path()).collect();
    let metadata = exiftool_json(&["-EXIF:all", "-XMP:all"], &variant_paths);
    for ((name, _), tags) in variants.iter().zip(&metadata) {
        let fields: Vec<&String> =
            tags.as_object().map(|tags| tags.keys().filter(|key| *key != "SourceFile").collect()).unwrap_or_default();
        assert!(fields.is_empty(), "the {name} carries metadata: {fields:?}");
    }
    let _ = std::fs::remove_dir_all(&workdir);
}

fn paths(corpus: &[CorpusFile]) -> Vec<&Path> {
    corpus.iter().map(|file| file.path.as_path()).collect()
}

/// Tags whose name mentions GPS (any group, any case).
fn gps_fields(tags: &Value) -> Vec<String> {
    let Some(tags) = tags.as_object() else { return Vec::new() };
    tags.iter()
        .filter(|(key, _)| key.to_ascii_lowercase().contains("gps"))
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The corpus

fn make_corpus(dir: &Path) -> Vec<CorpusFile> {
    let mut corpus = Vec::new();
    let mut add = |name: &'static str, content_type: &'static str, bytes: &[u8]| -> PathBuf {
        let extension = content_type.trim_start_matches("image/");
        let path = dir.join(format!("{name}.{extension}"));
        std::fs::write(&path, bytes).expect("writing a corpus file");
        corpus.push(CorpusFile { name, content_type, path: path.clone() });
        path
    };
    let gps_exif = ["-GPSLatitude=51.50735", "-GPSLatitudeRef=N", "-GPSLongitude=0.12776", "-GPSLongitudeRef=W"];
    let gps_xmp = [format!("-XMP-exif:GPSLatitude={LATITUDE}"), format!("-XMP-exif:GPSLongitude={LONGITUDE}")];
    let gps_xmp: Vec<&str> = gps_xmp.iter().map(String::as_str).collect();

    // JPEG: EXIF, XMP, XMP under another prefix, a secondary MPF image with its own GPS.
    let path = add("jpeg-exif", "image/jpeg", &base_jpeg(96, 64, 0));
    exiftool_write(&[&gps_exif[..], &["-Orientation#=6"]].concat(), &path);
    let path = add("jpeg-xmp", "image/jpeg", &base_jpeg(96, 64, 1));
    exiftool_write(&gps_xmp, &path);
    add("jpeg-xmp-ns1-prefix", "image/jpeg", &with_jpeg_xmp(&base_jpeg(96, 64, 2), XMP_OTHER_PREFIXES.as_bytes()));
    let primary = dir.join("primary.jpg");
    let secondary = dir.join("secondary.jpg");
    std::fs::write(&primary, base_jpeg(96, 64, 3)).expect("write");
    std::fs::write(&secondary, base_jpeg(32, 24, 4)).expect("write");
    exiftool_write(&gps_exif, &primary);
    exiftool_write(&[&gps_exif[..], &gps_xmp[..]].concat(), &secondary);
    let mpf = with_mpf_secondary(&read(&primary), &read(&secondary));
    add("jpeg-mpf-secondary-image", "image/jpeg", &mpf);

    // PNG: eXIf, iTXt XMP, compressed iTXt XMP, tEXt XMP, zTXt raw profiles.
    let png = base_png(80, 60);
    let path = add("png-exif-chunk", "image/png", &png);
    exiftool_write(&gps_exif, &path);
    let path = add("png-itxt-xmp", "image/png", &png);
    exiftool_write(&gps_xmp, &path);
    let mut itxt = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    itxt.extend_from_slice(&zlib(XMP_OTHER_PREFIXES.as_bytes()));
    add("png-itxt-xmp-compressed", "image/png", &with_png_chunk(&png, b"iTXt", &itxt));
    let mut text = b"XML:com.adobe.xmp\0".to_vec();
    text.extend_from_slice(XMP_OTHER_PREFIXES.as_bytes());
    add("png-text-xmp", "image/png", &with_png_chunk(&png, b"tEXt", &text));
    // The EXIF exiftool wrote into the JPEG above, as ImageMagick stores it in PNG.
    let exif = exiftool_output(&["-b", "-EXIF"], &corpus_path(dir, "jpeg-exif.jpeg"));
    assert!(exif.starts_with(b"II") || exif.starts_with(b"MM"), "exiftool -b -EXIF gives a TIFF structure");
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&exif);
    for (name, profile, payload) in
        [("png-ztxt-raw-profile-exif", "exif", &app1), ("png-ztxt-raw-profile-app1", "APP1", &app1)]
    {
        let mut ztxt = format!("Raw profile type {profile}\0\0").into_bytes();
        ztxt.extend_from_slice(&zlib(&hex_profile(profile, payload)));
        add(name, "image/png", &with_png_chunk(&png, b"zTXt", &ztxt));
    }

    // WebP: EXIF and XMP chunks (exiftool turns the simple file into VP8X).
    let path = add("webp-exif-and-xmp", "image/webp", &base_webp(80, 60));
    exiftool_write(&[&gps_exif[..], &gps_xmp[..]].concat(), &path);
    corpus
}

fn corpus_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn gradient(width: u32, height: u32, seed: u8) -> Vec<u8> {
    (0..width * height)
        .flat_map(|index| {
            let (x, y) = (index % width, index / width);
            [(x * 2) as u8 ^ seed, (y * 3) as u8, seed.wrapping_mul(40)]
        })
        .collect()
}

fn base_jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .write_image(&gradient(width, height, seed), width, height, ExtendedColorType::Rgb8)
        .expect("encoding a JPEG");
    jpeg
}

fn base_png(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&gradient(width, height, 7), width, height, ExtendedColorType::Rgb8)
        .expect("encoding a PNG");
    png
}

fn base_webp(width: u32, height: u32) -> Vec<u8> {
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(&gradient(width, height, 9), width, height, ExtendedColorType::Rgb8)
        .expect("encoding a WebP");
    webp
}

/// `jpeg` with an XMP APP1 segment right after SOI.
fn with_jpeg_xmp(jpeg: &[u8], xmp: &[u8]) -> Vec<u8> {
    let prefix = b"http://ns.adobe.com/xap/1.0/\0";
    let length = u16::try_from(2 + prefix.len() + xmp.len()).expect("XMP fits one segment");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(prefix);
    out.extend_from_slice(xmp);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A multi-picture file as phones write them: the primary with an MPF APP2 index right
/// after SOI, then the secondary image straight after the primary's end.
fn with_mpf_secondary(primary: &[u8], secondary: &[u8]) -> Vec<u8> {
    const SEGMENT_BYTES: usize = 2 + 2 + 4 + 82; // marker, length, "MPF\0", TIFF
    let tiff_start = 2 + 4 + 4; // SOI, marker + length, "MPF\0"
    let primary_bytes = primary.len() + SEGMENT_BYTES;
    let mut tiff = b"MM\0*".to_vec();
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&[0xB0, 0x00, 0, 7, 0, 0, 0, 4, b'0', b'1', b'0', b'0']); // MPFVersion
    tiff.extend_from_slice(&[0xB0, 0x01, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2]); // NumberOfImages
    tiff.extend_from_slice(&[0xB0, 0x02, 0, 7, 0, 0, 0, 32, 0, 0, 0, 50]); // MPEntry at 50
    tiff.extend_from_slice(&0u32.to_be_bytes());
    for (attribute, size, offset) in
        [(0x2003_0000u32, primary_bytes, 0usize), (0x0001_0001u32, secondary.len(), primary_bytes - tiff_start)]
    {
        tiff.extend_from_slice(&attribute.to_be_bytes());
        tiff.extend_from_slice(&u32::try_from(size).expect("small").to_be_bytes());
        tiff.extend_from_slice(&u32::try_from(offset).expect("small").to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0]);
    }
    assert_eq!(tiff.len(), 82);
    let mut out = primary[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE2]);
    out.extend_from_slice(&u16::try_from(2 + 4 + tiff.len()).expect("small").to_be_bytes());
    out.extend_from_slice(b"MPF\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&primary[2..]);
    assert_eq!(out.len(), primary_bytes);
    out.extend_from_slice(secondary);
    out
}

/// `png` with a chunk inserted right after IHDR.
fn with_png_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    let mut out = png[..33].to_vec();
    out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&covered);
    out.extend_from_slice(&crc32fast::hash(&covered).to_be_bytes());
    out.extend_from_slice(&png[33..]);
    out
}

/// ImageMagick's raw profile text: "\n<type>\n<length, 8 wide>\n<hex, 72 a line>\n".
fn hex_profile(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut text = format!("\n{name}\n{:8}\n", bytes.len());
    for line in bytes.chunks(36) {
        for byte in line {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
    }
    text.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Tools

fn exiftool_is_installed() {
    match Command::new("exiftool").arg("-ver").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!("`exiftool -ver` failed ({}): {INSTALL_EXIFTOOL}", output.status),
        Err(error) => panic!("running exiftool: {error}: {INSTALL_EXIFTOOL}"),
    }
}

fn exiftool_output(args: &[&str], path: &Path) -> Vec<u8> {
    let output = Command::new("exiftool")
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|error| panic!("running exiftool: {error}: {INSTALL_EXIFTOOL}"));
    assert!(
        output.status.success(),
        "exiftool {args:?} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn exiftool_write(args: &[&str], path: &Path) {
    let mut all = vec!["-q", "-overwrite_original"];
    all.extend_from_slice(args);
    exiftool_output(&all, path);
}

/// `exiftool -j ARGS FILES…`, one object per file in the order given.
fn exiftool_json(args: &[&str], files: &[&Path]) -> Vec<Value> {
    let output = Command::new("exiftool")
        .arg("-j")
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|error| panic!("running exiftool: {error}: {INSTALL_EXIFTOOL}"));
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("exiftool -j gave no JSON ({error}): {}", String::from_utf8_lossy(&output.stderr))
    });
    let objects = parsed.as_array().cloned().unwrap_or_default();
    assert_eq!(objects.len(), files.len(), "exiftool answered for every file: {parsed}");
    for (object, file) in objects.iter().zip(files) {
        assert_eq!(object["SourceFile"].as_str().map(Path::new), Some(*file), "exiftool kept the order");
    }
    objects
}

/// zlib through perl's Compress::Zlib (perl is there wherever exiftool is), so this test
/// needs no compression crate of its own.
fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("perl")
        .args(["-MCompress::Zlib", "-e", "binmode STDIN; binmode STDOUT; local $/; print compress(<STDIN>)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running perl: {error}: {INSTALL_EXIFTOOL}"));
    child.stdin.take().expect("stdin").write_all(bytes).expect("writing to perl");
    let output = child.wait_with_output().expect("perl ran");
    assert!(output.status.success() && output.stdout.len() > 2, "perl Compress::Zlib failed");
    output.stdout
}

fn unique_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the work dir");
    dir
}
