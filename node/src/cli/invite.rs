//! `edgenode invite create|list|revoke`: invites to this node, made, listed and
//! revoked through the node running on this data dir (`control::LocalNode`, the control
//! token: admin for these routes). Exit codes: 0 done, 1 the node refused or the answer
//! was not understood, 2 the node could not be reached.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use edgenode::config::Config;

use super::control::LocalNode;
use super::Exit;

/// Exit code when the node refused (or answered what this command does not understand).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code when no node answered on this data dir: not running, never run here, or
/// not answering in time.
pub const EXIT_NODE_UNREACHABLE: u8 = 2;

/// How long a command waits for the node; shorter than the control client's own
/// timeout, so a node that does not answer is told apart from one that refused.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Subcommand)]
pub enum InviteAction {
    /// Make a one-time invite code, and the link that opens the join screen with it.
    Create,
    /// Open invites (not used, not revoked), newest first.
    List,
    /// Revoke the open invite CODE: nobody can join with it any more.
    Revoke {
        /// The code as shown (`7K3QZ-M9X2A`); case, hyphens and spaces do not matter.
        code: String,
    },
}

pub async fn invite(config: Config, action: InviteAction, json: bool) -> Result<()> {
    let node = LocalNode::of(&config).map_err(|error| {
        Exit::new(EXIT_NODE_UNREACHABLE, format!("cannot reach the node on {}: {error:#}", config.data_dir.display()))
    })?;
    match action {
        InviteAction::Create => {
            let answer = call(&node, http::Method::POST, "/api/v1/invites").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let code = answer["code"].as_str().unwrap_or_default();
            println!("invite code  {code}  (one use)");
            println!("link         {}", answer["link"].as_str().unwrap_or_default());
            println!("Give the code (or the link) to one person; revoke it with `edgenode invite revoke {code}`.");
        }
        InviteAction::List => {
            let answer = call(&node, http::Method::GET, "/api/v1/invites").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["items"])?);
                return Ok(());
            }
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            print!("{}", invite_table(&items, edgenode::os::now_ms()));
        }
        InviteAction::Revoke { code } => {
            let path = format!("/api/v1/invites/{}", percent_encoded(code.trim()));
            call(&node, http::Method::DELETE, &path).await?;
            if json {
                println!("{}", serde_json::json!({"revoked": code.trim()}));
            } else {
                println!("revoked invite {}: nobody can join with it", code.trim());
            }
        }
    }
    Ok(())
}

/// One call to the node; its failure as an [`Exit`] with the code that says which kind.
async fn call(node: &LocalNode, method: http::Method, path: &str) -> Result<Value> {
    call_with_body(node, method, path, None).await
}

/// As `call`, with a JSON body (`user add`).
pub(super) async fn call_with_body(
    node: &LocalNode,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, node.call(method, path, body)).await {
        Ok(answer) => answer,
        Err(_) => {
            let message = format!("the node did not answer within {} s", ANSWER_TIMEOUT.as_secs());
            return Err(Exit::new(EXIT_NODE_UNREACHABLE, message).into());
        }
    };
    // The control client parses every success as JSON; a 204 (revoke) has no body,
    // which it reports as JSON ending before its first byte: that is the success.
    let empty_success = |error: &anyhow::Error| {
        error.chain().any(|cause| {
            cause.downcast_ref::<serde_json::Error>().is_some_and(|json| json.is_eof() && json.column() == 0)
        })
    };
    answer.or_else(|error| {
        if empty_success(&error) {
            return Ok(Value::Null);
        }
        // No connection, a TLS handshake that failed (a key other than this data dir's),
        // or a connection that broke: nothing answered. Anything else is an answer.
        let unreachable = error.chain().any(|cause| cause.is::<std::io::Error>() || cause.is::<hyper::Error>());
        let (code, message) = if unreachable {
            (
                EXIT_NODE_UNREACHABLE,
                format!("no node answered ({error:#}): is `edgenode serve` running on this data dir?"),
            )
        } else {
            (EXIT_REFUSED, format!("{error:#}"))
        };
        Err(Exit::new(code, message).into())
    })
}

/// The open invites as a person reads them: code, when, by whom.
fn invite_table(items: &[Value], now_ms: u64) -> String {
    if items.is_empty() {
        return "no open invites: make one with `edgenode invite create`\n".to_owned();
    }
    let rows: Vec<[String; 3]> = items
        .iter()
        .map(|item| {
            let created_at = item["created_at"].as_u64().unwrap_or_default();
            let created_by = match &item["created_by"] {
                Value::Null => "the control token (CLI)".to_owned(),
                by => match by["handle"].as_str() {
                    Some(handle) => format!("@{handle}"),
                    None => by["user_id"].as_str().unwrap_or("?").to_owned(),
                },
            };
            [
                item["code"].as_str().unwrap_or_default().to_owned(),
                format!("{} ({})", utc_minute(created_at), age(now_ms.saturating_sub(created_at))),
                created_by,
            ]
        })
        .collect();
    let headers = ["CODE", "CREATED", "CREATED BY"];
    let width = |column: usize| {
        rows.iter().map(|row| row[column].chars().count()).chain([headers[column].len()]).max().unwrap_or(0)
    };
    let (code_width, created_width) = (width(0), width(1));
    let mut table = format!("{:<code_width$}  {:<created_width$}  {}\n", headers[0], headers[1], headers[2]);
    for [code, created, created_by] in rows {
        table.push_str(&format!("{code:<code_width$}  {created:<created_width$}  {created_by}\n"));
    }
    table
}

/// `2026-12-05 13:07 UTC` for milliseconds since the Unix epoch.
pub(super) fn utc_minute(at_ms: u64) -> String {
    let seconds = i64::try_from(at_ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => format!("{at_ms} ms"),
    }
}

/// `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
pub(super) fn age(elapsed_ms: u64) -> String {
    let minutes = elapsed_ms / 60_000;
    match minutes {
        0 => "just now".to_owned(),
        1..=59 => format!("{minutes} min ago"),
        60..=2879 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
}

/// `code` as one path segment: what is not a letter, digit, `-` or `_` as `%XX`.
pub(super) fn percent_encoded(code: &str) -> String {
    code.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_invites_read_as_a_table() {
        let items = [
            json!({"code": "7K3QZ-M9X2A", "created_at": 1_796_477_220_000_u64, "created_by": {"user_id": "u1", "handle": "alice"}}),
            json!({"code": "ABCDE-FGHJK", "created_at": 1_796_470_000_000_u64, "created_by": null}),
        ];
        let table = invite_table(&items, 1_796_477_520_000);
        assert_eq!(
            table,
            "CODE         CREATED                           CREATED BY\n\
             7K3QZ-M9X2A  2026-12-05 13:27 UTC (5 min ago)  @alice\n\
             ABCDE-FGHJK  2026-12-05 11:26 UTC (2 h ago)    the control token (CLI)\n"
        );
        assert_eq!(invite_table(&[], 0), "no open invites: make one with `edgenode invite create`\n");
    }

    #[test]
    fn codes_are_one_path_segment() {
        assert_eq!(percent_encoded("7K3QZ-M9X2A"), "7K3QZ-M9X2A");
        assert_eq!(percent_encoded("7k3qz m9x2a/.."), "7k3qz%20m9x2a%2F%2E%2E");
    }
}
