//! `/openapi.json` says the shapes of the answers, and the harness holds the node to
//! them: real answers pass the document's schemas, and the same answers fail a copy
//! of the document with one field's type changed, so the check can fail.

use edgenode_tests::checks::{expect_status, id_of};
use edgenode_tests::contract::AnswerContract;
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

#[test]
fn answers_match_the_documented_shapes_and_a_wrong_shape_is_caught() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let ada = client.claim_admin(&node, "ada");
    let photo = client.upload_jpeg(&ada, &distinct_photo(7));
    let post = client.create_post(&ada, "harbour at dawn #sea", &[&id_of(&photo)], "public");
    let post_id = id_of(&post);
    let feed = expect_status("ada's feed", client.get_json("/api/v1/feed", Some(&ada.token)), 200);
    let (status, document) = client.get_json("/openapi.json", None);
    assert_eq!(status, 200, "GET /openapi.json: {document}");

    // Every schema the document names is a real shape, not `{"type": "object"}`.
    let post_schema = &document["components"]["schemas"]["Post"];
    assert_eq!(post_schema["properties"]["caption"]["type"], json!("string"), "Post's schema: {post_schema}");
    let get_post = &document["paths"]["/api/v1/posts/{id}"]["get"]["responses"]["200"];
    assert_eq!(get_post["content"]["application/json"]["schema"]["$ref"], json!("#/components/schemas/Post"));

    let answers: [(&str, String, u16, &Value); 3] = [
        ("GET", format!("/api/v1/posts/{post_id}"), 200, &post),
        ("GET", "/api/v1/feed?limit=5".to_owned(), 200, &feed),
        ("PUT", format!("/api/v1/media/{}", id_of(&photo)), 201, &photo),
    ];
    let contract = AnswerContract::new(document.clone());
    for (method, path, status, body) in &answers {
        contract.check(method, path, *status, body).unwrap_or_else(|mismatch| panic!("{method} {path}: {mismatch}"));
    }
    let error = json!({"error": {"code": "not_found", "message": "no such post"}});
    contract.check("GET", "/api/v1/posts/0000", 404, &error).expect("an error answer has the Error shape");
    assert!(contract.check("GET", "/api/v1/posts/0000", 404, &json!({"error": "not_found"})).is_err());

    // A copy of the document in which a post's caption is a number: the very same
    // answers fail, and the message names the field.
    let mut wrong = document;
    wrong["components"]["schemas"]["Post"]["properties"]["caption"] = json!({"type": "integer"});
    let wrong = AnswerContract::new(wrong);
    for (method, path, status, body) in &answers[..2] {
        let mismatch = wrong.check(method, path, *status, body).expect_err("a caption is not an integer");
        assert!(mismatch.contains("caption"), "{method} {path}: the message names the field: {mismatch}");
    }
    // A status the route does not answer is checked as an error, and fails.
    assert!(contract.check("GET", &format!("/api/v1/posts/{post_id}"), 201, &post).is_err());
}
