//! Account care and an admin who can help, over HTTP/1.1, HTTP/2 and HTTP/3: a
//! person changes their password (other sessions signed out if they ask), lists and
//! revokes their sessions, makes scoped personal access tokens for scripts and revokes
//! them; an admin lists users in pages, disables and enables them, and issues one-time
//! reset codes. The refusals are checked as carefully as the successes: a disabled
//! account's sign-in, session and token; an idle session; a revoked token; a read
//! token writing. Two siblings show the same holds on every replica.

use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_status, text};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Replicas agree within this, on loopback, for the few records here.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
const NEW_PASSWORD: &str = "lanterns along the quay 77";

fn change_password(client: &Client, token: &str, current: &str, new: &str, sign_out: bool) -> (u16, Value) {
    let body = json!({"current_password": current, "new_password": new, "sign_out_other_sessions": sign_out});
    client.put_json("/api/v1/me/password", Some(token), &body)
}

/// A new personal access token of `scope`: (token_id, token).
fn make_token(client: &Client, account: &Account, name: &str, scope: &str) -> (String, String) {
    let body = json!({"name": name, "scope": scope});
    let made = expect_status(
        &format!("{} makes a {scope} token", account.handle),
        client.post_json("/api/v1/me/tokens", Some(&account.token), &body),
        201,
    );
    assert_eq!(made["scope"], json!(scope), "{made}");
    assert_eq!(made["name"], json!(name), "{made}");
    (text(&made, "token_id").to_owned(), text(&made, "token").to_owned())
}

fn sign_in_with(client: &Client, handle: &str, password: &str) -> String {
    let answer = expect_status(&format!("{handle} signs in"), client.log_in(handle, password), 200);
    text(&answer, "token").to_owned()
}

fn follow(client: &Client, token: &str, handle: &str) -> (u16, Value) {
    client.send_json("PUT", &format!("/api/v1/users/{handle}/follow"), Some(token), &json!({}))
}

fn admin_post(client: &Client, admin: &Account, path: &str) -> (u16, Value) {
    client.post_json(path, Some(&admin.token), &json!({}))
}

fn reset_code(client: &Client, admin: &Account, handle: &str) -> String {
    let path = format!("/api/v1/admin/users/{handle}/reset-code");
    let issued = expect_status("issuing a reset code", admin_post(client, admin, &path), 200);
    assert!(issued["expires_at"].as_u64().is_some_and(|at| at > 0), "{issued}");
    text(&issued, "code").to_owned()
}

fn reset_password(client: &Client, handle: &str, code: &str, new_password: &str) -> (u16, Value) {
    let body = json!({"handle": handle, "code": code, "new_password": new_password});
    client.post_json("/api/v1/password-reset", None, &body)
}

/// Every page of the admin's list of users, `limit` a page.
fn all_users(client: &Client, admin: &Account, limit: usize) -> Vec<Value> {
    let mut users = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let path = format!("/api/v1/admin/users?limit={limit}&cursor={cursor}");
        let page = expect_status("listing users", client.get_json(&path, Some(&admin.token)), 200);
        let items = page["items"].as_array().unwrap_or_else(|| panic!("{{items}}: {page}"));
        assert!(items.len() <= limit, "{page}");
        users.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return users,
        }
    }
    panic!("more than 100 pages of users");
}

