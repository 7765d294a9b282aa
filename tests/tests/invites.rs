//! Invites people can pass on, and failover: a short invite code (`XXXXX-XXXXX`,
//! Crockford base32) that still admits when typed in lower case, with spaces or with
//! O for 0, handed out with a link to the node's own address and a QR code of it; a
//! claim code typed loosely; and a sibling of a claimed neighbourhood, which says it
//! is claimed (so sign-in does not go to "Set up") and refuses to be claimed again.

use std::time::Duration;

use edgenode::discovery::rules::host_label;
use edgenode_tests::checks::{expect_error, expect_status, text};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Replicas agree within this, on loopback, for the one account here.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Crockford's base32: no I, L, O or U.
const CROCKFORD_SYMBOLS: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn about(client: &Client) -> Value {
    expect_status("GET /api/v1/node", client.get_json("/api/v1/node", None), 200)
}

/// A code as someone might type it from a note: lower case, a space for the hyphen,
/// the letters o and l for the digits 0 and 1.
fn as_typed_by_hand(code: &str) -> String {
    code.to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l")
}

fn expect_invite_code_shape(code: &str) {
    let groups: Vec<&str> = code.split('-').collect();
    assert!(
        groups.len() == 2
            && groups
                .iter()
                .all(|group| group.len() == 5 && group.chars().all(|symbol| CROCKFORD_SYMBOLS.contains(symbol))),
        "an invite code is XXXXX-XXXXX in Crockford base32: {code:?}"
    );
}

#[test]
fn an_invite_is_short_links_to_the_node_and_admits_however_it_is_typed() {
    let node = Node::start(NodeOptions { name: "Harbour Box".to_owned(), ..NodeOptions::default() });
    let client = Client::new(&node, Transport::Http2);

    let node_info = about(&client);
    let base_url = format!("https://{}.local:{}/", host_label("Harbour Box"), node.addr().port());
    assert_eq!(node_info["base_url"], json!(base_url), "the address people use: {node_info}");
    assert_eq!(node_info["claimed"], json!(false), "{node_info}");

    // Alice types the claim code from the box's label in capitals, with spaces.
    let loose_claim = node.claim_code().to_uppercase().replace('-', " ");
    let body = json!({"handle": "alice", "password": PASSWORD, "claim": loose_claim});
    let created =
        expect_status("claiming with a loosely typed code", client.post_json("/api/v1/accounts", None, &body), 201);
    assert_eq!(created["admin"], json!(true), "{created}");
    let alice_token = text(&created, "token").to_owned();
    assert_eq!(about(&client)["claimed"], json!(true));

    let invite = expect_status(
        "alice creates an invite",
        client.post_json("/api/v1/invites", Some(&alice_token), &json!({})),
        201,
    );
    let code = text(&invite, "code");
    expect_invite_code_shape(code);
    assert_eq!(invite["link"], json!(format!("{base_url}#/join?code={code}")), "{invite}");
    let qr_svg = text(&invite, "qr_svg");
    assert!(qr_svg.starts_with("<svg") && qr_svg.ends_with("</svg>"), "an inline SVG element: {qr_svg}");

    // Bob copies it by hand; it admits him once.
    let bob = client.join(&as_typed_by_hand(code), "bob");
    assert_eq!(bob.handle, "bob");
    let again = json!({"handle": "carol", "password": PASSWORD, "invite": code});
    expect_error("the used invite again", &client.post_json("/api/v1/accounts", None, &again), 403, "bad_invite");

    // A second invite is a different code.
    let second =
        expect_status("a second invite", client.post_json("/api/v1/invites", Some(&alice_token), &json!({})), 201);
    assert_ne!(text(&second, "code"), code);
}

#[test]
fn a_sibling_of_a_claimed_neighbourhood_is_claimed_and_cannot_be_claimed_again() {
    let [home, sibling] = preloaded_siblings(["invites-home", "invites-sibling"]);
    let at_home = Client::new(&home, Transport::Http2);
    let at_sibling = Client::new(&sibling, Transport::Http3);
    assert_eq!(about(&at_sibling)["claimed"], json!(false), "nobody has an account yet");

    at_home.claim_admin(&home, "alice");
    converge(&[(&at_home, &home), (&at_sibling, &sibling)], CONVERGE_WITHIN);

    let sibling_info = about(&at_sibling);
    assert_eq!(sibling_info["claimed"], json!(true), "it holds alice's account: {sibling_info}");
    // The sibling was never claimed itself and still has its claim code: refused.
    let body = json!({"handle": "mallory", "password": PASSWORD, "claim": sibling.claim_code()});
    let answer = at_sibling.post_json("/api/v1/accounts", None, &body);
    expect_error("claiming a sibling that holds accounts", &answer, 409, "already_claimed");
    let body = json!({"handle": "mallory", "password": PASSWORD});
    let answer = at_sibling.post_json("/api/v1/accounts", None, &body);
    expect_error("signing up on the sibling without a code", &answer, 403, "invite_required");
    // Alice, failing over, signs in there and invites Bob from it (the replicated
    // admin may): the link points at the sibling.
    let alice = at_sibling.sign_in("alice");
    let invite = expect_status(
        "alice invites from the sibling",
        at_sibling.post_json("/api/v1/invites", Some(&alice.token), &json!({})),
        201,
    );
    let sibling_base_url = text(&sibling_info, "base_url");
    assert!(sibling_base_url.starts_with(&format!("https://{}.local:", host_label(sibling.name()))), "{sibling_info}");
    assert!(text(&invite, "link").starts_with(sibling_base_url), "{invite}");
    at_sibling.join(text(&invite, "code"), "bob");
}
