//! Invites looked after: the admin on the box runs `edgenode invite create|list|revoke`
//! (the real binary, with the node's control token) and reads a table or JSON; exit
//! codes say done (0), refused (1) or no node answering (2). Over the API, admins list
//! and revoke open invites, nobody else may, and a revoked code admits nobody. A weak
//! password at the join screen is refused with the reason and uses up no invite.

use std::process::{Command, Output};

use edgenode_tests::checks::{expect_error, expect_status, text};
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// `edgenode invite --data-dir <node's> <args>`, as the admin on the box runs it.
fn invite_cli(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(edgenode_binary())
        .arg("invite")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running edgenode invite")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `edgenode invite <args>` and expects exit code `expected`; its stdout.
fn expect_exit(node_data_dir: &std::path::Path, args: &[&str], expected: i32) -> String {
    let output = invite_cli(node_data_dir, args);
    assert_eq!(
        output.status.code(),
        Some(expected),
        "edgenode invite {args:?}: expected exit {expected}\nstdout: {}\nstderr: {}",
        stdout_of(&output),
        stderr_of(&output)
    );
    stdout_of(&output)
}

/// The code on the first line of `invite create`: `invite code  XXXXX-XXXXX  (one use)`.
fn created_code(stdout: &str) -> String {
    let first = stdout.lines().next().unwrap_or_default();
    first
        .strip_prefix("invite code")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {stdout:?}"))
        .to_owned()
}

fn open_invites(client: &Client, admin: &Account) -> Vec<Value> {
    let listed = expect_status("listing invites", client.get_json("/api/v1/invites", Some(&admin.token)), 200);
    listed["items"].as_array().unwrap_or_else(|| panic!("{{items}}: {listed}")).clone()
}

fn codes(items: &[Value]) -> Vec<&str> {
    items.iter().map(|item| text(item, "code")).collect()
}

#[test]
fn the_admin_on_the_box_creates_lists_and_revokes_invites() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");

    let empty = expect_exit(node.data_dir(), &["list"], 0);
    assert_eq!(empty, "no open invites: make one with `edgenode invite create`\n");

    // The CLI makes one, Alice another in the app.
    let created = expect_exit(node.data_dir(), &["create"], 0);
    let by_cli = created_code(&created);
    let link = format!("#/join?code={by_cli}");
    assert!(created.contains(&link), "create shows the link that opens the join screen: {created}");
    let by_alice = client.create_invite(&alice);

    let table = expect_exit(node.data_dir(), &["list"], 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per open invite:\n{table}");
    assert!(lines[0].starts_with("CODE") && lines[0].contains("CREATED BY"), "{table}");
    assert!(lines[1].starts_with(&by_alice) && lines[1].ends_with("@alice"), "newest first:\n{table}");
    assert!(lines[2].starts_with(&by_cli) && lines[2].contains("control token"), "{table}");
    assert!(lines[1].contains(" UTC (just now)"), "when, readable:\n{table}");

    let listed: Value = serde_json::from_str(&expect_exit(node.data_dir(), &["list", "--json"], 0))
        .expect("`invite list --json` prints JSON");
    assert_eq!(listed[0]["code"], json!(by_alice), "{listed}");
    assert_eq!(listed[0]["created_by"]["handle"], json!("alice"), "{listed}");
    assert_eq!(listed[1]["created_by"], Value::Null, "{listed}");
    let made: Value = serde_json::from_str(&expect_exit(node.data_dir(), &["--json", "create"], 0))
        .expect("`invite create --json` prints JSON");
    let third = text(&made, "code").to_owned();

    // Bob joins with the CLI's code; Alice's is revoked, typed loosely; a revoked code
    // admits nobody, and revoking it again is refused (exit 1) with the reason.
    client.join(&by_cli, "bob");
    let revoked = expect_exit(node.data_dir(), &["revoke", &by_alice.to_lowercase()], 0);
    assert!(revoked.starts_with("revoked invite"), "{revoked}");
    let join = json!({"handle": "carol", "password": edgenode_tests::steps::PASSWORD, "invite": by_alice});
    expect_error("joining with a revoked code", &client.post_json("/api/v1/accounts", None, &join), 403, "bad_invite");
    let again = invite_cli(node.data_dir(), &["revoke", &by_alice]);
    assert_eq!(again.status.code(), Some(1), "revoking twice is refused: {}", stderr_of(&again));
    assert!(stderr_of(&again).contains("no open invite"), "the node's reason: {}", stderr_of(&again));
    let used = invite_cli(node.data_dir(), &["revoke", &by_cli]);
    assert_eq!(used.status.code(), Some(1), "a used invite is not open: {}", stderr_of(&used));

    assert_eq!(codes(&open_invites(&client, &alice)), [third.as_str()]);
    let revoked: Value = serde_json::from_str(&expect_exit(node.data_dir(), &["revoke", &third, "--json"], 0))
        .expect("`invite revoke --json` prints JSON");
    assert_eq!(revoked, json!({"revoked": third}));
    assert_eq!(expect_exit(node.data_dir(), &["list"], 0), empty);
}

#[test]
fn without_a_node_answering_the_cli_exits_2() {
    // A data dir no node has run on: no control token, no key.
    let nowhere = std::env::temp_dir().join(format!("edgenode-invite-cli-nowhere-{}", std::process::id()));
    std::fs::create_dir_all(&nowhere).expect("an empty data dir");
    let output = invite_cli(&nowhere, &["list"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("cannot reach the node"), "{}", stderr_of(&output));
    std::fs::remove_dir_all(&nowhere).expect("removing the empty data dir");

    // A node that ran here and stopped.
    let mut node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http1);
    client.claim_admin(&node, "alice");
    expect_exit(node.data_dir(), &["create"], 0);
    node.terminate();
    for args in [&["list"][..], &["create"], &["revoke", "7K3QZ-M9X2A"]] {
        let output = invite_cli(node.data_dir(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?} on a stopped node: {}", stderr_of(&output));
    }
}

/// Over each transport: only admins list and revoke; revoked and used codes are
/// refused at join; a weak password is refused before any code is used.
#[test]
fn admins_list_and_revoke_invites_over_the_api() {
    let node = Node::start(NodeOptions::default());
    let setup = Client::new(&node, Transport::Http1);
    let alice = setup.claim_admin(&node, "alice");
    let bob = setup.join(&setup.create_invite(&alice), "bob");

    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        let kept = client.create_invite(&alice);
        let revoked = client.create_invite(&alice);
        let listed = open_invites(&client, &alice);
        assert_eq!(codes(&listed), [revoked.as_str(), kept.as_str()], "{transport:?}: newest first: {listed:?}");
        assert_eq!(listed[0]["created_by"]["user_id"], json!(alice.user_id), "{listed:?}");
        assert!(listed[0]["created_at"].as_u64().is_some_and(|at| at > 0), "{listed:?}");

        let what = format!("{transport:?}: bob (not an admin)");
        expect_error(&what, &client.get_json("/api/v1/invites", Some(&bob.token)), 403, "forbidden");
        let path = format!("/api/v1/invites/{revoked}");
        expect_error(&what, &client.delete_json(&path, Some(&bob.token)), 403, "forbidden");
        expect_error("anyone", &client.get_json("/api/v1/invites", None), 401, "unauthorized");

        let response = client.request("DELETE", &path, Some(&alice.token), &[], Vec::new());
        assert_eq!(response.status, 204, "{transport:?}: alice revokes: {}", response.body_text());
        expect_error("revoking again", &client.delete_json(&path, Some(&alice.token)), 404, "not_found");
        let unknown = "/api/v1/invites/7K3QZ-M9X2A";
        expect_error("an unknown code", &client.delete_json(unknown, Some(&alice.token)), 404, "not_found");

        let handle = format!("carol_{}", format!("{transport:?}").to_lowercase());
        let join = |invite: &str, password: &str| {
            let body = json!({"handle": handle, "password": password, "invite": invite});
            client.post_json("/api/v1/accounts", None, &body)
        };
        expect_error(
            "joining with a revoked code",
            &join(&revoked, edgenode_tests::steps::PASSWORD),
            403,
            "bad_invite",
        );

        // A weak password: refused with why, and the invite stays open.
        let handle_and_a_mark = format!("{handle}!");
        for (weak, why) in [("password123", "very common password"), (handle_and_a_mark.as_str(), "too easy to guess")]
        {
            let refused = join(&kept, weak);
            expect_error(&format!("{transport:?}: joining with {weak:?}"), &refused, 400, "weak_password");
            let message = refused.1["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(why), "{weak:?}: the message says why: {message}");
        }
        let short = join(&kept, "harbour 7");
        expect_error("a short password", &short, 400, "weak_password");
        assert!(text(&short.1["error"], "message").contains("at least 10 characters"), "{:?}", short.1);
        assert_eq!(codes(&open_invites(&client, &alice)), [kept.as_str()], "a refused join uses no invite");
        client.join(&kept, &handle);
        assert!(open_invites(&client, &alice).is_empty(), "a used invite is no longer open");
    }
}
