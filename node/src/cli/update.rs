//! `edgenode update status|check|install FILE|URL`: updates of this box. `status`
//! shows the running version, the slots RAUC reports, the last check and the last
//! install (a failed boot included), from the node, or from `update-state.json` and
//! `rauc status` when the node does not answer; `check` makes the node ask its update
//! server now; `install` has the node install one bundle (RAUC writes the inactive slot;
//! the box boots it at the next reboot, by itself inside the maintenance window).

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use edgenode::config::Config;
use edgenode::services::update::{self as updater, UpdateState};

use super::control::LocalNode;
use super::Exit;

/// `update --help`, and README's procedures.
pub const HELP_AFTER: &str = "\
Without --config or --data-dir, reads /etc/edgenode/node.toml when it exists (the appliance's config).

Exit status:
  status   0 shown; 1 the last install failed or did not boot (rolled back); 2 cannot tell
  check    0 checked (the outcome says what happens next); 1 the check failed; 2 no node
           answered; 3 updates are not set up here (no [update] url, or no rauc)
  install  0 installed (it boots at the next reboot); 1 refused or failed, nothing written;
           2 no node answered; 3 updates are not available on this system (no rauc)";

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_NODE_UNREACHABLE: u8 = 2;
pub const EXIT_NOT_SET_UP: u8 = 3;

/// `status` waits this long for the node before reading the files itself.
const STATUS_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A check fetches a manifest (the node gives up after 90 s).
const CHECK_ANSWER_TIMEOUT: Duration = Duration::from_secs(100);
/// An install downloads a bundle and has RAUC write a slot.
const INSTALL_ANSWER_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

#[derive(clap::Subcommand)]
pub enum UpdateAction {
    /// Running version, booted slot and each slot's state, the last check and install.
    Status,
    /// Ask the update server now (as the schedule would), and install if it says so.
    Check,
    /// Install one RAUC bundle on this box: a FILE the node can read, or an https:// URL.
    Install {
        /// A path (made absolute) or an https:// URL.
        source: String,
    },
}

pub async fn update(config: Config, action: UpdateAction, json: bool) -> Result<()> {
    match action {
        UpdateAction::Status => status(&config, json).await,
        UpdateAction::Check => {
            let answer =
                call(&config, http::Method::POST, "/api/v1/node/update/check", None, CHECK_ANSWER_TIMEOUT).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let version = answer["version"].as_str().unwrap_or("?");
                let running = answer["running_version"].as_str().unwrap_or("?");
                let said = match answer["outcome"].as_str().unwrap_or_default() {
                    "up_to_date" => format!("up to date: the server publishes {version}, this box runs it"),
                    "not_in_rollout" => format!(
                        "{version} is published for {}% of boxes, not this one yet (running {running})",
                        answer["rollout_percent"]
                    ),
                    "failed_before" => {
                        format!("{version} did not boot on this box before: not installed again (running {running})")
                    }
                    "awaiting_reboot" => format!("{version} is installed and boots at the next reboot"),
                    "install" => format!("installing {version} (running {running}); see `edgenode update status`"),
                    "unavailable" => format!("{version} is published, but this system has no rauc to install it"),
                    "bundle_too_large" => {
                        format!("{version} is published, but its bundle is larger than [update] bundle_bytes_max")
                    }
                    other => format!("{other}: {version}"),
                };
                println!("{said}");
            }
            Ok(())
        }
        UpdateAction::Install { source } => {
            let source = if source.starts_with("https://") {
                source
            } else {
                std::path::absolute(&source)
                    .map_err(|error| Exit::new(EXIT_FAILED, format!("{source}: {error}")))?
                    .display()
                    .to_string()
            };
            let body = Some(json!({"source": source}));
            let answer =
                call(&config, http::Method::POST, "/api/v1/node/update/install", body, INSTALL_ANSWER_TIMEOUT).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let installed = &answer["installed"];
                println!(
                    "installed {} into the inactive slot; it boots at the next reboot (the node reboots by itself in \
                     its maintenance window, or run `systemctl reboot`)",
                    installed["version"].as_str().unwrap_or("the bundle")
                );
            }
            Ok(())
        }
    }
}

async fn status(config: &Config, json: bool) -> Result<()> {
    let from_node = async {
        let node = LocalNode::of(config).ok()?;
        let info = tokio::time::timeout(STATUS_ANSWER_TIMEOUT, node.call(http::Method::GET, "/api/v1/node", None))
            .await
            .ok()?
            .ok()?;
        info.get("update").cloned()
    }
    .await;
    let (status, serving) = match from_node {
        Some(status) => (status, true),
        None => (status_from_files(config)?, false),
    };
    let failed = matches!(status["last_install"]["outcome"].as_str(), Some("failed" | "boot_failed"));
    if json {
        let mut status = status;
        status["from_node"] = json!(serving);
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status, serving));
    }
    if failed {
        return Err(Exit::new(EXIT_FAILED, "").into());
    }
    Ok(())
}

