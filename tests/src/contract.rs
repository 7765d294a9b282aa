//! The route table of docs/api.md, read at test time, and matching it against the
//! node's `/openapi.json`, so the contract page, the OpenAPI document and the router
//! cannot drift apart unnoticed; and `AnswerContract`, which checks every JSON answer
//! a black-box test receives against the schema `/openapi.json` gives it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// One route: an upper-case method and a path whose parameters are `{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
}

impl std::fmt::Display for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.method, self.path)
    }
}

/// The routes of the table in docs/api.md. A segment listing alternatives, like
/// `{thumb|display|original}`, becomes one route per alternative.
pub fn documented_routes() -> Vec<Route> {
    let api_md = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let text = std::fs::read_to_string(&api_md).unwrap_or_else(|error| panic!("reading {}: {error}", api_md.display()));
    routes_in_markdown(&text)
}

/// Parses rows like ``| `GET /api/v1/posts/{id}` | … |`` (the first code span of a
/// table row), dropping query strings.
pub fn routes_in_markdown(markdown: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    for line in markdown.lines() {
        let Some(row) = line.trim().strip_prefix("| `") else { continue };
        let Some(code) = row.split('`').next() else { continue };
        let code = code.replace("\\|", "|");
        let mut words = code.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else { continue };
        if !method.chars().all(|c| c.is_ascii_uppercase()) || !path.starts_with('/') {
            continue;
        }
        let path = path.split('?').next().unwrap_or(path);
        for concrete in expand_alternatives(path) {
            routes.push(Route { method: method.to_owned(), path: concrete });
        }
    }
    routes
}

fn expand_alternatives(path: &str) -> Vec<String> {
    let mut paths = vec![String::new()];
    for segment in path.split('/').skip(1) {
        let alternatives: Vec<&str> = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) if inner.contains('|') => inner.split('|').collect(),
            _ => vec![segment],
        };
        paths = paths
            .iter()
            .flat_map(|prefix| alternatives.iter().map(move |alternative| format!("{prefix}/{alternative}")))
            .collect();
    }
    paths
}

/// Every (method, path template) in an OpenAPI document's `paths`.
pub fn openapi_operations(openapi: &serde_json::Value) -> Vec<Route> {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
    let mut operations = Vec::new();
    if let Some(paths) = openapi["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.push(Route { method: method.to_ascii_uppercase(), path: path.clone() });
                }
            }
        }
    }
    operations
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// True when an OpenAPI template covers a documented route: same method, same
/// number of segments, literals equal, a documented parameter matched by a template
/// parameter (names may differ), a documented literal by an equal literal or a
/// template parameter (`{variant}` covers `thumb`).
pub fn template_covers(template: &Route, documented: &Route) -> bool {
    let template_segments: Vec<&str> = template.path.split('/').collect();
    let documented_segments: Vec<&str> = documented.path.split('/').collect();
    template.method == documented.method
        && template_segments.len() == documented_segments.len()
        && template_segments.iter().zip(&documented_segments).all(|(template_segment, documented_segment)| {
            if is_parameter(documented_segment) {
                is_parameter(template_segment)
            } else {
                template_segment == documented_segment || is_parameter(template_segment)
            }
        })
}

/// Real values to put into path parameters when calling every route.
#[derive(Debug, Clone)]
pub struct PathValues {
    pub post_id: String,
    pub media_id: String,
    pub media_sha256: String,
    pub handle: String,
}

/// A template with its parameters replaced by real values, chosen by the parameter's
/// name and the segment before it (`posts/{id}` → a post id, `users/{handle}` → a
/// handle, `media/{sha256}` → a hash, `media/{id}` → a media id, anything else → a
/// media variant name).
pub fn concrete_path(template: &str, values: &PathValues) -> String {
    let segments: Vec<&str> = template.split('/').collect();
    let mut concrete = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        if !is_parameter(segment) {
            concrete.push(segment.to_string());
            continue;
        }
        let name = segment.trim_matches(|c| c == '{' || c == '}').to_ascii_lowercase();
        let previous = if index > 0 { segments[index - 1] } else { "" };
        let value = if name.contains("sha") || name.contains("hash") {
            &values.media_sha256
        } else if previous == "posts" {
            &values.post_id
        } else if previous == "users" || name.contains("handle") {
            &values.handle
        } else if previous == "media" {
            &values.media_id
        } else {
            "thumb"
        };
        concrete.push(value.to_owned());
    }
    concrete.join("/")
}

/// The answers an OpenAPI document promises, checked with a JSON Schema (2020-12)
/// validator: the schema of the operation (method and path template) and status
/// (or `default`) an answer is for.
pub struct AnswerContract {
    document: Value,
    /// Validators by (method, template, documented status), built on first use.
    validators: Mutex<HashMap<(String, String, String), Arc<jsonschema::Validator>>>,
}

impl AnswerContract {
    /// The contract of a node's `/openapi.json`.
    pub fn new(document: Value) -> AnswerContract {
        AnswerContract { document, validators: Mutex::new(HashMap::new()) }
    }

