//! The operator's metrics listener (`metrics_listen`): plain HTTP/1.1 on an address
//! the operator chooses (loopback, or a management network), answering only
//! `GET /metrics`, without credentials. Everything else stays behind HTTPS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{call_service, finish_response, shutdown_requested, NetError, Service};
use crate::api::{error_response, MetricsListener, RequestBody};

/// Scrapers connected at once; more wait in the kernel's backlog.
const SCRAPERS_MAX: usize = 16;
const SCRAPE_TIMEOUT_MS: u64 = 10_000;

pub async fn bind_metrics(address: SocketAddr) -> Result<TcpListener, NetError> {
    TcpListener::bind(address).await.map_err(|source| NetError::Listen { address, protocol: "TCP (metrics)", source })
}

/// Serves `/metrics` on `listener` until shutdown.
pub async fn serve_metrics<S: Service>(listener: TcpListener, service: Arc<S>, shutdown: watch::Receiver<bool>) {
    let answer = move |request, remote| scrape(request, service.clone(), remote);
    serve_plain_http1(listener, SCRAPERS_MAX, Duration::from_millis(SCRAPE_TIMEOUT_MS), shutdown, answer).await;
}

/// Serves plain HTTP/1.1 on `listener` until shutdown, each connection with `answer`:
/// at most `connections_max` at once (more wait in the kernel's backlog), each for at
/// most `timeout`. The plain listeners (metrics, onboarding) differ only in `answer`.
pub(super) async fn serve_plain_http1<A, F>(
    listener: TcpListener,
    connections_max: usize,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    answer: A,
) where
    A: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let connections = Arc::new(tokio::sync::Semaphore::new(connections_max));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown_requested(&mut shutdown) => return,
        };
        let Ok((tcp, remote)) = accepted else { continue };
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| answer(request, remote));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(timeout, connection).await;
        });
    }
}

async fn scrape<S: Service>(
    request: Request<Incoming>,
    service: Arc<S>,
    remote: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut head, _body) = request.into_parts();
    let mut response = if head.method == http::Method::GET && head.uri.path() == "/metrics" {
        super::annotate(&mut head, crate::api::Transport::Http1, remote);
        head.extensions.insert(MetricsListener);
        call_service(&service, Request::from_parts(head, RequestBody::Memory(Bytes::new()))).await
    } else {
        error_response(StatusCode::NOT_FOUND, "not_found", "this listener serves only GET /metrics")
    };
    finish_response(&mut response);
    Ok(response.map(Full::new))
}
