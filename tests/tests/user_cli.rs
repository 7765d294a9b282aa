//! The people of a node, looked after on the box: `edgenode user list|add|passwd|
//! disable|enable|delete` (the real binary, as the README shows it, with the node's control
//! token) prints tables and `--json`; exit codes say done (0), refused (1) or no node
//! answering (2). The admin never sees a password: `add` and `passwd` print one-time
//! reset codes the person uses to choose their own.

use std::process::{Command, Output};

use edgenode_tests::checks::{expect_error, expect_status, text};
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

const CHOSEN_PASSWORD: &str = "lanterns along the quay 77";

/// `edgenode user <args> --data-dir <node's>` as the README prints it, with
/// `environment` set.
fn user_cli(data_dir: &std::path::Path, args: &[&str], environment: &[(&str, &str)]) -> Output {
    let mut command = Command::new(edgenode_binary());
    command.arg("user").args(args).arg("--data-dir").arg(data_dir).env_remove("EDGENODE_PASSWORD");
    for (name, value) in environment {
        command.env(name, value);
    }
    command.output().expect("running edgenode user")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `edgenode user <args>`, expects exit code `expected`, prints what it printed
/// (so a test run shows the commands' output), and returns its stdout.
fn expect_exit(node: &Node, args: &[&str], environment: &[(&str, &str)], expected: i32) -> String {
    let output = user_cli(node.data_dir(), args, environment);
    println!("$ edgenode user {}\n{}{}", args.join(" "), stdout_of(&output), stderr_of(&output));
    assert_eq!(
        output.status.code(),
        Some(expected),
        "edgenode user {args:?}: expected exit {expected}\nstdout: {}\nstderr: {}",
        stdout_of(&output),
        stderr_of(&output)
    );
    stdout_of(&output)
}

/// The code on a line `reset code   XXXXX-XXXXX  (one use, until …)`.
fn reset_code_in(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("reset code"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no reset code in {stdout:?}"))
        .to_owned()
}

fn reset_password(client: &Client, handle: &str, code: &str) -> (u16, Value) {
    let body = json!({"handle": handle, "code": code, "new_password": CHOSEN_PASSWORD});
    client.post_json("/api/v1/password-reset", None, &body)
}

#[test]
fn the_admin_on_the_box_looks_after_the_nodes_people() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");

    // add: without a password, a reset code the person uses; with EDGENODE_PASSWORD, that.
    let added = expect_exit(&node, &["add", "dave"], &[], 0);
    assert!(added.starts_with("added @dave\n"), "{added}");
    let code = reset_code_in(&added);
    expect_error("dave before choosing", &client.log_in("dave", PASSWORD), 401, "bad_credentials");
    expect_status("dave chooses his password", reset_password(&client, "dave", &code), 200);
    expect_status("dave signs in", client.log_in("dave", CHOSEN_PASSWORD), 200);
    let added = expect_exit(&node, &["add", "erin"], &[("EDGENODE_PASSWORD", PASSWORD)], 0);
    assert!(added.contains("with the password from EDGENODE_PASSWORD"), "{added}");
    expect_status("erin signs in", client.log_in("erin", PASSWORD), 200);
    let added: Value =
        serde_json::from_str(&expect_exit(&node, &["add", "frank", "--json"], &[], 0)).expect("`add --json` is JSON");
    assert_eq!(added["handle"], json!("frank"), "{added}");
    assert!(added["reset_code"].is_string(), "{added}");

    // Refusals exit 1 with the node's reason.
    let taken = user_cli(node.data_dir(), &["add", "dave"], &[]);
    assert_eq!(taken.status.code(), Some(1), "{}", stderr_of(&taken));
    assert!(stderr_of(&taken).contains("handle is taken"), "{}", stderr_of(&taken));
    let weak = user_cli(node.data_dir(), &["add", "gina"], &[("EDGENODE_PASSWORD", "password123")]);
    assert_eq!(weak.status.code(), Some(1), "{}", stderr_of(&weak));
    assert!(stderr_of(&weak).contains("too easy to guess"), "{}", stderr_of(&weak));
    let unknown = user_cli(node.data_dir(), &["disable", "nobody"], &[]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr_of(&unknown));
    assert!(stderr_of(&unknown).contains("user not found"), "{}", stderr_of(&unknown));

    // list: a table a person reads, and JSON.
    let table = expect_exit(&node, &["list"], &[], 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and alice, dave, erin, frank:\n{table}");
    assert!(lines[0].starts_with("HANDLE") && lines[0].contains("LAST SEEN"), "{table}");
    assert!(lines[1].starts_with("@alice") && lines[1].contains("admin") && lines[1].contains("active"), "{table}");
    assert!(lines[1].ends_with("just now"), "alice signed in just now:\n{table}");
    assert!(lines[4].starts_with("@frank") && lines[4].ends_with("never"), "frank never signed in:\n{table}");
    let listed: Value = serde_json::from_str(&expect_exit(&node, &["list", "--json"], &[], 0)).expect("JSON");
    let handles: Vec<&str> = listed.as_array().expect("an array").iter().map(|user| text(user, "handle")).collect();
    assert_eq!(handles, ["alice", "dave", "erin", "frank"], "{listed}");

    // disable / enable: the node refuses and lets in again.
    let disabled = expect_exit(&node, &["disable", "erin"], &[], 0);
    assert!(disabled.starts_with("@erin disabled"), "{disabled}");
    expect_error("erin disabled", &client.log_in("erin", PASSWORD), 403, "account_disabled");
    let table = expect_exit(&node, &["list"], &[], 0);
    assert!(table.lines().any(|line| line.starts_with("@erin") && line.contains("disabled")), "{table}");
    let enabled: Value =
        serde_json::from_str(&expect_exit(&node, &["enable", "erin", "--json"], &[], 0)).expect("JSON");
    assert_eq!(enabled["disabled"], json!(false), "{enabled}");
    expect_status("erin enabled", client.log_in("erin", PASSWORD), 200);
    // The CLI may disable the admin (an admin cannot disable themselves over the API).
    expect_exit(&node, &["disable", "alice"], &[], 0);
    expect_error("alice disabled", &client.get_json("/api/v1/feed", Some(&alice.token)), 403, "account_disabled");
    expect_exit(&node, &["enable", "alice"], &[], 0);

    // passwd: a reset code; the old password keeps working until it is used.
    let passwd = expect_exit(&node, &["passwd", "erin"], &[], 0);
    let code = reset_code_in(&passwd);
    expect_status("erin's old password, before the reset", client.log_in("erin", PASSWORD), 200);
    expect_status("erin resets", reset_password(&client, "erin", &code), 200);
    expect_error("erin's old password", &client.log_in("erin", PASSWORD), 401, "bad_credentials");
    let passwd: Value = serde_json::from_str(&expect_exit(&node, &["passwd", "dave", "--json"], &[], 0)).expect("JSON");
    assert!(passwd["code"].is_string() && passwd["expires_at"].is_u64(), "{passwd}");
}

#[test]
fn without_a_node_answering_the_user_cli_exits_2() {
    let mut node = Node::start(NodeOptions::default());
    Client::new(&node, Transport::Http1).claim_admin(&node, "alice");
    expect_exit(&node, &["list"], &[], 0);
    node.terminate();
    let every_action = [
        &["list"][..],
        &["add", "dave"],
        &["passwd", "alice"],
        &["disable", "alice"],
        &["enable", "alice"],
        &["delete", "alice", "--yes"],
    ];
    for args in every_action {
        let output = user_cli(node.data_dir(), args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?} on a stopped node: {}", stderr_of(&output));
        assert!(stderr_of(&output).contains("is `edgenode serve` running"), "{}", stderr_of(&output));
    }
}

/// `edgenode user delete HANDLE` with `typed` on its stdin.
fn delete_typing(node: &Node, handle: &str, typed: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(edgenode_binary())
        .args(["user", "delete", handle, "--data-dir"])
        .arg(node.data_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running edgenode user delete");
    child.stdin.take().expect("stdin").write_all(typed.as_bytes()).expect("typing");
    child.wait_with_output().expect("edgenode user delete ends")
}

#[test]
fn the_admin_on_the_box_deletes_an_account_after_confirming() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    client.join(&client.create_invite(&alice), "erin");
    client.join(&client.create_invite(&alice), "frank");

    // Not confirmed (the wrong handle typed, or nothing): nothing deleted, exit 1.
    let mistyped = delete_typing(&node, "erin", "frank\n");
    assert_eq!(mistyped.status.code(), Some(1), "{}", stderr_of(&mistyped));
    assert!(stderr_of(&mistyped).contains("not deleted"), "{}", stderr_of(&mistyped));
    expect_exit(&node, &["delete", "erin"], &[], 1);
    expect_status("erin is still there", client.log_in("erin", PASSWORD), 200);

    let confirmed = delete_typing(&node, "erin", "erin\n");
    assert_eq!(confirmed.status.code(), Some(0), "{}", stderr_of(&confirmed));
    assert!(stdout_of(&confirmed).starts_with("@erin deleted on every replica"), "{}", stdout_of(&confirmed));
    expect_error("erin signs in", &client.log_in("erin", PASSWORD), 401, "bad_credentials");
    let table = expect_exit(&node, &["list"], &[], 0);
    assert!(!table.contains("@erin"), "{table}");

    let deleted: Value =
        serde_json::from_str(&expect_exit(&node, &["delete", "frank", "--yes", "--json"], &[], 0)).expect("JSON");
    assert_eq!((deleted["handle"].clone(), deleted["deleted"].clone()), (json!("frank"), json!(true)), "{deleted}");
    // Unknown now, and the last admin is kept: both refused.
    expect_exit(&node, &["delete", "frank", "--yes"], &[], 1);
    let last_admin = user_cli(node.data_dir(), &["delete", "alice", "--yes"], &[]);
    assert_eq!(last_admin.status.code(), Some(1), "{}", stderr_of(&last_admin));
    assert!(stderr_of(&last_admin).contains("last admin"), "{}", stderr_of(&last_admin));
    expect_status("alice is still there", client.log_in("alice", PASSWORD), 200);
}