/// What the files say when the node does not answer: the state file and `rauc status`.
fn status_from_files(config: &Config) -> Result<Value> {
    let state_path = config.data_dir.join(updater::STATE_FILE);
    if state_path.exists() && std::fs::File::open(&state_path).is_err() {
        return Err(Exit::new(
            super::EXIT_CANNOT_TELL,
            format!("cannot read {}: run as root or the edgenode user", state_path.display()),
        )
        .into());
    }
    let state = UpdateState::load(&config.data_dir);
    let rauc = updater::find_program(&config.update.rauc_command);
    let slots = rauc.as_ref().map(|rauc| {
        match std::process::Command::new(rauc).args(["status", "--detailed", "--output-format=json"]).output() {
            Ok(output) if output.status.success() => serde_json::from_slice::<Value>(&output.stdout)
                .map(|status| updater::summarize_rauc_status(&status))
                .unwrap_or_else(|error| json!({"error": format!("rauc status: unreadable JSON: {error}")})),
            Ok(output) => json!({"error": format!("rauc status: {}", String::from_utf8_lossy(&output.stderr).trim())}),
            Err(error) => json!({"error": format!("cannot run rauc: {error}")}),
        }
    });
    Ok(json!({
        "available": rauc.is_some(),
        "message": if rauc.is_some() { Value::Null } else { json!("updates not available on this system (no rauc)") },
        "running_version": updater::running_version(),
        "state": if rauc.is_some() { "unknown (the node is not answering)" } else { "unavailable" },
        "url": config.update.url,
        "maintenance_window_utc": config.update.maintenance_window,
        "booted_slot": slots.as_ref().map_or(Value::Null, |slots| slots["booted"].clone()),
        "slots": slots.as_ref().map_or(json!([]), |slots| slots["slots"].clone()),
        "last_check": state.last_check,
        "next_check_at_unix": state.next_check_at_unix,
        "last_install": state.last_install,
        "failed_bundles": state.failed_bundles,
    }))
}

fn render(status: &Value, from_node: bool) -> String {
    let text = |value: &Value| match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let when = |unix: &Value| unix.as_u64().map_or("-".to_owned(), format_unix);
    let mut rows: Vec<(&str, String)> = vec![
        ("version", text(&status["running_version"])),
        (
            "updates",
            if status["available"] == Value::Bool(true) { text(&status["state"]) } else { text(&status["message"]) },
        ),
        ("update URL", if status["url"].is_null() { "none ([update] url)".to_owned() } else { text(&status["url"]) }),
        ("window (UTC)", text(&status["maintenance_window_utc"])),
        ("booted slot", text(&status["booted_slot"])),
    ];
    let check = &status["last_check"];
    rows.push((
        "last check",
        if check.is_null() {
            "never".to_owned()
        } else {
            let mut line = format!("{}  {}", when(&check["at_unix"]), text(&check["outcome"]));
            if !check["version"].is_null() {
                line += &format!(" (server: {})", text(&check["version"]));
            }
            if !check["error"].is_null() {
                line += &format!(": {}", text(&check["error"]));
            }
            line
        },
    ));
    rows.push(("next check", when(&status["next_check_at_unix"])));
    let install = &status["last_install"];
    rows.push((
        "last install",
        if install.is_null() {
            "none".to_owned()
        } else {
            format!(
                "{}  {} {}: {}",
                when(&install["started_at_unix"]),
                text(&install["version"]),
                text(&install["outcome"]),
                text(&install["message"])
            )
        },
    ));
    if !from_node {
        rows.push(("node", "not answering: read from the data dir and rauc".to_owned()));
    }
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        out += &format!("{label:<width$}  {value}\n");
    }
    if let Some(slots) = status["slots"].as_array().filter(|slots| !slots.is_empty()) {
        out += "\nslot        bootname  state     boot status  version\n";
        for slot in slots {
            out += &format!(
                "{:<11} {:<9} {:<9} {:<12} {}\n",
                text(&slot["name"]),
                text(&slot["bootname"]),
                text(&slot["state"]),
                text(&slot["boot_status"]),
                text(&slot["version"])
            );
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SSZ`; the bare number when out of range.
fn format_unix(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|unix_seconds| super::utc_timestamp(unix_seconds, ' '))
        .unwrap_or_else(|| unix.to_string())
}

/// One call to the node; its failure as an [`Exit`] with the code that says which kind.
async fn call(
    config: &Config,
    method: http::Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Value> {
    let node = LocalNode::of(config).map_err(|error| {
        Exit::new(EXIT_NODE_UNREACHABLE, format!("cannot reach the node on {}: {error:#}", config.data_dir.display()))
    })?;
    node.call_within(timeout, method, path, body).await.map_err(|error| {
        let unreachable = error.chain().any(|cause| cause.is::<std::io::Error>() || cause.is::<hyper::Error>())
            || error.to_string().contains("did not answer within");
        let message = format!("{error:#}");
        // The control client puts the status in its message: "node answered 501 …".
        let code = if unreachable {
            EXIT_NODE_UNREACHABLE
        } else if message.contains("answered 501")
            || message.contains("no_update_url")
            || message.contains("[update] url")
        {
            EXIT_NOT_SET_UP
        } else {
            EXIT_FAILED
        };
        Exit::new(code, message).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_without_a_node_or_rauc() {
        let status = json!({
            "available": false, "message": "updates not available on this system (no rauc)",
            "running_version": "0.1.0", "url": null, "maintenance_window_utc": "02:00-05:00",
            "booted_slot": null, "slots": [], "last_check": null, "last_install": {
                "version": "0.2.0", "outcome": "boot_failed", "started_at_unix": 0,
                "message": "the box rebooted into 0.2.0 and came back on 0.1.0"}
        });
        let text = render(&status, false);
        assert!(text.contains("updates not available on this system"), "{text}");
        assert!(text.contains("1970-01-01 00:00:00Z  0.2.0 boot_failed: the box rebooted"), "{text}");
        assert!(text.contains("not answering"), "{text}");
    }

    #[test]
    fn times_read_in_utc_and_out_of_range_ones_stay_numbers() {
        assert_eq!(format_unix(1_796_484_612), "2026-12-05 15:30:12Z");
        assert_eq!(format_unix(u64::MAX), u64::MAX.to_string());
        assert_eq!(format_unix(i64::MAX as u64), i64::MAX.to_string());
    }
}
