//! Fuzzes the image front door an upload goes through: sniffing, the header's declared
//! size and pixel limit, the completeness check and the limited decode
//! (`Pipeline::process`), with small limits so each input is quick; and the EXIF/XMP
//! readers and GPS scrubber on the raw bytes. Nothing may panic; the scrubber never makes
//! the file longer (it drops trailers and unreadable chunks) and leaves no GPS behind.
#![no_main]

use std::sync::OnceLock;

use edgenode::media::{exif_gps_present, exif_orientation, sniff, strip_gps, MediaLimits, Pipeline};
use libfuzzer_sys::fuzz_target;

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        Pipeline::new(MediaLimits {
            upload_bytes_max: 1024 * 1024,
            // 128 × 128: big enough for the seeds, small enough that a decode is quick.
            pixels_max: 128 * 128,
            workers: 1,
            decoded_bytes_in_flight_max: 4 * 1024 * 1024,
        })
    })
}

fuzz_target!(|bytes: &[u8]| {
    let kind = sniff(bytes);
    // Any error is a fine answer to garbage; what it accepts must be sound.
    if let Ok(processed) = pipeline().process(bytes) {
        assert_eq!(Some(processed.kind), kind, "process accepted a different kind than sniff");
        assert!(processed.original.len() <= bytes.len(), "the stored original grew");
        assert!(processed.width > 0 && processed.height > 0);
        assert!(processed.thumb.width <= 256 && processed.thumb.height <= 256);
        assert!(!exif_gps_present(&processed.original), "the stored original still has GPS");
    }
    let _ = exif_orientation(bytes);
    let mut scrubbed = bytes.to_vec();
    strip_gps(&mut scrubbed);
    assert!(scrubbed.len() <= bytes.len(), "strip_gps made the file longer");
    assert_eq!(sniff(&scrubbed), kind, "strip_gps changed the file type");
    assert!(!exif_gps_present(&scrubbed), "strip_gps left GPS in the file");
});
