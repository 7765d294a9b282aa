//! Fuzzes the peer frame decoder with arbitrary bytes from a sibling: decoding never
//! panics or allocates past the frame, and every frame of the current version it
//! accepts re-encodes to exactly the same bytes (the format is canonical) and decodes
//! to the same message (a frame of the previous version re-encodes as the current one).
#![no_main]

use edgenode::core::replication::wire::{decode, encode, PROTOCOL_VERSION};
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
            let Ok(encoded) = encode(&message, frame_bytes_max) else {
                // A previous-version frame may grow past the limit as the current one.
                assert_ne!(frame[4], PROTOCOL_VERSION, "a decoded message fits the limit it came in");
                rest = &rest[used..];
                continue;
            };
            if frame[4] == PROTOCOL_VERSION {
                assert_eq!(message.frame_bytes(), used, "frame_bytes disagrees with the decoded frame: {message:?}");
                assert_eq!(encoded, frame, "re-encoding a decoded frame changed its bytes: {message:?}");
            }
            let again = decode(&encoded, frame_bytes_max).expect("a re-encoded frame decodes");
            assert_eq!(again, Some((message, encoded.len())), "round trip changed the message");
            rest = &rest[used..];
        }
    }
});
