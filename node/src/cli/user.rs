//! `edgenode user list|add|passwd|disable|enable|delete`: the people of this node, looked
//! after through the node running on this data dir (`control::LocalNode`, the control
//! token: admin for these routes). Nobody's password is ever shown: `add` without
//! `EDGENODE_PASSWORD` and `passwd` print a one-time reset code the person uses to set
//! their own. Exit codes: 0 done, 1 the node refused (unknown user, taken handle, weak
//! password, the last admin, a deletion not confirmed), 2 the node could not be
//! reached.

use anyhow::Result;
use serde_json::{json, Value};

use edgenode::config::Config;
use edgenode::core::text::readable_bytes;

use super::control::LocalNode;
use super::invite::{age, call_with_body, percent_encoded, utc_minute, EXIT_NODE_UNREACHABLE, EXIT_REFUSED};
use super::Exit;

/// Users asked for per page; `list` pages through them all.
const PAGE_USERS: usize = 100;
/// Pages `list` reads at most (100,000 users), so a node answering a cursor that
/// never ends cannot keep it going.
const PAGES_MAX: usize = 1000;
/// The environment variable `user add` reads a password from (never a flag: flags
/// show in `ps` and shell history).
pub const PASSWORD_VARIABLE: &str = "EDGENODE_PASSWORD";

