//! Image bombs against a real node, one kind per fresh node (VmHWM is a high-water mark):
//! 16-bit PNG, progressive JPEG and WebP at the pixel limit (8000x8000 = the default
//! 64,000,000 pixels) and a small, highly compressible 8000x8000 16-bit PNG bomb, plus
//! the largest of each kind the decode budget admits. Each upload must either convert
//! or be refused with 413 before decoding, and the node's peak resident memory must stay
//! under its baseline plus the decode budget. Prints one line per kind:
//! `image bomb: KIND VmHWM … MiB (budget … MiB)`.
//!
//! Images come from `vips` (Debian libvips-tools) where an encoder is needed that the
//! image crate lacks (progressive JPEG, lossy WebP); the PNGs are written by hand, since
//! encoding 512 MB of 16-bit samples in a debug build takes minutes.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgenode_tests::fixtures::sha256_hex;
use edgenode_tests::{Client, Node, NodeOptions, Transport};

const MIB: u64 = 1024 * 1024;
/// The node's default decode budget (`limits.media_decoded_bytes_in_flight_max`), set
/// explicitly so the figures printed say what they were measured against.
const BUDGET_BYTES: u64 = 192 * MIB;
const INSTALL_VIPS: &str = "this test makes its images with vips: install the Debian package libvips-tools";

/// What a kind of upload must get at the default limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Converted,
    Refused,
}

struct Bomb {
    kind: &'static str,
    content_type: &'static str,
    bytes: Vec<u8>,
    expected: Expected,
}

