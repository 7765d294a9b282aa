//! Fuzzes the API's JSON request bodies through the real router: a fuzzed body goes to
//! one of the JSON routes with one of several kinds of `Authorization`, against a real
//! `Api` over a real `Store` in a temporary data dir (made once per process). Any
//! answer is fine except a panic or a 500: a body can be wrong, never break the node.
//!
//! Input: `[route selector][auth selector][body...]`.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use edgenode::api::{Api, NodeInfo};
use edgenode::config::Config;
use edgenode::media::{MediaLimits, Pipeline};
use edgenode::store::Store;
use http::{header, Method, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;

const CLAIM_CODE: &str = "fuzz-claim-code";
const CONTROL_TOKEN: &str = "fuzz-control-token";

/// One node with a claimed admin account and one post, shared by every input.
struct Fixture {
    api: Api,
    admin_token: String,
    post_id: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // `fuzz/run` points TMPDIR at a directory it deletes afterwards.
        let data_dir = std::env::temp_dir().join(format!("edgenode-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let config = Config { data_dir: data_dir.clone(), open_registration: true, ..Config::default() };
        let store = Arc::new(Store::open(&data_dir).expect("the fuzz store opens in a fresh temporary dir"));
        let node = NodeInfo {
            name: "fuzz".into(),
            region: String::new(),
            roles: vec!["home".into()],
            pin: "sha256/fuzz".into(),
            addresses: vec!["127.0.0.1:8443".into()],
            base_url: NodeInfo::base_url("fuzz", 8443, None),
        };
        let pipeline = Pipeline::new(MediaLimits {
            upload_bytes_max: 64 * 1024,
            pixels_max: 64 * 64,
            workers: 1,
            decoded_bytes_in_flight_max: 1024 * 1024,
        });
        let api = Api::new(&config, store, pipeline, node, Some(CLAIM_CODE.into())).with_control_token(CONTROL_TOKEN);

        let body = format!(r#"{{"handle":"fuzzadmin","password":"correct horse battery","claim":"{CLAIM_CODE}"}}"#);
        let created = json_of(&send(&api, "/api/v1/accounts", None, body.into_bytes()), StatusCode::CREATED);
        let admin_token = created["token"].as_str().expect("account answer has a token").to_owned();
        let body = br#"{"caption":"a #fuzz post","visibility":"public"}"#.to_vec();
        let post = json_of(&send(&api, "/api/v1/posts", Some(&admin_token), body), StatusCode::CREATED);
        let post_id = post["id"].as_str().expect("post answer has an id").to_owned();
        Fixture { api, admin_token, post_id }
    })
}

fn send(api: &Api, path: &str, authorization: Option<&str>, body: Vec<u8>) -> Response<Bytes> {
    let mut request =
        Request::builder().method(Method::POST).uri(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, format!("Bearer {value}"));
    }
    api.handle(request.body(Bytes::from(body).into()).expect("fuzz requests are well-formed"))
}

fn json_of(response: &Response<Bytes>, expected: StatusCode) -> serde_json::Value {
    let body = String::from_utf8_lossy(response.body());
    assert_eq!(response.status(), expected, "fixture setup failed: {body}");
    serde_json::from_slice(response.body()).expect("fixture answers are JSON")
}

fuzz_target!(|input: &[u8]| {
    let [route, auth, body @ ..] = input else { return };
    let fixture = fixture();
    let comments_of_post = format!("/api/v1/posts/{}/comments", fixture.post_id);
    let path = match route % 6 {
        0 => "/api/v1/accounts",
        1 => "/api/v1/sessions",
        2 => "/api/v1/posts",
        3 => comments_of_post.as_str(),
        4 => "/api/v1/posts/no-such-post/comments",
        _ => "/api/v1/node/peers/join",
    };
    let authorization = match auth % 4 {
        0 => None,
        1 => Some(fixture.admin_token.as_str()),
        2 => Some(CONTROL_TOKEN),
        _ => Some("not-a-session-token"),
    };
    let response = send(&fixture.api, path, authorization, body.to_vec());
    assert_ne!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "POST {path} answered 500: {}",
        String::from_utf8_lossy(response.body())
    );
});
