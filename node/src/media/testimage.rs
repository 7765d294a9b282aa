//! Test images with EXIF, for this crate's tests, the black-box tests and the benchmark.
//!
//! Not behind `cfg(test)` on purpose: other crates and `examples/media_bench.rs` build
//! photos with camera-like metadata through it. It only writes, so it costs nothing at
//! run time.

use image::RgbImage;

/// `Make` written into IFD0, so tests can check that tags other than GPS survive.
pub const TEST_CAMERA_MAKE: &str = "Edgenode test camera";
/// GPSLatitude written by [`tiff_exif`]: 51° 30' 26.67" N.
pub const TEST_LATITUDE_RATIONALS: [(u32, u32); 3] = [(51, 1), (30, 1), (2667, 100)];
/// GPSLongitude written by [`tiff_exif`]: 0° 7' 36.00" W.
pub const TEST_LONGITUDE_RATIONALS: [(u32, u32); 3] = [(0, 1), (7, 1), (3600, 100)];

/// Byte order of a TIFF structure: "II" (Intel, little) or "MM" (Motorola, big).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// A baseline JPEG (quality 92) of `width`×`height` with `pixels(x, y)` as its colours and an
/// EXIF APP1 right after SOI holding Make, Orientation and, when `gps` is set, a GPS IFD
/// (GPSVersionID, GPSLatitudeRef 'N', GPSLatitude, GPSLongitudeRef 'W', GPSLongitude).
///
/// # Panics
/// When `width` or `height` is 0 or above 65535 (JPEG's limit): test input only.
pub fn jpeg_with_exif(
    width: u32,
    height: u32,
    orientation: u16,
    gps: bool,
    pixels: impl Fn(u32, u32) -> [u8; 3],
) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| image::Rgb(pixels(x, y)));
    let jpeg =
        edgenode_pixels::encode_jpeg_rgb8(image.as_raw(), width, height, 92).expect("test image dimensions fit JPEG");
    insert_exif_app1(&jpeg, &tiff_exif(ByteOrder::Little, orientation, gps))
}

/// `jpeg` with an APP1 "Exif\0\0" segment holding `tiff` inserted right after SOI.
///
/// # Panics
/// When `jpeg` does not start with SOI or `tiff` does not fit in one segment.
pub fn insert_exif_app1(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    let length = u16::try_from(2 + 6 + tiff.len()).expect("EXIF fits in one APP1 segment");
    let mut out = Vec::with_capacity(jpeg.len() + usize::from(length) + 2);
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A TIFF structure as found in EXIF: IFD0 with Make (out of line), Orientation and, when
/// `gps` is set, a GPSInfo pointer to a GPS IFD whose rationals are stored out of line.
pub fn tiff_exif(order: ByteOrder, orientation: u16, gps: bool) -> Vec<u8> {
    let mut tiff = Tiff { order, bytes: Vec::new() };
    match order {
        ByteOrder::Little => tiff.bytes.extend_from_slice(b"II*\0"),
        ByteOrder::Big => tiff.bytes.extend_from_slice(b"MM\0*"),
    }
    tiff.u32(8);

    let make = format!("{TEST_CAMERA_MAKE}\0");
    let ifd0_entries: u32 = if gps { 3 } else { 2 };
    let make_at = 8 + 2 + 12 * ifd0_entries + 4;
    let gps_ifd_at = make_at + even(make.len() as u32);
    let gps_entries = 5;
    let latitude_at = gps_ifd_at + 2 + 12 * gps_entries + 4;
    let longitude_at = latitude_at + 24;

    // IFD0; entries sorted by tag, as TIFF requires.
    tiff.u16(ifd0_entries as u16);
    tiff.entry(0x010F, 2, make.len() as u32, make_at);
    tiff.entry_short(0x0112, orientation);
    if gps {
        tiff.entry(0x8825, 4, 1, gps_ifd_at);
    }
    tiff.u32(0); // no IFD1
    tiff.bytes.extend_from_slice(make.as_bytes());
    tiff.pad_even();

    if gps {
        tiff.u16(gps_entries as u16);
        tiff.entry_inline(0x0000, 1, 4, [2, 3, 0, 0]); // GPSVersionID 2.3.0.0
        tiff.entry_inline(0x0001, 2, 2, *b"N\0\0\0"); // GPSLatitudeRef
        tiff.entry(0x0002, 5, 3, latitude_at);
        tiff.entry_inline(0x0003, 2, 2, *b"W\0\0\0"); // GPSLongitudeRef
        tiff.entry(0x0004, 5, 3, longitude_at);
        tiff.u32(0);
        for (numerator, denominator) in TEST_LATITUDE_RATIONALS.into_iter().chain(TEST_LONGITUDE_RATIONALS) {
            tiff.u32(numerator);
            tiff.u32(denominator);
        }
    }
    tiff.bytes
}

fn even(length: u32) -> u32 {
    length + (length & 1)
}

struct Tiff {
    order: ByteOrder,
    bytes: Vec<u8>,
}

impl Tiff {
    fn u16(&mut self, value: u16) {
        let encoded = match self.order {
            ByteOrder::Little => value.to_le_bytes(),
            ByteOrder::Big => value.to_be_bytes(),
        };
        self.bytes.extend_from_slice(&encoded);
    }

    fn u32(&mut self, value: u32) {
        let encoded = match self.order {
            ByteOrder::Little => value.to_le_bytes(),
            ByteOrder::Big => value.to_be_bytes(),
        };
        self.bytes.extend_from_slice(&encoded);
    }

    /// An entry whose value lives at `offset` (or is the LONG `offset` itself).
    fn entry(&mut self, tag: u16, field_type: u16, count: u32, offset: u32) {
        self.u16(tag);
        self.u16(field_type);
        self.u32(count);
        self.u32(offset);
    }

    /// An entry with up to four bytes of value stored in the entry, in file order.
    fn entry_inline(&mut self, tag: u16, field_type: u16, count: u32, value: [u8; 4]) {
        self.u16(tag);
        self.u16(field_type);
        self.u32(count);
        self.bytes.extend_from_slice(&value);
    }

    /// A single SHORT, left-justified in the value field.
    fn entry_short(&mut self, tag: u16, value: u16) {
        self.u16(tag);
        self.u16(3);
        self.u32(1);
        self.u16(value);
        self.u16(0);
    }

    fn pad_even(&mut self) {
        if self.bytes.len() % 2 == 1 {
            self.bytes.push(0);
        }
    }
}