    /// `Err` with what is wrong when `body`, the JSON answer with `status` to
    /// `method` `path` (query allowed), is not what the document promises.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        let method = method.to_ascii_lowercase();
        let Some(template) = self.template_for(&method, path) else {
            if status >= 400 {
                return self.validate(
                    ("*".into(), "*".into(), "default".into()),
                    json!({"$ref": "#/components/schemas/Error"}),
                    body,
                );
            }
            return Err(format!("no operation for {method} {path} in /openapi.json answers {status}"));
        };
        let responses = &self.document["paths"][&template][&method]["responses"];
        let status_key =
            if responses.get(status.to_string()).is_some() { status.to_string() } else { "default".to_owned() };
        let Some(response) = responses.get(&status_key) else {
            return Err(format!("/openapi.json documents neither {status} nor a default for {method} {template}"));
        };
        let Some(schema) = response["content"].get("application/json").map(|media| media["schema"].clone()) else {
            let documented: Vec<&String> =
                response["content"].as_object().map(|content| content.keys().collect()).unwrap_or_default();
            return Err(format!("{method} {template} {status_key} is documented as {documented:?}, not as JSON"));
        };
        self.validate((method, template, status_key), schema, body)
    }

    fn validate(&self, key: (String, String, String), schema: Value, body: &Value) -> Result<(), String> {
        let validator = {
            let mut validators = self.validators.lock().expect("validators lock");
            match validators.get(&key) {
                Some(validator) => validator.clone(),
                None => {
                    // The schema at the root of a document holding the components, so
                    // its `#/components/schemas/…` references resolve.
                    let rooted = json!({
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "components": self.document["components"],
                        "allOf": [schema],
                    });
                    let validator = Arc::new(
                        jsonschema::draft202012::new(&rooted)
                            .map_err(|error| format!("the schema of {key:?} is not valid JSON Schema: {error}"))?,
                    );
                    validators.insert(key.clone(), validator.clone());
                    validator
                }
            }
        };
        let errors: Vec<String> =
            validator.iter_errors(body).take(5).map(|error| format!("at {}: {error}", error.instance_path())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{} {} {}: {}", key.0, key.1, key.2, errors.join("; ")))
        }
    }

    /// The path template of the document's operations that `path` matches for
    /// `method`, the most literal one where several do (`/api/v1/media/{id}/avatar`
    /// before `/api/v1/media/{id}/{variant}`), as the router's order has it.
    fn template_for(&self, method: &str, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.document["paths"].as_object()?;
        paths
            .iter()
            .filter(|(_, item)| item.get(method).is_some())
            .filter_map(|(template, _)| {
                let template_segments: Vec<&str> = template.split('/').collect();
                let matches = template_segments.len() == segments.len()
                    && template_segments.iter().zip(&segments).all(|(expected, actual)| {
                        if is_parameter(expected) {
                            !actual.is_empty()
                        } else {
                            expected == actual
                        }
                    });
                let literals = template_segments.iter().filter(|segment| !is_parameter(segment)).count();
                matches.then_some((literals, template))
            })
            .max_by_key(|(literals, _)| *literals)
            .map(|(_, template)| template.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_page_lists_every_route_once() {
        let routes = documented_routes();
        let listed: Vec<String> = routes.iter().map(Route::to_string).collect();
        for expected in [
            "GET /healthz",
            "POST /api/v1/accounts",
            "PUT /api/v1/media/{sha256}",
            "GET /api/v1/media/{id}/thumb",
            "GET /api/v1/media/{id}/original",
            "GET /api/v1/users/{handle}/posts",
            "GET /api/v1/search",
            "DELETE /api/v1/sessions",
        ] {
            assert!(listed.iter().any(|route| route == expected), "{expected} missing from {listed:#?}");
        }
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "{listed:#?}");
    }

    #[test]
    fn templates_cover_documented_routes_whatever_their_parameter_names() {
        let route = |method: &str, path: &str| Route { method: method.to_owned(), path: path.to_owned() };
        assert!(template_covers(
            &route("GET", "/api/v1/media/{media_id}/{variant}"),
            &route("GET", "/api/v1/media/{id}/thumb")
        ));
        assert!(template_covers(&route("GET", "/api/v1/media/{id}/thumb"), &route("GET", "/api/v1/media/{id}/thumb")));
        assert!(!template_covers(
            &route("GET", "/api/v1/media/{id}/display"),
            &route("GET", "/api/v1/media/{id}/thumb")
        ));
        assert!(!template_covers(&route("PUT", "/api/v1/posts/like"), &route("PUT", "/api/v1/posts/{id}/like")));
        assert!(!template_covers(&route("POST", "/api/v1/posts/{id}"), &route("GET", "/api/v1/posts/{id}")));
    }

    #[test]
    fn concrete_paths_use_real_values() {
        let values =
            PathValues { post_id: "P".into(), media_id: "M".into(), media_sha256: "S".into(), handle: "H".into() };
        assert_eq!(concrete_path("/api/v1/posts/{id}/like", &values), "/api/v1/posts/P/like");
        assert_eq!(concrete_path("/api/v1/media/{sha256}", &values), "/api/v1/media/S");
        assert_eq!(concrete_path("/api/v1/media/{id}/{variant}", &values), "/api/v1/media/M/thumb");
        assert_eq!(concrete_path("/api/v1/users/{handle}/follow", &values), "/api/v1/users/H/follow");
    }
}
