//! The CLI's way to the node running on this data dir: over HTTPS to the address it
//! serves on (`<data_dir>/serving-address`), checking its pinned key, with the control
//! token it wrote to `<data_dir>/control-token`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use edgenode::config::Config;
use edgenode::http::Identity;

/// How long a command waits for the node to answer one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The node running on this data dir, as the CLI reaches it: address, pin, control token.
pub struct LocalNode {
    target: SocketAddr,
    pin: String,
    control_token: String,
}

impl LocalNode {
    pub fn of(config: &Config) -> Result<LocalNode> {
        let identity = Identity::load(&config.data_dir)?;
        let target = serving_address(config);
        let control_token = std::fs::read_to_string(config.data_dir.join("control-token")).with_context(|| {
            format!("no node has run on {} yet: start it with `edgenode serve`", config.data_dir.display())
        })?;
        Ok(LocalNode { target, pin: identity.pin, control_token: control_token.trim().to_owned() })
    }

    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.call_within(CALL_TIMEOUT, method, path, body).await
    }

    /// As `call`, for work that may take longer than `CALL_TIMEOUT` (a backup's snapshot).
    pub async fn call_within(
        &self,
        timeout: Duration,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let call = call_json(self.target, &self.pin, method, path, Some(&self.control_token), body);
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer.with_context(|| format!("asking the node on {}", self.target)),
            Err(_) => bail!("the node on {} did not answer within {} s", self.target, timeout.as_secs()),
        }
    }
}

/// Where the node on this data dir answers: the address it wrote when it became ready
/// (whatever flags started it), else the configured one; an unspecified address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn serving_address(config: &Config) -> SocketAddr {
    let saved_address = std::fs::read_to_string(config.data_dir.join("serving-address")).ok();
    let mut target = saved_address.and_then(|address| address.trim().parse().ok()).unwrap_or(config.listen);
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    target
}

/// GET `path` from the local node over HTTPS, checking its pin.
pub async fn fetch_json(target: SocketAddr, pin: &str, path: &str, bearer: Option<&str>) -> Result<serde_json::Value> {
    call_json(target, pin, http::Method::GET, path, bearer, None).await
}

/// Calls `path` on the local node over HTTPS, checking its pin; an error answer
/// becomes an error with the node's message.
pub async fn call_json(
    target: SocketAddr,
    pin: &str,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    use http_body_util::{BodyExt, Full};
    let tls = edgenode::identity::pinned_client_config(pin.to_owned(), vec![b"http/1.1".to_vec()]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(target).await?;
    let server_name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = connector.connect(server_name, tcp).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // Ends when the answer is read and `sender` is dropped (or the node hangs up).
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            bytes::Bytes::from(serde_json::to_vec(&body)?)
        }
        None => bytes::Bytes::new(),
    };
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("node answered {status}: {}", error_message(&body));
    }
    if body.is_empty() {
        // 204 No Content (a DELETE): success with nothing to say.
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The message of an error answer (`{"error":{"code":"…","message":"…"}}`), or empty
/// when the body is not one.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|error| error["error"]["message"].as_str().or(error["message"].as_str()).map(str::to_owned))
        .unwrap_or_default()
}
