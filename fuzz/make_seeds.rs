//! Writes the committed seed inputs in `fuzz/seeds/<target>/`: one encoded frame of
//! every peer message, valid JSON bodies for each JSON route, and tiny JPEG (with EXIF
//! orientation and GPS), PNG and WebP images. Run it again when a format changes:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds` (from the repo root).

use std::path::{Path, PathBuf};

use edgenode::core::replication::wire::{self, Message};
use edgenode::core::replication::ReplicaConfig;
use edgenode::media::testimage;

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    peer_frames(&seeds.join("peer_frame"));
    api_bodies(&seeds.join("api_json"));
    images(&seeds.join("image_front_door"));
    println!("seeds written under {}", seeds.display());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed dir can be created");
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}

fn peer_frames(dir: &Path) {
    let names = ["hello", "log_batch", "log_ack", "repair", "items", "want"];
    let messages: Vec<(&str, Message)> = names.into_iter().zip(wire::example_messages()).collect();
    let frame_bytes_max = ReplicaConfig::default().frame_bytes_max;
    let mut stream = Vec::new();
    for (name, message) in &messages {
        let frame = wire::encode(message, frame_bytes_max).expect("seed messages fit a frame");
        write(dir, name, &frame);
        stream.extend_from_slice(&frame);
    }
    // Several frames back to back, as a session's stream carries them.
    write(dir, "stream", &stream);
}

fn api_bodies(dir: &Path) {
    // `[route][auth][body]`; see `fuzz_targets/api_json.rs` for the selectors.
    let bodies: [(&str, u8, u8, &str); 9] = [
        ("account_open", 0, 0, r#"{"handle":"newcomer","password":"long enough password"}"#),
        ("account_invite", 0, 0, r#"{"handle":"invited","password":"long enough password","invite":"abc"}"#),
        ("account_claim", 0, 0, r#"{"handle":"claimer","password":"long enough password","claim":"wrong"}"#),
        ("session", 1, 0, r#"{"handle":"fuzzadmin","password":"correct horse battery"}"#),
        ("post", 2, 1, r##"{"caption":"sunset at the #harbour","media":[],"visibility":"followers"}"##),
        ("post_media", 2, 1, r#"{"caption":"","media":["00"],"visibility":"public"}"#),
        ("comment", 3, 1, r#"{"text":"lovely"}"#),
        ("comment_missing_post", 4, 1, r#"{"text":"where did it go"}"#),
        ("join", 5, 2, r#"{"address":"192.0.2.1:8444","code":"ABCD-EFGH"}"#),
    ];
    for (name, route, auth, body) in bodies {
        let mut input = vec![route, auth];
        input.extend_from_slice(body.as_bytes());
        write(dir, name, &input);
    }
}

fn images(dir: &Path) {
    let colour = |x: u32, y: u32| [(x * 16) as u8, (y * 16) as u8, 128];
    // Orientation 6 (rotate 90) and a GPS IFD, so orientation and scrubbing run.
    write(dir, "exif_gps.jpg", &testimage::jpeg_with_exif(16, 8, 6, true, colour));
    let big_endian = testimage::tiff_exif(testimage::ByteOrder::Big, 3, true);
    let plain = testimage::jpeg_with_exif(8, 8, 1, false, colour);
    write(dir, "exif_big_endian.jpg", &testimage::insert_exif_app1(&plain, &big_endian));

    let image = image::RgbaImage::from_fn(16, 8, |x, y| {
        let [r, g, b] = colour(x, y);
        image::Rgba([r, g, b, 200])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image_rgba(&image).expect("a 16x8 PNG encodes");
    write(dir, "rgba.png", &png);
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp).write_image_rgba(&image).expect("a 16x8 WebP encodes");
    write(dir, "lossless.webp", &webp);
}

trait WriteRgba {
    fn write_image_rgba(self, image: &image::RgbaImage) -> image::ImageResult<()>;
}

impl<E: image::ImageEncoder> WriteRgba for E {
    fn write_image_rgba(self, image: &image::RgbaImage) -> image::ImageResult<()> {
        self.write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgba8)
    }
}
