//! The operator's metrics listener (`metrics_listen`): plain HTTP/1.1 on an address
//! the operator chooses (loopback, or a management network), answering only
//! `GET /metrics`, without credentials. Everything else stays behind HTTPS.

use std::convert::Infallible;
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
pub async fn serve_metrics<S: Service>(listener: TcpListener, service: Arc<S>, mut shutdown: watch::Receiver<bool>) {
    let scrapers = Arc::new(tokio::sync::Semaphore::new(SCRAPERS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown_requested(&mut shutdown) => return,
        };
        let Ok((tcp, remote)) = accepted else { continue };
        let Ok(permit) = scrapers.clone().try_acquire_owned() else { continue };
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = hyper::service::service_fn(move |request| scrape(request, service.clone(), remote));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS))
                .serve_connection(TokioIo::new(tcp), answer);
            let _ = tokio::time::timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS), connection).await;
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