#[derive(clap::Subcommand)]
pub enum UserAction {
    /// Every user this node holds (its own and its siblings'), by handle: admin,
    /// disabled, storage used, last seen on this node.
    List,
    /// Add an account. With EDGENODE_PASSWORD set, that is its password; without, a
    /// one-time reset code is printed for the person to set their own.
    Add {
        /// The handle (lower case letters, digits, `_`).
        handle: String,
    },
    /// Print a one-time password-reset code for HANDLE (valid for a day); the person
    /// sets a new password with it (`POST /api/v1/password-reset`).
    Passwd { handle: String },
    /// Disable HANDLE on every replica: no sign-in, sessions signed out, tokens refused.
    Disable { handle: String },
    /// Enable HANDLE again.
    Enable { handle: String },
    /// Delete HANDLE on every replica: posts, likes, comments, follows of and by
    /// them, and photos nobody else owns. Cannot be undone; the handle stays
    /// reserved. Asks to type the handle again unless --yes.
    Delete {
        handle: String,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

pub async fn user(config: Config, action: UserAction, json_output: bool) -> Result<()> {
    let node = LocalNode::of(&config).map_err(|error| {
        Exit::new(EXIT_NODE_UNREACHABLE, format!("cannot reach the node on {}: {error:#}", config.data_dir.display()))
    })?;
    let node = &node;
    let post =
        |path: String, body: Option<Value>| async move { call_with_body(node, http::Method::POST, &path, body).await };
    match action {
        UserAction::List => {
            let users = all_users(node).await?;
            if json_output {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                print!("{}", user_table(&users, edgenode::os::now_ms()));
            }
        }
        UserAction::Add { handle } => {
            let password = std::env::var(PASSWORD_VARIABLE).ok().filter(|password| !password.is_empty());
            let body = json!({"handle": handle.trim(), "password": password});
            let answer = post("/api/v1/admin/users".to_owned(), Some(body)).await?;
            if json_output {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let handle = answer["handle"].as_str().unwrap_or_default();
            println!("added @{handle}");
            if answer["reset_code"].is_string() {
                print_reset_code(handle, &answer["reset_code"], &answer["reset_code_expires_at"]);
            } else {
                println!("with the password from {PASSWORD_VARIABLE}");
            }
        }
        UserAction::Passwd { handle } => {
            let path = format!("/api/v1/admin/users/{}/reset-code", percent_encoded(handle.trim()));
            let answer = post(path, None).await?;
            if json_output {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let handle = answer["handle"].as_str().unwrap_or_default();
            print_reset_code(handle, &answer["code"], &answer["expires_at"]);
        }
        UserAction::Disable { handle } => {
            let path = format!("/api/v1/admin/users/{}/disable", percent_encoded(handle.trim()));
            let answer = post(path, None).await?;
            print_state(&answer, json_output, "disabled: cannot sign in, sessions signed out, tokens refused")?;
        }
        UserAction::Enable { handle } => {
            let path = format!("/api/v1/admin/users/{}/enable", percent_encoded(handle.trim()));
            let answer = post(path, None).await?;
            print_state(&answer, json_output, "enabled: can sign in again")?;
        }
        UserAction::Delete { handle, yes } => {
            let handle = handle.trim().trim_start_matches('@').to_owned();
            if !yes && !confirmed(&handle)? {
                return Err(Exit::new(
                    EXIT_REFUSED,
                    format!("@{handle} was not deleted: the handle typed did not match"),
                )
                .into());
            }
            let path = format!("/api/v1/admin/users/{}", percent_encoded(&handle));
            let answer = call_with_body(node, http::Method::DELETE, &path, None).await?;
            if json_output {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            println!(
                "@{} deleted on every replica: {} records, {} photos removed from disk here; the handle stays reserved",
                answer["handle"].as_str().unwrap_or_default(),
                answer["records_deleted"].as_u64().unwrap_or_default(),
                answer["photos_removed"].as_u64().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// Asks on the terminal (or reads from stdin) for the handle again: deleting cannot
/// be undone.
fn confirmed(handle: &str) -> Result<bool> {
    use std::io::Write as _;
    eprint!("Delete @{handle} and everything they posted, on every replica? This cannot be undone.\nType the handle to confirm: ");
    std::io::stderr().flush()?;
    let mut typed = String::new();
    std::io::stdin().read_line(&mut typed)?;
    Ok(typed.trim().trim_start_matches('@') == handle)
}

/// Every page of `GET /api/v1/admin/users`.
async fn all_users(node: &LocalNode) -> Result<Vec<Value>> {
    let mut users = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let mut path = format!("/api/v1/admin/users?limit={PAGE_USERS}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", percent_encoded(cursor)));
        }
        let page = call_with_body(node, http::Method::GET, &path, None).await?;
        users.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(users),
        }
    }
    Ok(users)
}

fn print_reset_code(handle: &str, code: &Value, expires_at: &Value) {
    let code = code.as_str().unwrap_or_default();
    let expires = expires_at.as_u64().map(utc_minute).unwrap_or_default();
    println!("reset code   {code}  (one use, until {expires})");
    println!(
        "Give it to @{handle} only: they choose their own password with it \
         (POST /api/v1/password-reset {{handle, code, new_password}})."
    );
}

fn print_state(answer: &Value, json_output: bool, what: &str) -> Result<()> {
    if json_output {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        println!("@{} {what}", answer["handle"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// The users as a person reads them.
fn user_table(users: &[Value], now_ms: u64) -> String {
    if users.is_empty() {
        return "no users yet: claim the node, or add one with `edgenode user add HANDLE`\n".to_owned();
    }
    let headers = ["HANDLE", "ROLE", "STATE", "STORAGE", "LAST SEEN HERE"];
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|user| {
            let last_seen = match user["last_seen_at"].as_u64() {
                Some(at) => age(now_ms.saturating_sub(at)),
                None => "never".to_owned(),
            };
            [
                format!("@{}", user["handle"].as_str().unwrap_or_default()),
                if user["admin"] == json!(true) { "admin" } else { "user" }.to_owned(),
                if user["disabled"] == json!(true) { "disabled" } else { "active" }.to_owned(),
                readable_bytes(user["storage_bytes_used"].as_u64().unwrap_or_default()),
                last_seen,
            ]
        })
        .collect();
    let width = |column: usize| {
        rows.iter().map(|row| row[column].chars().count()).chain([headers[column].len()]).max().unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let line = |cells: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    let mut table = line(headers);
    for row in &rows {
        table.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_read_as_a_table() {
        let users = [
            json!({"handle": "alice", "admin": true, "disabled": false, "storage_bytes_used": 3_500_000_u64,
                   "last_seen_at": 1_796_477_220_000_u64}),
            json!({"handle": "bob", "admin": false, "disabled": true, "storage_bytes_used": 0, "last_seen_at": null}),
        ];
        assert_eq!(
            user_table(&users, 1_796_477_520_000),
            "HANDLE  ROLE   STATE     STORAGE  LAST SEEN HERE\n\
             @alice  admin  active    3.3 MiB  5 min ago\n\
             @bob    user   disabled      0 B  never\n"
        );
        assert!(user_table(&[], 0).starts_with("no users yet"));
    }
}
