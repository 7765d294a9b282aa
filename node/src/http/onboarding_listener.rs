//! The onboarding listener (`onboarding_listen`): plain HTTP/1.1 that a phone
//! reaches before it trusts this node. It serves only trust onboarding (the page and
//! the CA downloads, `api/onboarding.rs`) and ACME HTTP-01 answers; `/` is the
//! onboarding page; every other request is redirected to the same path over HTTPS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics_listener::serve_plain_http1;
use super::{call_service, finish_response, NetError, Service};
use crate::api::RequestBody;

/// Phones being onboarded at once; more wait in the kernel's backlog.
const CONNECTIONS_MAX: usize = 64;
const CONNECTION_TIMEOUT_MS: u64 = 30_000;
/// Paths served here as they are; `/` is the onboarding page.
const SERVED: &[&str] = &["/onboarding", "/ca.crt", "/ca.pem", "/ca.mobileconfig"];
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

pub async fn bind_onboarding(address: SocketAddr) -> Result<TcpListener, NetError> {
    TcpListener::bind(address).await.map_err(|source| NetError::Listen {
        address,
        protocol: "TCP (onboarding)",
        source,
    })
}

/// Serves onboarding on `listener` until shutdown; redirects go to HTTPS on `https_port`.
pub async fn serve_onboarding<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    https_port: u16,
    shutdown: watch::Receiver<bool>,
) {
    let answer = move |request, remote| answer(request, service.clone(), remote, https_port);
    serve_plain_http1(listener, CONNECTIONS_MAX, Duration::from_millis(CONNECTION_TIMEOUT_MS), shutdown, answer).await;
}

async fn answer<S: Service>(
    request: Request<Incoming>,
    service: Arc<S>,
    remote: SocketAddr,
    https_port: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut head, _body) = request.into_parts();
    let path = head.uri.path().to_owned();
    let readable = head.method == http::Method::GET || head.method == http::Method::HEAD;
    let mut response =
        if readable && (path == "/" || SERVED.contains(&path.as_str()) || path.starts_with(ACME_CHALLENGE_PREFIX)) {
            if path == "/" {
                let query = head.uri.query().map(|query| format!("?{query}")).unwrap_or_default();
                if let Ok(uri) = format!("/onboarding{query}").parse() {
                    head.uri = uri;
                }
            }
            super::annotate(&mut head, crate::api::Transport::Http1, remote);
            call_service(&service, Request::from_parts(head, RequestBody::Memory(Bytes::new()))).await
        } else {
            redirect_to_https(&head, https_port)
        };
    finish_response(&mut response);
    Ok(response.map(Full::new))
}

/// 308 to the same path and query over HTTPS, on the host the client asked for.
fn redirect_to_https(head: &http::request::Parts, https_port: u16) -> Response<Bytes> {
    let host = head.headers.get(header::HOST).and_then(|value| value.to_str().ok());
    let Some(host) = crate::api::request_host(host) else {
        return crate::api::error_response(StatusCode::BAD_REQUEST, "bad_host", "this listener needs a Host header");
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path_and_query = head.uri.path_and_query().map_or("/", |path| path.as_str());
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, format!("https://{host}{port}{path_and_query}"))
        .body(Bytes::new())
        .expect("a valid response")
}
