//! Colour, with LittleCMS as the oracle: a photo with an embedded ICC profile comes back as
//! `display` and `thumb` derivatives converted to sRGB (they carry no profile, and an
//! untagged image is sRGB to every browser), so a Display P3 photo, as every recent iPhone
//! takes, keeps its colours instead of looking washed out. Untagged and sRGB-tagged photos
//! come back with the colours they had.
//!
//! Python Pillow writes the photos: patches of Display P3 colours, as a JPEG and a PNG
//! tagged with a Display P3 profile the test builds itself (Pillow has none built in:
//! a v4 matrix/TRC profile from the published primaries, D65 white and sRGB's curve), and
//! the same pixels untagged and tagged sRGB. Pillow's ImageCms (LittleCMS) converts the
//! P3 pixels to sRGB for reference; the node's derivatives must match it within
//! [`TOLERANCE`], and the P3 pixels left as they were must not, or this test could not fail.
//!
//! Needs Python 3 with Pillow and its LittleCMS module (Debian `python3-pil`); without them
//! the test fails and says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgenode_tests::checks::{expect_status, id_of};
use edgenode_tests::fixtures::{decode, mean_colour, sha256_hex};
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use image::ImageDecoder;

const INSTALL_PILLOW: &str = "this test needs Python 3 with Pillow and its LittleCMS module as its oracle: \
     install the Debian package python3-pil (apt-get install python3-pil), or set EDGENODE_TEST_PYTHON \
     to a python3 that has Pillow";

/// Display P3 colours: the primaries (outside sRGB: they clip to sRGB's own, so they come
/// back the same either way), a skin tone, grey, and saturated colours that sRGB shows
/// differently with the same numbers.
const PATCHES: [(&str, [u8; 3]); 9] = [
    ("P3 red", [255, 0, 0]),
    ("P3 green", [0, 255, 0]),
    ("P3 blue", [0, 0, 255]),
    ("skin", [224, 172, 140]),
    ("grey", [128, 128, 128]),
    ("orange", [240, 120, 30]),
    ("teal", [20, 160, 150]),
    ("violet", [120, 50, 190]),
    ("deep red", [190, 30, 40]),
];
/// Patches are squares of this side, in rows of [`COLUMNS`]: 192×192 in all, which fits
/// both derivatives, so neither is resized.
const PATCH_PIXELS: u32 = 64;
const COLUMNS: u32 = 3;
/// Largest difference allowed, per channel, between a patch's mean colour (its central
/// quarter) in a derivative and in LittleCMS's reference, in steps of 255. Each stage may
/// move a flat patch by about one step: the node's JPEG decoder against Pillow's (libjpeg)
/// for the JPEG source, moxcms's fixed-point arithmetic against LittleCMS's floating point,
/// and the derivative's own JPEG encoding (quality 80–82, which on a flat patch keeps the
/// mean within a step). Measured: see the test's output.
const TOLERANCE: f64 = 3.0;

/// One photo the node is given and what its derivatives must look like.
struct Case {
    file: &'static str,
    content_type: &'static str,
    /// The reference the derivatives must match: LittleCMS's sRGB conversion for a P3
    /// photo; for the others, the photo's own pixels.
    reference: &'static str,
    /// Whether the photo's own pixels, shown unconverted, must be off the reference.
    converted: bool,
}

const CASES: [Case; 4] = [
    Case { file: "p3.jpg", content_type: "image/jpeg", reference: "p3.jpg.reference.png", converted: true },
    Case { file: "p3.png", content_type: "image/png", reference: "p3.png.reference.png", converted: true },
    Case { file: "srgb.jpg", content_type: "image/jpeg", reference: "srgb.jpg", converted: false },
    Case { file: "untagged.jpg", content_type: "image/jpeg", reference: "untagged.jpg", converted: false },
];

