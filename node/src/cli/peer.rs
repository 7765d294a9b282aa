//! `edgenode peer pair|join|list|retire`: pairing with sibling nodes, the table of
//! siblings, and retiring a dead one, through the node running on this data dir
//! (`control::LocalNode`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use edgenode::config::Config;

use super::control::LocalNode;
use super::invite::{call_with_body, EXIT_NODE_UNREACHABLE};
use super::Exit;

/// How often `peer pair` asks the node whether someone joined with its code.
const JOIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Shows a one-time code and the `peer join` command for the other node, then waits
/// up to `wait_seconds` for someone to join with it (0: print and return).
pub async fn pair(config: Config, wait_seconds: u64) -> Result<()> {
    let node = LocalNode::of(&config)?;
    let before = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
    let known = |answer: &Value| -> Vec<String> {
        answer["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["node_id"].as_str().map(str::to_owned))
            .collect()
    };
    let known_before = known(&before);
    let answer = node.call(http::Method::POST, "/api/v1/node/peers/pair", None).await?;
    let code = answer["code"].as_str().unwrap_or_default();
    println!("pairing code  {code}  (valid {} s, one use)", answer["expires_in_seconds"]);
    println!("on the other node run:");
    println!("  edgenode peer join {} {code}", answer["peer_address"].as_str().unwrap_or_default());
    let others: Vec<&str> = answer["peer_addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|address| address.as_str())
        .skip(1)
        .collect();
    if !others.is_empty() {
        println!("  (or, from another network, this node's other addresses: {})", others.join(", "));
    }
    println!(
        "and check that it reports this node as {} with pin {}",
        answer["node_id"].as_str().unwrap_or_default(),
        answer["pin"].as_str().unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(wait_seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(JOIN_POLL_INTERVAL).await;
        let now = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
        if let Some(new) = known(&now).into_iter().find(|id| !known_before.contains(id)) {
            println!("paired with {new}");
            return Ok(());
        }
    }
    if wait_seconds > 0 {
        bail!("nobody joined within {wait_seconds} s; the code stays valid until it expires");
    }
    Ok(())
}

/// Joins the node at `address` (its peer address) with the code it showed.
pub async fn join(config: Config, address: &str, code: &str) -> Result<()> {
    let node = LocalNode::of(&config)?;
    let body = serde_json::json!({"address": address, "code": code});
    let answer = node.call(http::Method::POST, "/api/v1/node/peers/join", Some(body)).await?;
    println!(
        "paired with {} at {} (pin {})",
        answer["node_id"].as_str().unwrap_or_default(),
        answer["address"].as_str().unwrap_or_default(),
        answer["pin"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// Siblings with state, last contact, lag and trust; then why any lost trust.
pub async fn list(config: Config, json: bool) -> Result<()> {
    let node = LocalNode::of(&config)?;
    let answer = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer["items"])?);
        return Ok(());
    }
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no siblings: pair with `edgenode peer pair` here and `edgenode peer join` there");
        return Ok(());
    }
    println!(
        "{:<16}  {:<22}  {:<12}  {:>12}  {:>6}  {:<15}  {:<6}",
        "NODE ID", "ADDRESS", "STATE", "LAST CONTACT", "LAG", "TRUST", "SOURCE"
    );
    let mut reasons = Vec::new();
    for item in items {
        let trust = format!(
            "{} {}",
            item["trust"].as_u64().unwrap_or_default(),
            item["trust_tier"].as_str().unwrap_or_default()
        );
        if let Some(reason) = trust_lowered_by(&item) {
            reasons.push(reason);
        }
        if item["state"] == "retired" {
            println!(
                "{:<16}  {:<22}  {:<12}  {:>12}  {:>6}  {:<15}  {:<6}",
                item["node_id"].as_str().unwrap_or_default(),
                format!("by {}", item["retired_by"].as_str().unwrap_or("?")),
                "retired",
                "-",
                "-",
                "-",
                "retired"
            );
            continue;
        }
        let contact = item["last_contact_ms_ago"]
            .as_u64()
            .map_or("never".to_owned(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
        let lag = item["lag_entries"].as_u64().map_or("-".to_owned(), |lag| lag.to_string());
        println!(
            "{:<16}  {:<22}  {:<12}  {:>12}  {:>6}  {:<15}  {:<6}",
            item["node_id"].as_str().unwrap_or_default(),
            item["address"].as_str().unwrap_or("-"),
            item["state"].as_str().unwrap_or_default(),
            contact,
            lag,
            trust,
            item["source"].as_str().unwrap_or_default(),
        );
    }
    if !reasons.is_empty() {
        println!("trust lowered by:\n{}", reasons.join("\n"));
    }
    Ok(())
}

/// Retires the dead sibling `node_id` (a box replaced): this node and, through it,
/// every sibling stop waiting for it, placing data on it and admitting its key.
/// Exit 0 retired (or already), 1 refused, 2 no node answered.
pub async fn retire(config: Config, node_id: &str, force: bool, json: bool) -> Result<()> {
    let node = LocalNode::of(&config).map_err(|error| {
        Exit::new(EXIT_NODE_UNREACHABLE, format!("cannot reach the node on {}: {error:#}", config.data_dir.display()))
    })?;
    let node_id = node_id.trim();
    let path = format!("/api/v1/node/peers/{node_id}/retire{}", if force { "?force=true" } else { "" });
    let answer = call_with_body(&node, http::Method::POST, &path, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let node_id = answer["node_id"].as_str().unwrap_or(node_id);
    if answer["already_retired"] == Value::Bool(true) {
        println!("{node_id} was already retired (by {})", answer["retired_by"].as_str().unwrap_or("?"));
        return Ok(());
    }
    println!("retired {node_id}: no longer a sibling here; {} siblings left", answer["siblings_left"]);
    println!("its siblings are told now and every 30 s; check with `edgenode peer list` on each");
    Ok(())
}

/// Why a sibling lost trust: its events other than `verified` by kind, and the latest
/// one; `None` when nothing lowered it.
fn trust_lowered_by(item: &Value) -> Option<String> {
    let counts = item["trust_events"].as_object().cloned().unwrap_or_default();
    let lowered: Vec<String> = counts
        .iter()
        .filter(|(event, _)| event.as_str() != "verified")
        .map(|(event, count)| format!("{event} x{count}"))
        .collect();
    if lowered.is_empty() {
        return None;
    }
    let latest = item["trust_recent"].as_array().and_then(|recent| recent.last()).cloned();
    let latest = latest.map_or(String::new(), |note| {
        format!(
            "; latest: {} ({})",
            note["event"].as_str().unwrap_or_default(),
            note["detail"].as_str().unwrap_or_default()
        )
    });
    Some(format!(
        "  {}: {}, verified x{}{latest}",
        item["node_id"].as_str().unwrap_or_default(),
        lowered.join(", "),
        counts.get("verified").and_then(|count| count.as_u64()).unwrap_or_default()
    ))
}
