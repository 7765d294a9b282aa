//! The process's own figures under their standard names (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, …, as every Prometheus client
//! writes them, so stock dashboards work), read from `/proc/self` at each scrape. A
//! figure that cannot be read (no procfs) is left out, never written as zero.

use std::fmt;

use nix::unistd::{sysconf, SysconfVar};

use crate::exposition::{self, Collector, Encoder};

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: Encoder) -> fmt::Result {
        let ticks_per_second = sysconf_value(SysconfVar::CLK_TCK);
        let page_bytes = sysconf_value(SysconfVar::PAGE_SIZE);
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(ProcStat::parse) {
            if let Some(ticks_per_second) = ticks_per_second {
                let cpu_seconds = (stat.user_ticks + stat.system_ticks) as f64 / ticks_per_second as f64;
                exposition::counter(
                    &mut encoder,
                    "process_cpu_seconds",
                    "User and system CPU time spent, in seconds",
                    cpu_seconds,
                )?;
                if let Some(boot_seconds) = boot_time_seconds() {
                    let start_seconds = boot_seconds as f64 + stat.start_ticks as f64 / ticks_per_second as f64;
                    exposition::gauge(
                        &mut encoder,
                        "process_start_time_seconds",
                        "Start time of the process since the Unix epoch, in seconds",
                        start_seconds,
                    )?;
                }
            }
            if let Some(page_bytes) = page_bytes {
                exposition::gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    stat.resident_pages * page_bytes,
                )?;
            }
            exposition::gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.virtual_bytes,
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            exposition::gauge(&mut encoder, "process_open_fds", "Open file descriptors", entries.count() as u64)?;
        }
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        if let Some(max_fds) = limits.as_deref().and_then(open_files_limit) {
            exposition::gauge(&mut encoder, "process_max_fds", "Limit on open file descriptors", max_fds)?;
        }
        Ok(())
    }
}

fn sysconf_value(variable: SysconfVar) -> Option<u64> {
    sysconf(variable).ok().flatten().and_then(|value| u64::try_from(value).ok()).filter(|value| *value > 0)
}

/// What the scrape needs of `/proc/self/stat` (proc(5)).
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    user_ticks: u64,
    system_ticks: u64,
    /// Since boot.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

impl ProcStat {
    fn parse(text: &str) -> Option<ProcStat> {
        // The command name (field 2) is in parentheses and may hold spaces and ')':
        // the fields after the last ')' start with field 3, `state`.
        let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
            resident_pages: field(24)?,
        })
    }
}

/// The `btime` line of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time_seconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files from `/proc/self/limits`; `None` when unlimited.
fn open_files_limit(limits: &str) -> Option<u64> {
    limits.lines().find_map(|line| line.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (edge (node) x) S 1 4242 4242 0 -1 4194560 2197 0 0 0 120 35 0 0 20 0 9 0 \
                    81234 1046528000 5120 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                user_ticks: 120,
                system_ticks: 35,
                start_ticks: 81234,
                virtual_bytes: 1046528000,
                resident_pages: 5120
            })
        );
        assert_eq!(ProcStat::parse("4242 (cut short) S 1"), None);
    }

    #[test]
    fn the_open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63422                63422                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(open_files_limit("Max open files            unlimited            unlimited            files"), None);
    }

    #[test]
    fn this_process_reports_itself() {
        // Some CPU time to count (a clock tick is 10 ms): spin until one is counted.
        let spin = std::time::Instant::now();
        let cpu_ticks = || {
            let stat = ProcStat::parse(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
            stat.user_ticks + stat.system_ticks
        };
        let mut spun = 0u64;
        while cpu_ticks() == 0 {
            assert!(spin.elapsed() < std::time::Duration::from_secs(10), "no CPU time counted in 10 s");
            for _ in 0..100_000 {
                spun = std::hint::black_box(spun.wrapping_add(1));
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0, "{text}");
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(value("process_cpu_seconds_total") > 0.0, "{text}");
        // Started after 2020 and not in the future by more than a day.
        let start = value("process_start_time_seconds");
        assert!(start > 1.6e9 && start < crate::os::now_ms() as f64 / 1000.0 + 86_400.0, "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
    }
}