#[test]
fn a_person_looks_after_their_password_sessions_and_tokens() {
    let node = Node::start(NodeOptions::default());
    let setup = Client::new(&node, Transport::Http1);
    let alice = setup.claim_admin(&node, "alice");

    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        let handle = format!("bob_{}", format!("{transport:?}").to_lowercase());
        let bob = client.join(&client.create_invite(&alice), &handle);
        let laptop = sign_in_with(&client, &handle, PASSWORD);

        // A wrong current password changes nothing (and counts as a sign-in guess).
        let wrong = change_password(&client, &bob.token, "not my password at all", NEW_PASSWORD, true);
        expect_error(&format!("{transport:?}: wrong current password"), &wrong, 403, "wrong_password");
        let weak = change_password(&client, &bob.token, PASSWORD, "password123", true);
        expect_error("a weak new password", &weak, 400, "weak_password");
        expect_status("the laptop is still signed in", client.get_json("/api/v1/feed", Some(&laptop)), 200);

        // Sessions: both listed, the caller's marked; one revoked by id.
        let listed = expect_status("sessions", client.get_json("/api/v1/me/sessions", Some(&bob.token)), 200);
        let sessions = listed["items"].as_array().expect("items").clone();
        assert_eq!(sessions.len(), 2, "{listed}");
        assert_eq!(sessions.iter().filter(|session| session["current"] == json!(true)).count(), 1, "{listed}");
        assert!(sessions.iter().all(|session| session["last_seen_at"].as_u64().is_some()), "{listed}");
        let phone = sign_in_with(&client, &handle, PASSWORD);
        let listed = expect_status("sessions", client.get_json("/api/v1/me/sessions", Some(&phone)), 200);
        let other_ids = listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|session| session["current"] == json!(false))
            .map(|session| text(session, "session_id").to_owned())
            .collect::<Vec<_>>();
        assert_eq!(other_ids.len(), 2, "the first session and the laptop: {listed}");
        for session_id in &other_ids {
            let revoke =
                client.request("DELETE", &format!("/api/v1/me/sessions/{session_id}"), Some(&phone), &[], vec![]);
            assert_eq!(revoke.status, 204, "{transport:?}: revoking a session: {}", revoke.body_text());
        }
        expect_error("a revoked session", &client.get_json("/api/v1/feed", Some(&laptop)), 401, "unauthorized");
        expect_error("the other revoked one", &client.get_json("/api/v1/feed", Some(&bob.token)), 401, "unauthorized");
        let unknown = client.delete_json(&format!("/api/v1/me/sessions/{}", other_ids[0]), Some(&phone));
        expect_error("revoking it again", &unknown, 404, "not_found");
        let bob = Account { token: phone.clone(), ..bob };

        // Tokens: shown once, listed without the secret, scoped.
        let (_, read_token) = make_token(&client, &bob, "photo frame", "read");
        let (write_id, write_token) = make_token(&client, &bob, "backup script", "write");
        let listed = expect_status("tokens", client.get_json("/api/v1/me/tokens", Some(&phone)), 200);
        let names: Vec<&str> =
            listed["items"].as_array().expect("items").iter().map(|token| text(token, "name")).collect();
        assert_eq!(names, ["photo frame", "backup script"], "{listed}");
        assert!(!listed.to_string().contains(&read_token) && !listed.to_string().contains(&write_token), "{listed}");
        expect_status("a read token reads", client.get_json("/api/v1/feed", Some(&read_token)), 200);
        expect_error("a read token writing", &follow(&client, &read_token, "alice"), 403, "read_only_token");
        let post = json!({"caption": "from a script", "media": [], "visibility": "public"});
        let posted = client.post_json("/api/v1/posts", Some(&read_token), &post);
        expect_error("a read token posting", &posted, 403, "read_only_token");
        expect_status("a write token writes", follow(&client, &write_token, "alice"), 200);
        let by_token = change_password(&client, &write_token, PASSWORD, NEW_PASSWORD, false);
        expect_error("a token changing the password", &by_token, 403, "session_required");
        let by_token =
            client.post_json("/api/v1/me/tokens", Some(&write_token), &json!({"name": "x", "scope": "write"}));
        expect_error("a token making tokens", &by_token, 403, "session_required");
        let revoke = client.request("DELETE", &format!("/api/v1/me/tokens/{write_id}"), Some(&phone), &[], vec![]);
        assert_eq!(revoke.status, 204, "revoking a token: {}", revoke.body_text());
        expect_error("a revoked token", &follow(&client, &write_token, "alice"), 401, "unauthorized");
        let signing_out = client.delete_json("/api/v1/sessions", Some(&read_token));
        expect_error("a token is no session to sign out", &signing_out, 403, "session_required");
        let again = client.delete_json(&format!("/api/v1/me/tokens/{write_id}"), Some(&phone));
        expect_error("revoking it again", &again, 404, "not_found");

        // The password changes; every other session is signed out, this one stays.
        let tablet = sign_in_with(&client, &handle, PASSWORD);
        let changed = change_password(&client, &phone, PASSWORD, NEW_PASSWORD, true);
        let changed = expect_status(&format!("{transport:?}: changing the password"), changed, 200);
        assert_eq!(changed["signed_out_other_sessions"], json!(true), "{changed}");
        expect_status("the session that changed it", client.get_json("/api/v1/feed", Some(&phone)), 200);
        expect_error("another session", &client.get_json("/api/v1/feed", Some(&tablet)), 401, "unauthorized");
        expect_status("tokens are not sessions", client.get_json("/api/v1/feed", Some(&read_token)), 200);
        expect_error("the old password", &client.log_in(&handle, PASSWORD), 401, "bad_credentials");
        let kept = sign_in_with(&client, &handle, NEW_PASSWORD);
        // Without signing out, other sessions stay.
        let changed = change_password(&client, &phone, NEW_PASSWORD, PASSWORD, false);
        expect_status("changing it back", changed, 200);
        expect_status("the other session stays", client.get_json("/api/v1/feed", Some(&kept)), 200);
    }
}

