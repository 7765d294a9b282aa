//! systemd service notifications (`sd_notify`): readiness, stopping and watchdog pings,
//! sent as datagrams to `$NOTIFY_SOCKET`. A no-op when not run by systemd.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`, `WATCHDOG=1`) to systemd. Failures are
/// logged, never fatal: the service works the same without a supervisor.
pub fn notify(state: &str) {
    let Some(socket_path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(error) = notify_socket(&socket_path, state) {
        tracing::warn!(%error, socket = ?socket_path, state, "cannot notify systemd");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is on
/// and meant for this process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: &str, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    let usec = usec.trim().parse::<u64>().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Sends one datagram to a notify socket: a path, or an abstract name written `@name`.
fn notify_socket(socket_path: &OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = socket_path.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        Some(_) => {
            socket.send_to(state.as_bytes(), socket_path)?;
        }
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is empty")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_path_socket() {
        let dir = crate::test_support::TempDir::new("systemd");
        let socket_path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&socket_path).unwrap();
        notify_socket(socket_path.as_os_str(), "READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let n_bytes = systemd.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n_bytes], b"READY=1");
    }

    #[test]
    fn notify_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("edgenode-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&address).unwrap();
        notify_socket(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buffer = [0u8; 64];
        let n_bytes = systemd.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n_bytes], b"STOPPING=1");
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_us() {
        assert_eq!(watchdog_interval_from("30000000", None, 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval_from("30000000", Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval_from("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_from("0", None, 7), None);
        assert_eq!(watchdog_interval_from("soon", None, 7), None);
    }
}
