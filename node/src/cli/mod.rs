//! The `edgenode` commands other than `serve` (which is `edgenode::node::serve`):
//! each runs once, talks to the node on this data dir or to the network, and prints
//! what a person reads (aligned tables) or, with `--json`, what a script reads. Also
//! what every command of the binary shares: its logging (journald under systemd, text
//! on stderr otherwise) and its exit codes.

pub mod backup;
pub mod config_check;
pub mod control;
pub mod discover;
pub mod invite;
pub mod peer;
pub mod restore;
pub mod status;
pub mod update;
pub mod upload;
pub mod user;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The appliance's config file (`ExecStart` of systemd/system/edgenode.service): what
/// `status` reads when it is given neither `--config` nor `--data-dir`.
pub const APPLIANCE_CONFIG_PATH: &str = "/etc/edgenode/node.toml";

/// The appliance's config file, when this machine has one.
pub fn appliance_config() -> Option<PathBuf> {
    let path = Path::new(APPLIANCE_CONFIG_PATH);
    path.exists().then(|| path.to_owned())
}

/// Exit code of a command whose answer is "no": the node is not serving, the file is
/// not valid.
pub const EXIT_NO: u8 = 1;
/// Exit code of a command that could not find out: a file or directory it needs is
/// missing or unreadable. (clap exits 2 on a usage error too: that is also "could not
/// find out".)
pub const EXIT_CANNOT_TELL: u8 = 2;

/// A command that ran but ends the process with `code`, after saying why on stderr
/// (nothing more when `message` is empty: the command printed its answer already).
#[derive(Debug)]
pub struct Exit {
    code: u8,
    message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Exit {
        Exit { code, message: message.into() }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "exit {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Exit {}

/// The process's exit code for what a command returned: 0 for success, an [`Exit`]'s
/// own code, and 1 for any other error, printed on stderr; under journald it is logged
/// at error level instead, so `journalctl -p err` shows why a service stopped (a line
/// printed on stderr would reach the journal as info).
pub fn exit_code(done: anyhow::Result<()>, logging: &Logging) -> std::process::ExitCode {
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<Exit>() {
            Some(exit) => {
                if !exit.message.is_empty() {
                    eprintln!("Error: {}", exit.message);
                }
                std::process::ExitCode::from(exit.code)
            }
            None => {
                if logging.to_journal {
                    tracing::error!("{error:#}");
                } else {
                    // The chain of causes on one line, never a backtrace.
                    eprintln!("Error: {error:#}");
                }
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// A progress bar of bytes on stderr with rate and ETA, `message` beside it; `None`
/// when stderr is not a terminal (scripts and logs get the summary only).
pub fn bytes_progress_bar(total_bytes: u64, message: String) -> Option<indicatif::ProgressBar> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let style =
            ProgressStyle::with_template("{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr()).with_style(style);
        bar.set_message(message);
        bar
    })
}

/// Dependencies that log every packet at debug level: kept at `warn` unless the
/// operator's `log_level` names them (e.g. `"debug,quinn=debug"`).
const QUIET_TARGETS: [&str; 2] = ["quinn", "h3"];

/// `unix_seconds` in UTC as `YYYY-MM-DD{separator}HH:MM:SSZ` (`'T'` for RFC 3339, `' '`
/// for people); `None` outside the years `time` can represent.
pub fn utc_timestamp(unix_seconds: i64, separator: char) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    ))
}

/// The process's logging: under systemd, to journald with a priority per line;
/// otherwise text on stderr. The filter is `RUST_LOG` when set, else `info` until
/// `serve` has read the config's `log_level` ([`Logging::apply_log_level`]).
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set (and valid): it wins over the config's `log_level`.
    filter_from_environment: bool,
    /// Lines go to journald natively (with priorities), not as text on stderr.
    to_journal: bool,
}

impl Logging {
    /// Installs the process's subscriber; call once, first thing.
    pub fn init() -> Logging {
        let rust_log = std::env::var("RUST_LOG").ok().filter(|value| !value.trim().is_empty());
        let from_environment = rust_log.as_deref().map(|value| EnvFilter::builder().parse(value));
        let (filter, filter_from_environment, rust_log_problem) = match from_environment {
            Some(Ok(filter)) => (filter, true, None),
            Some(Err(error)) => (default_filter(), false, Some(error)),
            None => (default_filter(), false, None),
        };
        let (filter, filter_handle) = reload::Layer::new(filter);

        let journal_stream = std::env::var("JOURNAL_STREAM").ok();
        let mut journal_problem = None;
        let journal = if stderr_is_journal(journal_stream.as_deref(), stderr_device_and_inode()) {
            match tracing_journald::layer() {
                Ok(layer) => Some(layer.with_priority_mappings(journal_priorities())),
                Err(error) => {
                    journal_problem = Some(error);
                    None
                }
            }
        } else {
            None
        };
        let to_journal = journal.is_some();
        let stderr_text = journal.is_none().then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        });
        tracing_subscriber::registry().with(filter).with(journal).with(stderr_text).init();

        if let Some(error) = rust_log_problem {
            tracing::warn!(%error, "RUST_LOG is not a valid filter; ignoring it");
        }
        if let Some(error) = journal_problem {
            tracing::warn!(%error, "stderr goes to the journal but journald's socket cannot be used; logging text to stderr (every line at priority info)");
        }
        Logging { filter: filter_handle, filter_from_environment, to_journal }
    }

    /// Filters by the config's `log_level` from now on (checked by
    /// `Config::validate`), unless `RUST_LOG` is set.
    pub fn apply_log_level(&self, log_level: &str) -> anyhow::Result<()> {
        if self.filter_from_environment {
            tracing::debug!(log_level, "RUST_LOG is set: it wins over the config's log_level");
            return Ok(());
        }
        let directives = filter_directives(log_level);
        let filter = EnvFilter::builder()
            .parse(&directives)
            .with_context(|| format!("`log_level` = {log_level:?} is not a valid filter"))?;
        self.filter.reload(filter).context("cannot change the log filter")?;
        Ok(())
    }
}