#[test]
fn an_admin_lists_disables_enables_and_issues_reset_codes() {
    let node = Node::start(NodeOptions::default());
    let setup = Client::new(&node, Transport::Http2);
    let alice = setup.claim_admin(&node, "alice");

    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        let handle = format!("carol_{}", format!("{transport:?}").to_lowercase());
        let carol = client.join(&client.create_invite(&alice), &handle);
        let (_, carol_token) = make_token(&client, &carol, "frame", "read");

        // The list, in pages of one, holds everyone once, by handle.
        let users = all_users(&client, &alice, 1);
        let handles: Vec<&str> = users.iter().map(|user| text(user, "handle")).collect();
        let mut sorted = handles.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(handles, sorted, "{transport:?}: by handle, each once: {users:?}");
        let row = users.iter().find(|user| user["handle"] == json!(handle)).expect("carol is listed");
        assert_eq!((row["admin"].clone(), row["disabled"].clone()), (json!(false), json!(false)), "{row}");
        assert_eq!(row["storage_bytes_used"], json!(0), "{row}");
        assert!(row["last_seen_at"].as_u64().is_some(), "carol signed in: {row}");
        expect_error(
            "carol listing users",
            &client.get_json("/api/v1/admin/users", Some(&carol.token)),
            403,
            "forbidden",
        );
        let by_carol = admin_post(&client, &carol, "/api/v1/admin/users/alice/disable");
        expect_error("carol disabling alice", &by_carol, 403, "forbidden");
        let own = admin_post(&client, &alice, "/api/v1/admin/users/alice/disable");
        expect_error("alice disabling herself", &own, 400, "cannot_disable_self");
        let nobody = admin_post(&client, &alice, "/api/v1/admin/users/nobody/disable");
        expect_error("an unknown user", &nobody, 404, "not_found");

        // Disabled: no sign-in, no session, no token.
        let path = format!("/api/v1/admin/users/{handle}/disable");
        let row = expect_status(&format!("{transport:?}: disabling"), admin_post(&client, &alice, &path), 200);
        assert_eq!(row["disabled"], json!(true), "{row}");
        expect_error("a disabled sign-in", &client.log_in(&handle, PASSWORD), 403, "account_disabled");
        let wrong = client.log_in(&handle, "not the password at all");
        expect_error("a wrong password tells nothing", &wrong, 401, "bad_credentials");
        let session = client.get_json("/api/v1/feed", Some(&carol.token));
        expect_error("a disabled account's session", &session, 403, "account_disabled");
        let token = client.get_json("/api/v1/feed", Some(&carol_token));
        expect_error("a disabled account's token", &token, 403, "account_disabled");
        let listed = all_users(&client, &alice, 100);
        let row = listed.iter().find(|user| user["handle"] == json!(handle)).expect("listed");
        assert_eq!(row["disabled"], json!(true), "{row}");

        // Enabled: signs in again; the old session stays signed out, the token works.
        let path = format!("/api/v1/admin/users/{handle}/enable");
        let row = expect_status("enabling", admin_post(&client, &alice, &path), 200);
        assert_eq!(row["disabled"], json!(false), "{row}");
        let carol_again = sign_in_with(&client, &handle, PASSWORD);
        expect_error(
            "the session from before",
            &client.get_json("/api/v1/feed", Some(&carol.token)),
            401,
            "unauthorized",
        );
        expect_status("the token works again", client.get_json("/api/v1/feed", Some(&carol_token)), 200);

        // A reset code: one use, the admin never sees a password, sessions end.
        let code = reset_code(&client, &alice, &handle);
        expect_error(
            "a wrong code",
            &reset_password(&client, &handle, "7K3QZ-M9X2A", NEW_PASSWORD),
            401,
            "bad_reset_code",
        );
        expect_error("a weak password", &reset_password(&client, &handle, &code, "password123"), 400, "weak_password");
        let other = format!("bob_{}", format!("{transport:?}").to_lowercase());
        expect_error("another handle", &reset_password(&client, &other, &code, NEW_PASSWORD), 401, "bad_reset_code");
        let typed = code.to_lowercase().replace('-', " ");
        let reset =
            expect_status("the code, typed loosely", reset_password(&client, &handle, &typed, NEW_PASSWORD), 200);
        expect_status("the new session", client.get_json("/api/v1/feed", Some(text(&reset, "token"))), 200);
        expect_error("the code again", &reset_password(&client, &handle, &code, PASSWORD), 401, "bad_reset_code");
        expect_error("an earlier session", &client.get_json("/api/v1/feed", Some(&carol_again)), 401, "unauthorized");
        expect_error("the old password", &client.log_in(&handle, PASSWORD), 401, "bad_credentials");
        sign_in_with(&client, &handle, NEW_PASSWORD);
    }

    // An account the admin adds: no password anyone knows until the reset code is used.
    let added = expect_status(
        "alice adds dave",
        setup.post_json("/api/v1/admin/users", Some(&alice.token), &json!({"handle": "dave"})),
        201,
    );
    let code = text(&added, "reset_code").to_owned();
    expect_status("dave sets his password", reset_password(&setup, "dave", &code, NEW_PASSWORD), 200);
    sign_in_with(&setup, "dave", NEW_PASSWORD);
    let taken = setup.post_json("/api/v1/admin/users", Some(&alice.token), &json!({"handle": "dave"}));
    expect_error("a taken handle", &taken, 409, "handle_taken");
}

