//! The only module that reads the wall clock or the OS random number generator;
//! everything else gets time and randomness passed in. Also what the system says
//! about the release it runs, and the kernel's socket buffers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the Unix epoch (certificate dates).
pub fn unix_seconds() -> i64 {
    (now_ms() / 1000) as i64
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes
}

/// The wall clock as a file time (for marking a cached file as recently used).
pub fn now_system_time() -> SystemTime {
    SystemTime::now()
}

/// Where an appliance image says which release it is (`image-builder build --version`).
pub const RELEASE_VERSION_FILE: &str = "/usr/lib/edgenode/version";

/// The release this box runs: the system image's version when the node runs from one
/// (an update bundle carries a whole root file system, so the image, not the binary,
/// is what an update changes), otherwise the binary's own version. Read once.
pub fn release_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        std::fs::read_to_string(RELEASE_VERSION_FILE)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|version| !version.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
    })
}

/// Asks the kernel for UDP socket buffers of `bytes` each way. A QUIC endpoint's default
/// receive buffer (208 KiB) overflows while the node is busy: many clients' datagrams,
/// or a sibling's burst, arrive faster than one core reads them, the kernel drops them,
/// and QUIC takes the drops for congestion (retransmits, backs off). The kernel caps the
/// size at `net.core.rmem_max` / `wmem_max`, which the appliance raises
/// (systemd/sysctl.d). Returns what the kernel granted (receive, send), which Linux
/// reports doubled for its own bookkeeping.
pub fn enlarge_udp_buffers(socket: &std::net::UdpSocket, bytes: usize) -> std::io::Result<(usize, usize)> {
    let state = quinn::udp::UdpSocketState::new(socket.into())?;
    state.set_recv_buffer_size(socket.into(), bytes)?;
    state.set_send_buffer_size(socket.into(), bytes)?;
    Ok((state.recv_buffer_size(socket.into())?, state.send_buffer_size(socket.into())?))
}