#[test]
#[ignore = "system tier: image bombs, measures VmHWM"]
fn image_bombs_stay_within_the_decode_budget() {
    let workdir = std::env::temp_dir().join(format!("edgenode-image-bombs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).expect("work dir");
    let bombs = make_bombs(&workdir);
    let _ = std::fs::remove_dir_all(&workdir);

    let mut failures = Vec::new();
    for bomb in &bombs {
        let config = format!("[limits]\nmedia_decoded_bytes_in_flight_max = {BUDGET_BYTES}\n");
        let node = Node::start(NodeOptions::with_config(&config));
        let client = Client::new(&node, Transport::Http2);
        let alice = client.claim_admin(&node, "alice");
        let baseline = node.peak_resident_bytes();
        let path = format!("/api/v1/media/{}", sha256_hex(&bomb.bytes));
        let (status, answer) = client.put_bytes(&path, Some(&alice.token), bomb.content_type, bomb.bytes.clone());
        let peak = node.peak_resident_bytes();
        println!(
            "image bomb: {} VmHWM {} MiB (budget {} MiB, baseline {} MiB, file {:.1} MiB) -> {status}",
            bomb.kind,
            peak / MIB,
            BUDGET_BYTES / MIB,
            baseline / MIB,
            bomb.bytes.len() as f64 / MIB as f64
        );
        let expected_status = match bomb.expected {
            Expected::Converted => 201,
            Expected::Refused => 413,
        };
        if status != expected_status {
            failures.push(format!("{}: expected {expected_status}, got {status}: {answer}", bomb.kind));
        }
        if peak > baseline + BUDGET_BYTES {
            failures.push(format!(
                "{}: VmHWM {} MiB is over baseline {} MiB + budget {} MiB",
                bomb.kind,
                peak / MIB,
                baseline / MIB,
                BUDGET_BYTES / MIB
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn make_bombs(dir: &Path) -> Vec<Bomb> {
    vips_is_installed();
    vec![
        Bomb {
            kind: "png16-bomb-8000x8000",
            content_type: "image/png",
            bytes: zero_png(8000, 8000, 16, 6),
            expected: Expected::Refused,
        },
        Bomb {
            kind: "png16-largest-admitted-7000x5000",
            content_type: "image/png",
            bytes: zero_png(7000, 5000, 16, 6),
            expected: Expected::Converted,
        },
        Bomb {
            kind: "jpeg-progressive-at-pixel-limit-8000x8000",
            content_type: "image/jpeg",
            bytes: vips_image(dir, 8000, 8000, "jpg[Q=90,interlace]"),
            expected: Expected::Refused,
        },
        Bomb {
            kind: "jpeg-progressive-420-admitted-5000x4000",
            content_type: "image/jpeg",
            bytes: vips_image(dir, 5000, 4000, "jpg[Q=85,interlace]"),
            expected: Expected::Converted,
        },
        Bomb {
            kind: "webp-lossy-at-pixel-limit-8000x8000",
            content_type: "image/webp",
            bytes: vips_image(dir, 8000, 8000, "webp[Q=80]"),
            expected: Expected::Refused,
        },
        Bomb {
            kind: "webp-lossy-admitted-6000x4000",
            content_type: "image/webp",
            bytes: vips_image(dir, 6000, 4000, "webp[Q=80]"),
            expected: Expected::Converted,
        },
        Bomb {
            kind: "webp-lossless-admitted-5000x4000",
            content_type: "image/webp",
            bytes: vips_image(dir, 5000, 4000, "webp[lossless]"),
            expected: Expected::Converted,
        },
    ]
}

fn vips_is_installed() {
    match Command::new("vips").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        _ => panic!("{INSTALL_VIPS}"),
    }
}

fn vips(args: &[&str]) {
    let output =
        Command::new("vips").args(args).output().unwrap_or_else(|error| panic!("vips: {error}: {INSTALL_VIPS}"));
    assert!(output.status.success(), "vips {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A `width`×`height` RGB image of one grey, saved as `format` (a vips save string such
/// as `jpg[Q=90,interlace]`).
fn vips_image(dir: &Path, width: u32, height: u32, format: &str) -> Vec<u8> {
    let black: PathBuf = dir.join("black.v");
    let grey: PathBuf = dir.join("grey.v");
    let extension = format.split('[').next().unwrap_or(format);
    let out = dir.join(format!("image.{extension}"));
    let (width, height) = (width.to_string(), height.to_string());
    let path = |path: &Path| path.to_str().expect("utf-8 temp path").to_owned();
    vips(&["black", &path(&black), &width, &height, "--bands", "3"]);
    vips(&["linear", &path(&black), &path(&grey), "1", "128", "--uchar"]);
    let target = format!("{}{}", path(&out), &format[extension.len()..]);
    vips(&["copy", &path(&grey), &target]);
    let bytes = std::fs::read(&out).expect("reading what vips wrote");
    for file in [black, grey, out] {
        let _ = std::fs::remove_file(file);
    }
    bytes
}

/// A PNG whose samples are all zero, compressed by hand: one fixed-Huffman deflate block
/// of a literal 0 and then back-references of 258 bytes at distance 1 (13 bits each), so
/// an 8000x8000 16-bit RGBA image (512 MB of samples) is a 3 MB file.
fn zero_png(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let channels: u64 = match colour_type {
        0 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let row_bytes = 1 + u64::from(width) * channels * u64::from(bit_depth) / 8;
    let raw_bytes = row_bytes * u64::from(height);

    let mut bits = BitWriter::default();
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = fixed Huffman
    bits.huffman(0x30, 8); // literal 0
    let runs = (raw_bytes - 1) / 258;
    for _ in 0..runs {
        bits.huffman(0xC5, 8); // length 258 (symbol 285)
        bits.huffman(0, 5); // distance 1
    }
    for _ in 0..(raw_bytes - 1) % 258 {
        bits.huffman(0x30, 8);
    }
    bits.huffman(0, 7); // end of block
    let mut zlib = vec![0x78, 0x01];
    zlib.extend_from_slice(&bits.finish());
    // Adler-32 of zeros: a stays 1, b gains 1 per byte.
    let adler = ((raw_bytes % 65521) << 16) | 1;
    zlib.extend_from_slice(&u32::try_from(adler).expect("16-bit halves").to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    push_chunk(&mut png, b"IHDR", &header);
    push_chunk(&mut png, b"IDAT", &zlib);
    push_chunk(&mut png, b"IEND", &[]);
    png
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).expect("chunk fits").to_be_bytes());
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    png.extend_from_slice(&covered);
    png.extend_from_slice(&crc32fast::hash(&covered).to_be_bytes());
}

/// Deflate's bit order: values least significant bit first, Huffman codes most
/// significant bit first.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    pending: u64,
    pending_bits: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: u32) {
        self.pending |= u64::from(value) << self.pending_bits;
        self.pending_bits += count;
        while self.pending_bits >= 8 {
            self.out.push(self.pending as u8);
            self.pending >>= 8;
            self.pending_bits -= 8;
        }
    }

    fn huffman(&mut self, code: u32, length: u32) {
        let reversed = (0..length).fold(0, |reversed, bit| (reversed << 1) | ((code >> bit) & 1));
        self.put(reversed, length);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.pending_bits > 0 {
            self.out.push(self.pending as u8);
        }
        self.out
    }
}