#[test]
fn a_session_unused_for_the_idle_timeout_is_signed_out() {
    let node = Node::start(NodeOptions::with_config("[sessions]\nidle_timeout_seconds = 2\n"));
    let setup = Client::new(&node, Transport::Http1);
    let alice = setup.claim_admin(&node, "alice");
    let invite = setup.create_invite(&alice);
    setup.join(&invite, "bob");

    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        let token = sign_in_with(&client, "bob", PASSWORD);
        // Used every 1.2 s, it lives past the 2 s timeout: idleness counts, not age.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1200));
            expect_status(
                &format!("{transport:?}: a session in use"),
                client.get_json("/api/v1/feed", Some(&token)),
                200,
            );
        }
        std::thread::sleep(Duration::from_millis(3000));
        let idle = client.get_json("/api/v1/feed", Some(&token));
        expect_error(&format!("{transport:?}: an idle session"), &idle, 401, "session_expired");
        expect_error("and it stays ended", &client.get_json("/api/v1/feed", Some(&token)), 401, "unauthorized");
    }
}

#[test]
fn account_care_holds_on_every_replica() {
    let [home, sibling] = preloaded_siblings(["care-home", "care-sibling"]);
    let at_home = Client::new(&home, Transport::Http2);
    let at_sibling = Client::new(&sibling, Transport::Http3);
    let nodes = [(&at_home, &home), (&at_sibling, &sibling)];
    let alice = at_home.claim_admin(&home, "alice");
    let bob = at_home.join(&at_home.create_invite(&alice), "bob");
    let (_, bob_token) = make_token(&at_home, &bob, "script", "write");
    converge(&nodes, CONVERGE_WITHIN);

    // A token made at home works on the sibling; a session there is the sibling's own.
    expect_status("bob's token on the sibling", follow(&at_sibling, &bob_token, "alice"), 200);
    let bob_there = sign_in_with(&at_sibling, "bob", PASSWORD);

    // Disabled at home: refused on the sibling once replicated.
    expect_status("disabling bob", admin_post(&at_home, &alice, "/api/v1/admin/users/bob/disable"), 200);
    converge(&nodes, CONVERGE_WITHIN);
    expect_error("bob signs in on the sibling", &at_sibling.log_in("bob", PASSWORD), 403, "account_disabled");
    expect_error(
        "bob's session there",
        &at_sibling.get_json("/api/v1/feed", Some(&bob_there)),
        403,
        "account_disabled",
    );
    expect_error("bob's token there", &follow(&at_sibling, &bob_token, "alice"), 403, "account_disabled");
    let listed = all_users(&at_sibling, &at_sibling.sign_in("alice"), 10);
    assert!(listed.iter().any(|user| user["handle"] == json!("bob") && user["disabled"] == json!(true)), "{listed:?}");

    // Enabled on the sibling (alice failing over): home lets bob in again.
    let alice_there = at_sibling.sign_in("alice");
    expect_status("enabling bob there", admin_post(&at_sibling, &alice_there, "/api/v1/admin/users/bob/enable"), 200);
    converge(&nodes, CONVERGE_WITHIN);
    let bob_home = sign_in_with(&at_home, "bob", PASSWORD);
    let bob_there = sign_in_with(&at_sibling, "bob", PASSWORD);

    // A password changed at home with "sign out everywhere" ends the sibling's session.
    let changed = change_password(&at_home, &bob_home, PASSWORD, NEW_PASSWORD, true);
    expect_status("bob changes his password at home", changed, 200);
    converge(&nodes, CONVERGE_WITHIN);
    expect_error("the sibling's session", &at_sibling.get_json("/api/v1/feed", Some(&bob_there)), 401, "unauthorized");
    expect_error("the old password there", &at_sibling.log_in("bob", PASSWORD), 401, "bad_credentials");
    sign_in_with(&at_sibling, "bob", NEW_PASSWORD);

    // A reset code issued at home is used on the sibling, once, everywhere.
    let code = reset_code(&at_home, &alice, "bob");
    converge(&nodes, CONVERGE_WITHIN);
    expect_status("the code on the sibling", reset_password(&at_sibling, "bob", &code, PASSWORD), 200);
    converge(&nodes, CONVERGE_WITHIN);
    expect_error(
        "the code again at home",
        &reset_password(&at_home, "bob", &code, NEW_PASSWORD),
        401,
        "bad_reset_code",
    );
    sign_in_with(&at_home, "bob", PASSWORD);

    // A token revoked on the sibling stops working at home.
    let bob_there = Account { token: sign_in_with(&at_sibling, "bob", PASSWORD), ..bob.clone() };
    let listed =
        expect_status("bob's tokens there", at_sibling.get_json("/api/v1/me/tokens", Some(&bob_there.token)), 200);
    let token_id = text(&listed["items"][0], "token_id").to_owned();
    let revoke =
        at_sibling.request("DELETE", &format!("/api/v1/me/tokens/{token_id}"), Some(&bob_there.token), &[], vec![]);
    assert_eq!(revoke.status, 204, "{}", revoke.body_text());
    converge(&nodes, CONVERGE_WITHIN);
    expect_error("the revoked token at home", &follow(&at_home, &bob_token, "alice"), 401, "unauthorized");
}
