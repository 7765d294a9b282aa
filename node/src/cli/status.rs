//! `edgenode status`: this node's identity, claim state, whether it is serving (and
//! what it says about itself), and the nodes it sees nearby; a table, or JSON. Its exit
//! code says whether the node is serving, for scripts and health checks.

use std::time::Duration;

use anyhow::Result;

use edgenode::config::Config;
use edgenode::discovery;
use edgenode::http::Identity;

use super::control::{fetch_json, serving_address};
use super::{Exit, EXIT_CANNOT_TELL, EXIT_NO};

/// `status --help`, and README's "Operating a node".
pub const HELP_AFTER: &str = "\
Without --config or --data-dir, reads /etc/edgenode/node.toml when it exists (the appliance's config).

Exit status:
  0  the node is serving (it answered)
  1  the node is not serving (no answer within 5 s)
  2  cannot tell: the config, the data dir or the node's identity cannot be read";

/// How long `status` waits for the node before it reports it as not answering.
const NODE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn status(config: Config, json: bool) -> Result<()> {
    let identity = Identity::load(&config.data_dir).map_err(|error| Exit::new(EXIT_CANNOT_TELL, error.to_string()))?;
    let claim_code =
        std::fs::read_to_string(config.data_dir.join("claim-code")).ok().map(|code| code.trim().to_owned());
    let ca_fingerprint = edgenode::tls::ca::fingerprint_in(&config.data_dir);
    let target = serving_address(&config);
    let control_token = std::fs::read_to_string(config.data_dir.join("control-token")).unwrap_or_default();
    let fetch = async {
        let info = fetch_json(target, &identity.pin, "/api/v1/node", Some(control_token.trim())).await?;
        let nearby = fetch_json(target, &identity.pin, "/api/v1/node/nearby", Some(control_token.trim())).await.ok();
        anyhow::Ok((info, nearby))
    };
    let (live, nearby) = match tokio::time::timeout(NODE_ANSWER_TIMEOUT, fetch).await {
        Ok(Ok((info, nearby))) => (Some(info), nearby),
        Ok(Err(error)) => {
            tracing::debug!(%error, "node not answering");
            (None, None)
        }
        Err(_) => (None, None),
    };
    if json {
        let value = serde_json::json!({
            "data_dir": config.data_dir,
            "pin": identity.pin,
            "ca_fingerprint": ca_fingerprint,
            "claim_code": claim_code,
            "serving": live.is_some(),
            "node": live,
            "nearby": nearby,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return serving_verdict(live.is_some());
    }
    let field = |info: &Option<serde_json::Value>, key: &str| {
        info.as_ref().and_then(|info| info.get(key)).map(|value| value.to_string().trim_matches('"').to_owned())
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("data dir", config.data_dir.display().to_string()),
        ("pin", identity.pin.clone()),
        ("CA", ca_fingerprint.clone().unwrap_or_else(|| "none yet (made at the first start)".to_owned())),
        ("serving", if live.is_some() { format!("yes, https://{target}") } else { format!("no answer on {target}") }),
    ];
    for (label, key) in [
        ("name", "name"),
        ("node id", "node_id"),
        ("version", "version"),
        ("region", "region"),
        ("uptime s", "uptime_seconds"),
    ] {
        if let Some(value) = field(&live, key) {
            rows.push((label, value));
        }
    }
    if let Some(update) = live.as_ref().map(|info| &info["update"]).filter(|update| update.is_object()) {
        rows.push(("updates", update_summary(update)));
    }
    if let Some(storage) = live.as_ref().map(|info| &info["storage"]).filter(|storage| storage.is_object()) {
        let gigabytes =
            |key: &str| storage[key].as_f64().map_or("?".to_owned(), |bytes| format!("{:.2} GB", bytes / 1e9));
        let used = gigabytes("used_bytes");
        rows.push((
            "storage",
            format!("{used} used, {} free of {}", gigabytes("free_bytes"), gigabytes("total_bytes")),
        ));
    }
    rows.push((
        "claimed",
        match (&claim_code, field(&live, "claimed")) {
            (Some(code), _) => format!("no — claim code {code}"),
            (None, Some(claimed)) => {
                if claimed == "true" {
                    "yes".into()
                } else {
                    "no".into()
                }
            }
            (None, None) => "yes (no claim code saved)".into(),
        },
    ));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{label:<width$}  {value}");
    }
    if let Some(nearby) = nearby {
        let nodes: Vec<discovery::NearbyNode> = serde_json::from_value(nearby["items"].clone()).unwrap_or_default();
        if nearby["mdns"] == serde_json::Value::Bool(false) {
            println!("\nnearby: mDNS is off");
        } else {
            print!("\nnearby:\n{}", discovery::render_table(&nodes));
        }
    }
    serving_verdict(live.is_some())
}

/// One line of `/api/v1/node`'s `update`: the updater's state, the booted slot and
/// each slot's state (`edgenode update status` has the rest).
fn update_summary(update: &serde_json::Value) -> String {
    if update["available"] != serde_json::Value::Bool(true) {
        return update["message"].as_str().unwrap_or("not available").to_owned();
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
    let slots: Vec<String> = update["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .map(|slot| {
                    format!(
                        "{} {}/{} {}",
                        text(&slot["bootname"]),
                        text(&slot["state"]),
                        text(&slot["boot_status"]),
                        slot["version"].as_str().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{}, booted slot {}; {}", text(&update["state"]), text(&update["booted_slot"]), slots.join(", "))
}

/// Exit 0 when the node answered, else 1 (the output has said so already).
fn serving_verdict(serving: bool) -> Result<()> {
    if serving {
        Ok(())
    } else {
        Err(Exit::new(EXIT_NO, "").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_says_what_the_code_does() {
        assert!(HELP_AFTER.contains(&format!("within {} s", NODE_ANSWER_TIMEOUT.as_secs())));
        assert!(HELP_AFTER.contains(super::super::APPLIANCE_CONFIG_PATH));
    }
}