fn default_filter() -> EnvFilter {
    EnvFilter::builder().parse(filter_directives("info")).expect("the default filter parses")
}

/// The filter directives for a `log_level`: the level as given, plus `QUIET_TARGETS`
/// at `warn` when the default level is more verbose than that and the level does not
/// name them itself.
fn filter_directives(log_level: &str) -> String {
    let directives: Vec<&str> = log_level.split(',').map(str::trim).filter(|directive| !directive.is_empty()).collect();
    let target_of = |directive: &str| directive.split(['=', '[']).next().unwrap_or_default().trim().to_owned();
    let default_level = directives
        .iter()
        .filter(|directive| !directive.contains(['=', '[']))
        .filter_map(|directive| directive.parse::<LevelFilter>().ok())
        .next_back();
    let mut filter = directives.join(",");
    if default_level.is_some_and(|level| level > LevelFilter::WARN) {
        for target in QUIET_TARGETS {
            if !directives.iter().any(|directive| directive.contains(['=', '[']) && target_of(directive) == target) {
                filter.push_str(&format!(",{target}=warn"));
            }
        }
    }
    filter
}

/// journald priorities for tracing's levels: `journalctl -p err` shows errors,
/// `-p warning` warnings and errors. (tracing-journald's own default puts info at
/// "notice" and debug at "info", one step louder than they are.)
pub fn journal_priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to
/// `<device>:<inode>` (decimal) of the stream it connected, and a process whose
/// stderr is that stream may talk to journald natively (systemd.exec(5)). A child
/// whose stderr was redirected elsewhere (a person's shell, a test harness) inherits
/// the variable but not the match.
fn stderr_is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let Some((device, inode)) = journal_stream.and_then(|value| value.trim().split_once(':')) else {
        return false;
    };
    match (device.parse::<u64>(), inode.parse::<u64>(), stderr) {
        (Ok(device), Ok(inode), Some(stderr)) => (device, inode) == stderr,
        _ => false,
    }
}

/// Device and inode of what fd 2 is connected to.
fn stderr_device_and_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let stderr = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned().ok()?);
    let metadata = stderr.metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_the_journal_only_when_journal_stream_names_it() {
        let stderr = Some((64769, 1_234_567));
        assert!(stderr_is_journal(Some("64769:1234567"), stderr));
        assert!(stderr_is_journal(Some("64769:1234567\n"), stderr));
        assert!(!stderr_is_journal(None, stderr), "not under systemd");
        assert!(!stderr_is_journal(Some("64769:7654321"), stderr), "stderr redirected by a child of the service");
        assert!(!stderr_is_journal(Some("1:1234567"), stderr));
        assert!(!stderr_is_journal(Some("64769:1234567"), None), "stderr closed");
        for malformed in ["", "64769", "64769:", ":1234567", "x:y", "64769:1234567:1", "-1:1234567"] {
            assert!(!stderr_is_journal(Some(malformed), stderr), "{malformed:?}");
        }
    }

    #[test]
    fn the_stderr_of_a_test_is_not_the_journal_of_a_made_up_stream() {
        let (device, inode) = stderr_device_and_inode().expect("tests run with a stderr");
        assert!(stderr_is_journal(Some(&format!("{device}:{inode}")), stderr_device_and_inode()));
        assert!(!stderr_is_journal(Some(&format!("{device}:{}", inode + 1)), stderr_device_and_inode()));
    }

    #[test]
    fn levels_map_to_the_journal_priorities_of_the_same_name() {
        let priorities = journal_priorities();
        // The byte journald receives as PRIORITY=, syslog's numbering.
        assert_eq!(priorities.error as u8, b'3', "err");
        assert_eq!(priorities.warn as u8, b'4', "warning");
        assert_eq!(priorities.info as u8, b'6', "info");
        assert_eq!(priorities.debug as u8, b'7', "debug");
        assert_eq!(priorities.trace as u8, b'7', "debug: journald has nothing lower");
    }

    #[test]
    fn noisy_dependencies_stay_at_warn_unless_named_or_the_level_is_quieter() {
        assert_eq!(filter_directives("info"), "info,quinn=warn,h3=warn");
        assert_eq!(filter_directives(" debug "), "debug,quinn=warn,h3=warn");
        assert_eq!(filter_directives("debug,quinn=debug"), "debug,quinn=debug,h3=warn");
        assert_eq!(filter_directives("info,quinn_proto=debug"), "info,quinn_proto=debug,quinn=warn,h3=warn");
        assert_eq!(filter_directives("warn"), "warn");
        assert_eq!(filter_directives("error"), "error", "quinn is not made louder than the rest");
        assert_eq!(filter_directives("off"), "off");
        assert_eq!(filter_directives("edgenode=debug"), "edgenode=debug", "no default level: others are off");
        assert_eq!(filter_directives("edgenode=debug,info"), "edgenode=debug,info,quinn=warn,h3=warn");
        for log_level in ["info", "debug,quinn=debug", "edgenode::link=trace,warn"] {
            EnvFilter::builder().parse(filter_directives(log_level)).expect("parses");
        }
    }
}