#[test]
fn photos_with_a_colour_profile_come_back_in_srgb() {
    let python = python_with_pillow();
    let workdir = std::env::temp_dir().join(format!("edgenode-colour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).expect("creating the work dir");
    make_photos(&python, &workdir);

    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let mut failures = Vec::new();
    for case in &CASES {
        let bytes = read(&workdir.join(case.file));
        let reference = patch_means(&decode(&read(&workdir.join(case.reference))));
        let own = patch_means(&decode(&bytes));
        let unconverted = largest_difference(&own, &reference);
        eprintln!("{}: its own pixels are off the reference by {unconverted:.1} at most", case.file);
        if case.converted {
            assert!(
                unconverted > TOLERANCE,
                "{}: left unconverted it would pass ({unconverted:.1} <= {TOLERANCE}), so this test could not fail",
                case.file
            );
        }

        let what = format!("alice uploads {}", case.file);
        let path = format!("/api/v1/media/{}", sha256_hex(&bytes));
        let media = expect_status(&what, client.put_bytes(&path, Some(&alice.token), case.content_type, bytes), 201);
        for variant in ["display", "thumb"] {
            let response = client.fetch_media(Some(&alice), &id_of(&media), variant);
            assert_eq!(response.status, 200, "alice fetches the {variant} of {}: {}", case.file, response.body_text());
            assert_eq!(icc_profile(&response.body), None, "the {variant} of {} carries no profile", case.file);
            let got = patch_means(&decode(&response.body));
            let difference = largest_difference(&got, &reference);
            eprintln!("{} {variant}: off the reference by {difference:.1} at most", case.file);
            for ((name, _), (got, expected)) in PATCHES.iter().zip(got.iter().zip(&reference)) {
                eprintln!("  {name:>8}: got {}, reference {}", rounded(got), rounded(expected));
            }
            if difference > TOLERANCE {
                failures.push(format!("{} {variant}: {difference:.1} > {TOLERANCE}", case.file));
            }
        }
    }
    assert!(failures.is_empty(), "derivatives off LittleCMS's sRGB colours:\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&workdir);
}

/// The mean colour of each patch's central quarter, away from the edges JPEG blurs.
fn patch_means(image: &image::RgbImage) -> Vec<[f64; 3]> {
    (0..PATCHES.len() as u32)
        .map(|index| {
            let (left, top) = (index % COLUMNS * PATCH_PIXELS, index / COLUMNS * PATCH_PIXELS);
            let quarter = PATCH_PIXELS / 4;
            mean_colour(image, left + quarter..left + 3 * quarter, top + quarter..top + 3 * quarter)
        })
        .collect()
}

fn largest_difference(left: &[[f64; 3]], right: &[[f64; 3]]) -> f64 {
    left.iter().flatten().zip(right.iter().flatten()).map(|(left, right)| (left - right).abs()).fold(0.0, f64::max)
}

fn rounded(colour: &[f64; 3]) -> String {
    format!("({:5.1}, {:5.1}, {:5.1})", colour[0], colour[1], colour[2])
}

fn icc_profile(jpeg: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg))
        .unwrap_or_else(|error| panic!("the node sent a JPEG we cannot read: {error}"));
    decoder.icc_profile().expect("reading the JPEG's header")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The oracle

/// A python3 that has Pillow with LittleCMS.
fn python_with_pillow() -> PathBuf {
    edgenode_tests::fixtures::python_with(
        "from PIL import ImageCms, features; assert features.check('littlecms2'), 'no LittleCMS'",
        INSTALL_PILLOW,
    )
}

/// Writes p3.jpg, p3.png, srgb.jpg, untagged.jpg and LittleCMS's sRGB references of the
/// two P3 photos (of the JPEG as Pillow decodes it) into `dir`.
fn make_photos(python: &Path, dir: &Path) {
    let patches: Vec<String> = PATCHES.iter().map(|(_, [red, green, blue])| format!("{red},{green},{blue}")).collect();
    let output = Command::new(python)
        .args(["-c", MAKE_PHOTOS_PY])
        .arg(dir)
        .arg(patches.join(";"))
        .arg(PATCH_PIXELS.to_string())
        .arg(COLUMNS.to_string())
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}: {INSTALL_PILLOW}", python.display()));
    assert!(
        output.status.success(),
        "making the photos with Pillow failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&output.stdout));
}

/// Python: `MAKE_PHOTOS_PY DIR "r,g,b;r,g,b;…" PATCH_PIXELS COLUMNS`.
const MAKE_PHOTOS_PY: &str = r#"
import io, struct, sys
from PIL import Image, ImageCms

def s15_16(value):
    return struct.pack(">i", round(value * 65536))

def white_xyz(x, y):
    return [x / y, 1.0, (1 - x - y) / y]

def inverse(m):
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return [[(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
            [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
            [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det]]

def times(m, n):
    return [[sum(m[r][k] * n[k][c] for k in range(3)) for c in range(3)] for r in range(3)]

def apply(m, v):
    return [sum(m[r][k] * v[k] for k in range(3)) for r in range(3)]

def display_p3_profile():
    """ICC v4 display profile: Display P3 primaries (SMPTE EG 432-1), D65 white, the sRGB
    curve; colorants adapted to the D50 connection space with Bradford, as ICC v4 asks."""
    d65, d50 = white_xyz(0.3127, 0.3290), [0.9642, 1.0, 0.8249]
    primaries = [white_xyz(0.680, 0.320), white_xyz(0.265, 0.690), white_xyz(0.150, 0.060)]
    columns = [[primary[row] for primary in primaries] for row in range(3)]
    scale = apply(inverse(columns), d65)
    rgb_to_xyz = [[columns[row][c] * scale[c] for c in range(3)] for row in range(3)]
    bradford = [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
    cone_d65, cone_d50 = apply(bradford, d65), apply(bradford, d50)
    gain = [[cone_d50[r] / cone_d65[r] if r == c else 0.0 for c in range(3)] for r in range(3)]
    chad = times(inverse(bradford), times(gain, bradford))
    colorants = times(chad, rgb_to_xyz)

    def xyz(v):
        return b"XYZ \0\0\0\0" + b"".join(s15_16(x) for x in v)

    def text(value):
        utf16 = value.encode("utf-16-be")
        return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(utf16), 28) + utf16

    # Parametric curve type 3: sRGB's, with its linear segment.
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(
        s15_16(v) for v in [2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045])
    tags = [
        (b"desc", text("Display P3 (edgenode test)")),
        (b"cprt", text("No copyright, use freely")),
        (b"wtpt", xyz(d50)),
        (b"chad", b"sf32\0\0\0\0" + b"".join(s15_16(chad[r][c]) for r in range(3) for c in range(3))),
        (b"rXYZ", xyz([colorants[r][0] for r in range(3)])),
        (b"gXYZ", xyz([colorants[r][1] for r in range(3)])),
        (b"bXYZ", xyz([colorants[r][2] for r in range(3)])),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    data_at = 128 + 4 + 12 * len(tags)
    table, data, placed = b"", b"", {}
    for signature, body in tags:
        if body not in placed:  # the three curves share one
            placed[body] = data_at + len(data)
            data += body + b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", placed[body], len(body))
    header = struct.pack(">I4sI4s4s4s6H4s4sI4s4sQI", data_at + len(data), b"\0\0\0\0", 0x04300000, b"mntr",
                         b"RGB ", b"XYZ ", 2024, 1, 1, 0, 0, 0, b"acsp", b"\0\0\0\0", 0, b"\0\0\0\0",
                         b"\0\0\0\0", 0, 0)
    header += b"".join(s15_16(v) for v in d50) + b"\0" * (4 + 16 + 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data

out, patches, side, columns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
patches = [tuple(int(v) for v in patch.split(",")) for patch in patches.split(";")]
image = Image.new("RGB", (columns * side, -(-len(patches) // columns) * side), (255, 255, 255))
for index, colour in enumerate(patches):
    left, top = index % columns * side, index // columns * side
    image.paste(colour, (left, top, left + side, top + side))

p3_bytes = display_p3_profile()
p3 = ImageCms.ImageCmsProfile(io.BytesIO(p3_bytes))
srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
print(f"oracle: LittleCMS {ImageCms.core.littlecms_version}, profile {ImageCms.getProfileDescription(p3).strip()!r}"
      f" ({len(p3_bytes)} bytes)")

def p3_to_srgb(pixels):
    return ImageCms.profileToProfile(pixels, p3, srgb, renderingIntent=0, outputMode="RGB")  # 0: perceptual

jpeg = dict(format="JPEG", quality=95, subsampling=0)
image.save(f"{out}/p3.jpg", icc_profile=p3_bytes, **jpeg)
image.save(f"{out}/p3.png", format="PNG", icc_profile=p3_bytes)
image.save(f"{out}/srgb.jpg", icc_profile=srgb.tobytes(), **jpeg)
image.save(f"{out}/untagged.jpg", **jpeg)
with Image.open(f"{out}/p3.jpg") as written:
    assert written.info.get("icc_profile") == p3_bytes, "the profile is in the JPEG"
    p3_to_srgb(written.convert("RGB")).save(f"{out}/p3.jpg.reference.png")
p3_to_srgb(image).save(f"{out}/p3.png.reference.png")
"#;
