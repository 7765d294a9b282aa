//! Fuzzes the peer frame decoder with arbitrary bytes from a sibling: decoding never
//! panics or allocates past the frame, and every frame it accepts re-encodes to exactly
//! the same bytes (the format is canonical) and decodes to the same message.
#![no_main]

use edgenode::core::replication::wire::{decode, encode};
use edgenode::core::replication::ReplicaConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The limit a real node uses, and a small one so the oversize path is hit too.
    for frame_bytes_max in [ReplicaConfig::default().frame_bytes_max, 64] {
        // Read the buffer as the peer reader does: frame after frame until one is
        // refused or more bytes are needed.
        let mut rest = bytes;
        while let Ok(Some((message, used))) = decode(rest, frame_bytes_max) {
            assert!(used > 0 && used <= rest.len(), "decode used {used} of {} bytes", rest.len());
            let frame = &rest[..used];
            assert_eq!(message.frame_bytes(), used, "frame_bytes disagrees with the decoded frame: {message:?}");
            let encoded = encode(&message, frame_bytes_max).expect("a decoded message fits the limit it came in");
            assert_eq!(encoded, frame, "re-encoding a decoded frame changed its bytes: {message:?}");
            let again = decode(&encoded, frame_bytes_max).expect("a re-encoded frame decodes");
            assert_eq!(again, Some((message, used)), "round trip changed the message");
            rest = &rest[used..];
        }
    }
});
