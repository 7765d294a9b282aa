//! ACME (RFC 8555) for boxes with a domain name: see `run`.
//!
//! Files in `<data_dir>/acme/` (all 0600, each written atomically): `account.json`
//! (the account key and URL, for the directory it was made on), `cert.pem` (the chain,
//! leaf first) and `key.pem`. The certificate's key is a fresh P-256 key per order,
//! never the node key: the certificate is public, and a leaked ACME key must not let
//! anyone pose as this node to its siblings, who trust the node key's pin.
//!
//! The decisions are sans-IO (`next_step`, `retry_delay`, `CertificateSummary::from_der`)
//! and tested below; `run` only carries them out. The node never waits for ACME: it
//! serves its CA's certificate (or the last good ACME one) while an order runs or
//! fails, and `ServingCertificates` stops presenting an ACME certificate at its expiry.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper_util::rt::TokioIo;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use super::{AcmeChallenges, ServingCertificates, Source};
use crate::config::AcmeConfig;
use crate::identity::{read_if_exists, write_private_file, IdentityError};

pub use crate::config::{ACME_CHALLENGE_HTTP_01 as CHALLENGE_HTTP_01, ACME_DOMAINS_MAX as DOMAINS_MAX};

const DIR_NAME: &str = "acme";
const ACCOUNT_FILE_NAME: &str = "account.json";
const CERTIFICATE_FILE_NAME: &str = "cert.pem";
const KEY_FILE_NAME: &str = "key.pem";
/// The version of `account.json`'s layout.
const ACCOUNT_FILE_VERSION: u32 = 1;

/// The first retry after a failed order, doubled after each failure up to the max.
const RETRY_DELAY_FIRST_SECONDS: u64 = 10;
const RETRY_DELAY_MAX_SECONDS: u64 = 3_600;
/// When nothing is due, the clock is looked at again at least this often: a box
/// without a real-time clock may boot with a wrong one and correct it later.
const CHECK_INTERVAL_MAX_SECONDS: i64 = 3_600;
/// A certificate is renewed when a third of its lifetime is left at most, whatever
/// `renew_days_before` says: with short-lived certificates (6 or 45 days) the window
/// would otherwise cover the whole lifetime and every new certificate would be due.
const RENEW_LIFETIME_DIVISOR: i64 = 3;

/// One HTTP request to the ACME server, connection and TLS included.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// One whole attempt: account, order, validation by the server, certificate.
const ATTEMPT_TIMEOUT_MS: u64 = 300_000;
/// How long the server may take to validate the challenges and to issue.
const ORDER_POLL_TIMEOUT_MS: u64 = 120_000;
/// An ACME response (directory, order, a certificate chain) is a few kilobytes.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// What failed in one attempt; each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0} — check directory_url, and that each domain reaches this node on port 80")]
    Server(#[from] instant_acme::Error),
    #[error("{0}")]
    Files(#[from] IdentityError),
    #[error("cannot read [tls.acme] directory_ca_file {path}: {reason} — it must hold PEM certificates")]
    DirectoryCa { path: PathBuf, reason: String },
    #[error("cannot make the certificate request: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the ACME server did not offer http-01 for {0}; this node answers only http-01")]
    NoHttp01(String),
    #[error("the order failed: {0} — check that each domain resolves to this node and that port 80 reaches onboarding_listen")]
    Order(String),
    #[error("the ACME server sent an unusable certificate: {0}")]
    Certificate(String),
    #[error("the attempt took longer than {ATTEMPT_TIMEOUT_MS} ms")]
    Timeout,
}

/// Keeps a certificate for `config.domains` from the ACME server: presents the last
/// one from `<data_dir>/acme/` when called, then returns the task that orders one when
/// there is none or it is near expiry, answers HTTP-01 through
/// `certificates.challenges()`, presents it with `certificates.set_named(Source::Acme,
/// …)`, and retries with backoff when the server cannot be reached (the node keeps
/// serving meanwhile), until `stop` turns true.
///
/// The stored certificate is presented before the task is spawned, so before the node
/// answers its first handshake: a task that loaded it on its first poll let a restarted
/// box show its own CA's certificate for its public name for a few milliseconds, which
/// a phone takes for an attack.
pub fn run(
    config: AcmeConfig,
    data_dir: PathBuf,
    certificates: Arc<ServingCertificates>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let span = tracing::info_span!("acme", directory = %config.directory_url);
    let dir = data_dir.join(DIR_NAME);
    let stored = span.in_scope(|| load_stored(&dir, &certificates));
    keep_certificate(config, dir, certificates, stored, stop).instrument(span)
}

async fn keep_certificate(
    config: AcmeConfig,
    dir: PathBuf,
    certificates: Arc<ServingCertificates>,
    stored: Option<CertificateSummary>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if config.challenge != CHALLENGE_HTTP_01 {
        tracing::error!(
            challenge = %config.challenge,
            "[tls.acme] challenge: only \"http-01\" is supported (answered on onboarding_listen); not ordering certificates"
        );
        return;
    }
    let domains = normalized_domains(&config.domains);
    if domains.is_empty() || domains.len() > DOMAINS_MAX {
        tracing::error!(
            n_domains = domains.len(),
            "[tls.acme] domains must list 1 to {DOMAINS_MAX} names; not ordering certificates"
        );
        return;
    }
    let mut current = stored;
    let mut failures: u32 = 0;
    let mut just_ordered = false;
    loop {
        let now = crate::os::unix_seconds();
        let wait_seconds = match next_step(now, current.as_ref(), &domains, config.renew_days_before) {
            Step::WaitUntil(renew_at) => {
                // Failures in a row end here, with a certificate that is not due; not
                // at a successful order, which may bring one due at once.
                failures = 0;
                just_ordered = false;
                wait_seconds(now, renew_at)
            }
            Step::Order(_) if just_ordered => {
                // The server issued a certificate that is due at once (a wrong clock?):
                // wait as after a failure rather than order again in a loop.
                failures += 1;
                let delay = retry_delay(failures);
                tracing::warn!(
                    retry_in_s = delay.as_secs(),
                    "the new certificate is already due for renewal; check the clock"
                );
                just_ordered = false;
                delay.as_secs()
            }
            Step::Order(reason) => {
                tracing::info!(?reason, ?domains, "ordering a certificate");
                let started_ms = crate::os::now_ms();
                let attempt = tokio::time::timeout(
                    Duration::from_millis(ATTEMPT_TIMEOUT_MS),
                    order_certificate(&config, &dir, &domains, &certificates),
                );
                let result = tokio::select! {
                    result = attempt => result.unwrap_or(Err(AcmeError::Timeout)),
                    _ = stop.wait_for(|stopped| *stopped) => return,
                };
                match result {
                    Ok(summary) => {
                        tracing::info!(
                            not_after_unix_seconds = summary.not_after_unix_seconds,
                            took_ms = crate::os::now_ms().saturating_sub(started_ms),
                            "serving the new ACME certificate"
                        );
                        current = Some(summary);
                        just_ordered = true;
                        continue;
                    }
                    Err(error) => {
                        failures += 1;
                        let delay = retry_delay(failures);
                        tracing::warn!(%error, failures, retry_in_s = delay.as_secs(), "could not get a certificate; serving the last good one meanwhile");
                        delay.as_secs()
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait_seconds)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Loads `cert.pem`/`key.pem` and presents them if the certificate has not expired.
fn load_stored(dir: &Path, certificates: &ServingCertificates) -> Option<CertificateSummary> {
    let loaded = (|| -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        let certificate_path = dir.join(CERTIFICATE_FILE_NAME);
        let (Some(chain_pem), Some(key_pem)) = (
            read_if_exists(&certificate_path).map_err(|error| error.to_string())?,
            read_if_exists(&dir.join(KEY_FILE_NAME)).map_err(|error| error.to_string())?,
        ) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("{}: {error}", certificate_path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| format!("{KEY_FILE_NAME}: {error}"))?;
        Ok(Some((chain, key)))
    })();
    let (chain, key) = match loaded {
        Ok(Some(pair)) => pair,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "cannot read the stored ACME certificate; ordering a new one");
            return None;
        }
    };
    let summary = match chain.first().map(|leaf| CertificateSummary::from_der(leaf)) {
        Some(Ok(summary)) => summary,
        Some(Err(error)) => {
            tracing::warn!(%error, "the stored ACME certificate cannot be parsed; ordering a new one");
            return None;
        }
        None => {
            tracing::warn!("the stored ACME certificate file holds no certificate; ordering a new one");
            return None;
        }
    };
    if summary.not_after_unix_seconds <= crate::os::unix_seconds() {
        tracing::info!(
            not_after_unix_seconds = summary.not_after_unix_seconds,
            "the stored ACME certificate has expired"
        );
        return Some(summary);
    }
    match certificates.set_named(Source::Acme, chain, &key, Some(summary.not_after_unix_seconds)) {
        Ok(()) => {
            tracing::info!(names = ?summary.dns_names, not_after_unix_seconds = summary.not_after_unix_seconds, "serving the stored ACME certificate");
            Some(summary)
        }
        Err(error) => {
            tracing::warn!(%error, "the stored ACME certificate and key do not go together; ordering a new one");
            None
        }
    }
}

/// One order from account to presented certificate.
async fn order_certificate(
    config: &AcmeConfig,
    dir: &Path,
    domains: &[String],
    certificates: &ServingCertificates,
) -> Result<CertificateSummary, AcmeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| IdentityError::Write { path: dir.to_owned(), source })?;
    let client = DirectoryClient::new(config.directory_ca_file.as_deref())?;
    let identifiers: Vec<Identifier> = domains.iter().map(|domain| Identifier::Dns(domain.clone())).collect();
    let mut account = load_or_create_account(config, dir, &client, false).await?;
    let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Err(instant_acme::Error::Api(problem))
            if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
        {
            // The server forgot the account (a test server restarted, an ISP's reset).
            tracing::warn!("the ACME server does not know the stored account; making a new one");
            account = load_or_create_account(config, dir, &client, true).await?;
            account.new_order(&NewOrder::new(&identifiers)).await?
        }
        result => result?,
    };

    let mut published = PublishedChallenges { challenges: certificates.challenges(), tokens: Vec::new() };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let identifier = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::Order(format!("the authorization for {identifier} is {status:?}"))),
        }
        let mut challenge =
            authorization.challenge(ChallengeType::Http01).ok_or_else(|| AcmeError::NoHttp01(identifier.clone()))?;
        // Answerable before the server is told to look.
        published.insert(challenge.token.clone(), challenge.key_authorization().as_str().to_owned());
        challenge.set_ready().await?;
        tracing::debug!(%identifier, "http-01 challenge ready");
    }
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .backoff(1.5)
        .timeout(Duration::from_millis(ORDER_POLL_TIMEOUT_MS));
    let status = order.poll_ready(&poll).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order(invalid_order_reasons(&mut order).await));
    }
    drop(published);

    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params.serialize_request(&key_pair)?;
    order.finalize_csr(request.der()).await?;
    let chain_pem = order.poll_certificate(&poll).await?;

    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| AcmeError::Certificate(error.to_string()))?;
    let leaf = chain.first().ok_or_else(|| AcmeError::Certificate("an empty chain".to_owned()))?;
    let summary = CertificateSummary::from_der(leaf).map_err(|error| AcmeError::Certificate(error.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    certificates
        .set_named(Source::Acme, chain, &key, Some(summary.not_after_unix_seconds))
        .map_err(|error| AcmeError::Certificate(error.to_string()))?;
    // Key first: a crash between the two leaves a pair that does not match, which the
    // next start detects and orders anew.
    write_private_file(dir, KEY_FILE_NAME, key_pair.serialize_pem().as_bytes())?;
    write_private_file(dir, CERTIFICATE_FILE_NAME, chain_pem.as_bytes())?;
    Ok(summary)
}

/// Why an order turned invalid, from its authorizations' challenge errors.
async fn invalid_order_reasons(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            let identifier = state.identifier().to_string();
            for challenge in state.challenges.iter().filter(|challenge| challenge.error.is_some()) {
                if let Some(error) = &challenge.error {
                    reasons.push(format!("{identifier}: {error}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the server marked it invalid".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// `account.json`: the account is bound to the directory it was made on.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    version: u32,
    directory_url: String,
    credentials: AccountCredentials,
}

async fn load_or_create_account(
    config: &AcmeConfig,
    dir: &Path,
    client: &DirectoryClient,
    replace: bool,
) -> Result<Account, AcmeError> {
    let path = dir.join(ACCOUNT_FILE_NAME);
    if !replace {
        if let Some(bytes) = read_if_exists(&path)? {
            match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored)
                    if stored.version == ACCOUNT_FILE_VERSION && stored.directory_url == config.directory_url =>
                {
                    let builder = Account::builder_with_http(Box::new(client.clone()));
                    return Ok(builder.from_credentials(stored.credentials).await?);
                }
                Ok(stored) => tracing::info!(
                    stored_directory = %stored.directory_url,
                    "the stored ACME account is for another directory; making a new one"
                ),
                Err(error) => tracing::warn!(%error, "cannot parse {ACCOUNT_FILE_NAME}; making a new account"),
            }
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new_account = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = Account::builder_with_http(Box::new(client.clone()))
        .create(&new_account, config.directory_url.clone(), None)
        .await?;
    let stored =
        StoredAccount { version: ACCOUNT_FILE_VERSION, directory_url: config.directory_url.clone(), credentials };
    let json = serde_json::to_vec_pretty(&stored).map_err(instant_acme::Error::Json)?;
    write_private_file(dir, ACCOUNT_FILE_NAME, &json)?;
    tracing::info!(account = account.id(), "made an ACME account");
    Ok(account)
}

/// The key authorizations of one order, answerable while this lives; removed when it
/// is dropped, also when the order fails or the task is stopped mid-order.
struct PublishedChallenges<'a> {
    challenges: &'a AcmeChallenges,
    tokens: Vec<String>,
}

impl PublishedChallenges<'_> {
    fn insert(&mut self, token: String, key_authorization: String) {
        self.challenges.insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }
}

impl Drop for PublishedChallenges<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
        }
    }
}

/// The HTTP client instant-acme speaks through: HTTPS only, one HTTP/1.1 connection
/// per request (an order is a dozen requests, days apart), the system's roots plus
/// `directory_ca_file`, bounded in time and response size.
#[derive(Clone)]
struct DirectoryClient {
    tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("only https:// ACME directories are supported, not {0}")]
    NotHttps(String),
    #[error("bad server name {0:?}")]
    ServerName(String),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("TLS with {address}: {source}")]
    Tls { address: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the request is malformed: {0}")]
    Request(#[from] http::Error),
    #[error("reading the response: {0} (at most {RESPONSE_BYTES_MAX} bytes)")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {REQUEST_TIMEOUT_MS} ms")]
    Timeout,
}

impl DirectoryClient {
    fn new(directory_ca_file: Option<&Path>) -> Result<DirectoryClient, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (n_added, n_ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(n_added, n_ignored, n_errors = native.errors.len(), "system roots for the ACME directory");
        if let Some(path) = directory_ca_file {
            let invalid = |reason: String| AcmeError::DirectoryCa { path: path.to_owned(), reason };
            let extra = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| invalid(error.to_string()))?;
            if extra.is_empty() {
                return Err(invalid("no certificate in the file".to_owned()));
            }
            for certificate in extra {
                roots.add(certificate).map_err(|error| invalid(error.to_string()))?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::identity::ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(IdentityError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![crate::identity::ALPN_HTTP1.to_vec()];
        Ok(DirectoryClient { tls: Arc::new(tls) })
    }

    async fn send(
        tls: Arc<rustls::ClientConfig>,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, RequestError> {
        let (mut parts, body) = request.into_parts();
        if parts.uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(RequestError::NotHttps(parts.uri.to_string()));
        }
        let authority = parts.uri.authority().cloned().ok_or_else(|| RequestError::NotHttps(parts.uri.to_string()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| RequestError::ServerName(authority.to_string()))?;
        let address = authority.to_string();
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| RequestError::Connect { address: address.clone(), source })?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|source| RequestError::Tls { address, source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // HTTP/1.1 wants the path in the request line and the authority in Host.
        parts
            .headers
            .insert(http::header::HOST, http::HeaderValue::from_str(authority.as_str()).map_err(http::Error::from)?);
        parts.headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse::<http::Uri>()
            .map_err(http::Error::from)?;
        let exchange = async move {
            let response = sender.send_request(http::Request::from_parts(parts, body)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX).collect().await.map_err(RequestError::Body)?.to_bytes();
            Ok::<_, RequestError>(BytesResponse { parts, body: Box::new(body) })
        };
        // The connection ends once the exchange is done (Connection: close, and the
        // sender is dropped with it).
        let (response, _) = tokio::join!(exchange, connection);
        response
    }
}

impl HttpClient for DirectoryClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), DirectoryClient::send(tls, request))
                .await
                .unwrap_or(Err(RequestError::Timeout))
                .map_err(|error| instant_acme::Error::Other(Box::new(error)))
        })
    }
}

// ---- Sans-IO: what to do next, and when -------------------------------------------

/// Why a certificate is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderReason {
    NoCertificate,
    Expiring,
    DomainsChanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Order(OrderReason),
    /// Nothing to do before this time (unix seconds).
    WaitUntil(i64),
}

/// Lower case, no trailing dot, sorted, without duplicates or empty names.
fn normalized_domains(domains: &[String]) -> Vec<String> {
    let mut normalized: Vec<String> = domains
        .iter()
        .map(|domain| domain.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|domain| !domain.is_empty())
        .collect();
    normalized.sort();
    normalized.dedup();
    normalized
}

/// When `certificate` is due for renewal: `renew_days_before` its expiry, or when a
/// third of its lifetime is left if that is later.
fn renew_at(certificate: &CertificateSummary, renew_days_before: u32) -> i64 {
    let lifetime = certificate.not_after_unix_seconds.saturating_sub(certificate.not_before_unix_seconds).max(0);
    let window = (i64::from(renew_days_before) * 86_400).min(lifetime / RENEW_LIFETIME_DIVISOR);
    certificate.not_after_unix_seconds - window
}

/// What to do at `now` with the `current` certificate for `domains` (normalized).
fn next_step(now: i64, current: Option<&CertificateSummary>, domains: &[String], renew_days_before: u32) -> Step {
    let Some(certificate) = current else {
        return Step::Order(OrderReason::NoCertificate);
    };
    if normalized_domains(&certificate.dns_names) != domains {
        return Step::Order(OrderReason::DomainsChanged);
    }
    let renew_at = renew_at(certificate, renew_days_before);
    if now >= renew_at {
        Step::Order(OrderReason::Expiring)
    } else {
        Step::WaitUntil(renew_at)
    }
}

/// Seconds to sleep until `until`: at least 1, at most `CHECK_INTERVAL_MAX_SECONDS`.
fn wait_seconds(now: i64, until: i64) -> u64 {
    until.saturating_sub(now).clamp(1, CHECK_INTERVAL_MAX_SECONDS) as u64
}

/// The wait after the `failures`-th failure in a row (1 for the first): 10 s,
/// doubling, at most an hour.
fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs((RETRY_DELAY_FIRST_SECONDS << exponent).min(RETRY_DELAY_MAX_SECONDS))
}

// ---- Sans-IO: the little of X.509 this module reads ----------------------------------

/// What this module needs of a certificate: when it is valid and for which names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CertificateSummary {
    not_before_unix_seconds: i64,
    not_after_unix_seconds: i64,
    /// The DNS names of its subjectAltName, as written.
    dns_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed X.509 certificate: {0}")]
struct DerError(&'static str);

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0;
const TAG_ISSUER_UNIQUE_ID: u8 = 0x81;
const TAG_SUBJECT_UNIQUE_ID: u8 = 0x82;
const TAG_EXTENSIONS: u8 = 0xa3;
/// GeneralName's `dNSName [2] IA5String`.
const TAG_DNS_NAME: u8 = 0x82;
/// 2.5.29.17, subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

impl CertificateSummary {
    /// Reads tbsCertificate's validity and subjectAltName (RFC 5280 §4.1); nothing
    /// else is checked (rustls and webpki verify the rest where it matters).
    fn from_der(der: &[u8]) -> Result<CertificateSummary, DerError> {
        let mut certificate = DerReader::new(DerReader::new(der).expect(TAG_SEQUENCE)?);
        let mut tbs = DerReader::new(certificate.expect(TAG_SEQUENCE)?);
        tbs.skip_if(TAG_VERSION)?;
        tbs.expect(TAG_INTEGER)?; // serialNumber
        tbs.expect(TAG_SEQUENCE)?; // signature
        tbs.expect(TAG_SEQUENCE)?; // issuer
        let mut validity = DerReader::new(tbs.expect(TAG_SEQUENCE)?);
        let not_before_unix_seconds = validity.time()?;
        let not_after_unix_seconds = validity.time()?;
        tbs.expect(TAG_SEQUENCE)?; // subject
        tbs.expect(TAG_SEQUENCE)?; // subjectPublicKeyInfo
        tbs.skip_if(TAG_ISSUER_UNIQUE_ID)?;
        tbs.skip_if(TAG_SUBJECT_UNIQUE_ID)?;
        let mut dns_names = Vec::new();
        if tbs.peek_tag() == Some(TAG_EXTENSIONS) {
            let mut extensions = DerReader::new(DerReader::new(tbs.expect(TAG_EXTENSIONS)?).expect(TAG_SEQUENCE)?);
            while !extensions.is_empty() {
                let mut extension = DerReader::new(extensions.expect(TAG_SEQUENCE)?);
                let oid = extension.expect(TAG_OID)?;
                extension.skip_if(TAG_BOOLEAN)?; // critical
                let value = extension.expect(TAG_OCTET_STRING)?;
                if oid == OID_SUBJECT_ALT_NAME {
                    let mut names = DerReader::new(DerReader::new(value).expect(TAG_SEQUENCE)?);
                    while !names.is_empty() {
                        let (tag, content) = names.any()?;
                        if tag == TAG_DNS_NAME {
                            let name = std::str::from_utf8(content)
                                .ok()
                                .filter(|name| name.is_ascii())
                                .ok_or(DerError("a dNSName that is not ASCII"))?;
                            dns_names.push(name.to_owned());
                        }
                    }
                }
            }
        }
        Ok(CertificateSummary { not_before_unix_seconds, not_after_unix_seconds, dns_names })
    }
}

/// Reads DER elements (single-byte tags, definite lengths) from a slice.
struct DerReader<'a> {
    rest: &'a [u8],
}

impl<'a> DerReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        DerReader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag and content.
    fn any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.rest.split_first().ok_or(DerError("truncated: a tag is missing"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("a multi-byte tag"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError("truncated: a length is missing"))?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let n_bytes = usize::from(first & 0x7f);
            if n_bytes == 0 || n_bytes > 4 || rest.len() < n_bytes {
                return Err(DerError("a bad length"));
            }
            let (length_bytes, after) = rest.split_at(n_bytes);
            rest = after;
            length_bytes.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
        };
        if rest.len() < length {
            return Err(DerError("truncated: an element is longer than what holds it"));
        }
        let (content, after) = rest.split_at(length);
        self.rest = after;
        Ok((tag, content))
    }

    fn expect(&mut self, expected_tag: u8) -> Result<&'a [u8], DerError> {
        match self.any()? {
            (tag, content) if tag == expected_tag => Ok(content),
            _ => Err(DerError("an unexpected element")),
        }
    }

    fn skip_if(&mut self, tag: u8) -> Result<(), DerError> {
        if self.peek_tag() == Some(tag) {
            self.any()?;
        }
        Ok(())
    }

    /// A `Time` (UTCTime or GeneralizedTime, as RFC 5280 restricts them) in unix seconds.
    fn time(&mut self) -> Result<i64, DerError> {
        let (tag, content) = self.any()?;
        let (year, rest) = match (tag, content.len()) {
            // YYMMDDHHMMSSZ; years 50-99 are 19xx (RFC 5280 §4.1.2.5.1).
            (TAG_UTC_TIME, 13) => {
                let year = digits(&content[..2])?;
                (if year >= 50 { 1900 + year } else { 2000 + year }, &content[2..])
            }
            // YYYYMMDDHHMMSSZ
            (TAG_GENERALIZED_TIME, 15) => (digits(&content[..4])?, &content[4..]),
            _ => return Err(DerError("a validity time that is neither UTCTime nor GeneralizedTime")),
        };
        if rest[10] != b'Z' {
            return Err(DerError("a validity time not in UTC"));
        }
        let month = time::Month::try_from(digits(&rest[0..2])? as u8).map_err(|_| DerError("a bad month"))?;
        let date = time::Date::from_calendar_date(year as i32, month, digits(&rest[2..4])? as u8)
            .map_err(|_| DerError("a bad date"))?;
        let clock =
            time::Time::from_hms(digits(&rest[4..6])? as u8, digits(&rest[6..8])? as u8, digits(&rest[8..10])? as u8)
                .map_err(|_| DerError("a bad time of day"))?;
        Ok(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp())
    }
}

fn digits(bytes: &[u8]) -> Result<u32, DerError> {
    bytes.iter().try_fold(0u32, |value, &byte| {
        if byte.is_ascii_digit() {
            Ok(value * 10 + u32::from(byte - b'0'))
        } else {
            Err(DerError("a time with a non-digit"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn summary(not_before: i64, not_after: i64, names: &[&str]) -> CertificateSummary {
        CertificateSummary {
            not_before_unix_seconds: not_before,
            not_after_unix_seconds: not_after,
            dns_names: names.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    fn domains(names: &[&str]) -> Vec<String> {
        normalized_domains(&names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())
    }

    fn self_signed(names: &[&str], not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn no_certificate_is_ordered() {
        assert_eq!(next_step(1_000, None, &domains(&["box.test"]), 30), Step::Order(OrderReason::NoCertificate));
    }

    #[test]
    fn a_90_day_certificate_is_renewed_30_days_before_it_expires() {
        let now = 1_800_000_000;
        let certificate = summary(now - 10 * DAY, now + 80 * DAY, &["box.test"]);
        let wanted = domains(&["box.test"]);
        assert_eq!(next_step(now, Some(&certificate), &wanted, 30), Step::WaitUntil(now + 50 * DAY));
        assert_eq!(next_step(now + 50 * DAY - 1, Some(&certificate), &wanted, 30), Step::WaitUntil(now + 50 * DAY));
        assert_eq!(next_step(now + 50 * DAY, Some(&certificate), &wanted, 30), Step::Order(OrderReason::Expiring));
        assert_eq!(next_step(now + 81 * DAY, Some(&certificate), &wanted, 30), Step::Order(OrderReason::Expiring));
    }

    #[test]
    fn a_short_lived_certificate_is_renewed_with_a_third_of_its_life_left_not_at_once() {
        let now = 1_800_000_000;
        let six_days = summary(now, now + 6 * DAY, &["box.test"]);
        let wanted = domains(&["box.test"]);
        // renew_days_before (30) is longer than the lifetime: a third of it wins.
        assert_eq!(next_step(now, Some(&six_days), &wanted, 30), Step::WaitUntil(now + 4 * DAY));
        assert_eq!(next_step(now + 4 * DAY, Some(&six_days), &wanted, 30), Step::Order(OrderReason::Expiring));
        // A smaller window than a third is kept.
        assert_eq!(next_step(now, Some(&six_days), &wanted, 1), Step::WaitUntil(now + 5 * DAY));
        // The 90-second certificates of the end-to-end test: renewed after 60 s.
        let ninety_seconds = summary(now, now + 90, &["box.test"]);
        assert_eq!(next_step(now, Some(&ninety_seconds), &wanted, 30), Step::WaitUntil(now + 60));
        // Nonsense dates (notAfter before notBefore) renew at notAfter, not earlier.
        let backwards = summary(now + 10, now, &["box.test"]);
        assert_eq!(next_step(now - 1, Some(&backwards), &wanted, 30), Step::WaitUntil(now));
    }

    #[test]
    fn changed_domains_are_ordered_but_case_order_and_trailing_dots_are_not_changes() {
        let now = 1_800_000_000;
        let certificate = summary(now, now + 90 * DAY, &["www.box.test", "Box.Test"]);
        let same = domains(&["box.test.", "WWW.box.test", "box.test"]);
        assert!(matches!(next_step(now, Some(&certificate), &same, 30), Step::WaitUntil(_)));
        for changed in [&["box.test"][..], &["box.test", "www.box.test", "photos.box.test"], &["other.test"]] {
            assert_eq!(
                next_step(now, Some(&certificate), &domains(changed), 30),
                Step::Order(OrderReason::DomainsChanged),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn waits_are_bounded_so_a_corrected_clock_is_noticed() {
        assert_eq!(wait_seconds(100, 50), 1);
        assert_eq!(wait_seconds(100, 100), 1);
        assert_eq!(wait_seconds(100, 160), 60);
        assert_eq!(wait_seconds(0, 90 * DAY), CHECK_INTERVAL_MAX_SECONDS as u64);
        assert_eq!(wait_seconds(i64::MIN, i64::MAX), CHECK_INTERVAL_MAX_SECONDS as u64);
    }

    #[test]
    fn retries_back_off_from_10_seconds_doubling_to_an_hour() {
        let delays: Vec<u64> = (1..=11).map(|failures| retry_delay(failures).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(retry_delay(0).as_secs(), 10);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn reads_validity_and_names_of_a_certificate() {
        let der = self_signed(&["box.test", "www.box.test"], (2025, 1, 2), (2026, 4, 1));
        let parsed = CertificateSummary::from_der(&der).unwrap();
        assert_eq!(parsed.not_before_unix_seconds, 1_735_776_000); // date -u -d 2025-01-02 +%s
        assert_eq!(parsed.not_after_unix_seconds, 1_775_001_600); // date -u -d 2026-04-01 +%s
        assert_eq!(parsed.dns_names, ["box.test", "www.box.test"]);
    }

    #[test]
    fn reads_generalized_time_from_2050_on_and_utc_time_before() {
        // RFC 5280: UTCTime up to 2049, GeneralizedTime from 2050 (rcgen follows it).
        let der = self_signed(&["box.test"], (1999, 12, 31), (2051, 3, 4));
        let parsed = CertificateSummary::from_der(&der).unwrap();
        assert_eq!(parsed.not_before_unix_seconds, 946_598_400); // date -u -d 1999-12-31 +%s
        assert_eq!(parsed.not_after_unix_seconds, 2_561_500_800); // date -u -d 2051-03-04 +%s
    }

    #[test]
    fn reads_both_time_encodings_and_the_utc_time_century_rule() {
        let time = |tag: u8, text: &str| {
            let mut der = vec![tag, text.len() as u8];
            der.extend_from_slice(text.as_bytes());
            DerReader::new(&der).time()
        };
        assert_eq!(time(TAG_UTC_TIME, "491231235959Z"), Ok(2_524_607_999)); // 2049-12-31T23:59:59Z
        assert_eq!(time(TAG_UTC_TIME, "500101000000Z"), Ok(-631_152_000)); // 1950-01-01
        assert_eq!(time(TAG_GENERALIZED_TIME, "20510304050607Z"), Ok(2_561_519_167)); // 2051-03-04T05:06:07Z
        assert!(time(TAG_UTC_TIME, "491231235959+0100").is_err());
        assert!(time(TAG_UTC_TIME, "491331235959Z").is_err()); // month 13
        assert!(time(TAG_UTC_TIME, "490230000000Z").is_err()); // 30 February
        assert!(time(TAG_UTC_TIME, "4912312359x9Z").is_err());
        assert!(time(TAG_GENERALIZED_TIME, "491231235959Z").is_err()); // a UTCTime's length
        assert!(time(TAG_OCTET_STRING, "491231235959Z").is_err());
    }

    #[test]
    fn broken_certificates_are_errors_never_panics() {
        let der = self_signed(&["box.test"], (2025, 1, 2), (2026, 4, 1));
        for length in 0..der.len() {
            assert!(CertificateSummary::from_der(&der[..length]).is_err(), "truncated to {length} bytes");
        }
        for index in 0..der.len() {
            let mut flipped = der.clone();
            flipped[index] ^= 0xff;
            let _ = CertificateSummary::from_der(&flipped);
        }
        assert!(CertificateSummary::from_der(&[0x30, 0x80, 0x00, 0x00]).is_err()); // indefinite length
        assert!(CertificateSummary::from_der(&[0x30, 0x85, 1, 0, 0, 0, 0]).is_err()); // 5 length bytes
        assert!(CertificateSummary::from_der(&[0x1f, 0x01, 0x00]).is_err()); // multi-byte tag
    }

    #[test]
    fn the_stored_account_keeps_its_layout() {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_pkcs8 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der());
        let json = serde_json::json!({
            "version": 1,
            "directory_url": "https://acme.test/dir",
            "credentials": {"id": "https://acme.test/acct/1", "key_pkcs8": key_pkcs8, "directory": "https://acme.test/dir"},
        });
        let stored: StoredAccount = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(stored.version, ACCOUNT_FILE_VERSION);
        assert_eq!(stored.directory_url, "https://acme.test/dir");
        assert_eq!(serde_json::to_value(&stored).unwrap(), json);
    }

    fn acme_config(directory_url: &str, challenge: &str) -> AcmeConfig {
        toml::from_str(&format!(
            "directory_url = \"{directory_url}\"\ndomains = [\"box.test\"]\nchallenge = \"{challenge}\"\n"
        ))
        .unwrap()
    }

    fn serving_certificates(dir: &crate::test_support::TempDir) -> Arc<ServingCertificates> {
        let identity = crate::identity::Identity::load_or_create(dir.path(), "test").unwrap();
        Arc::new(ServingCertificates::start(dir.path(), &identity, "test", "0000000000000001").unwrap())
    }

    #[test]
    fn the_stored_certificate_is_presented_before_the_task_first_runs() {
        let dir = crate::test_support::TempDir::new("acme-stored");
        let stored = dir.path().join(DIR_NAME);
        std::fs::create_dir_all(&stored).unwrap();
        let certificate = crate::tls::tests::write_self_signed(
            "box.test",
            &stored.join(CERTIFICATE_FILE_NAME),
            &stored.join(KEY_FILE_NAME),
        );
        let certificates = serving_certificates(&dir);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        // Neither spawned nor polled: what the node's first handshake would find.
        let _task = run(
            acme_config("https://127.0.0.1:1/dir", "http-01"),
            dir.path().to_owned(),
            certificates.clone(),
            stopped,
        );
        let named = crate::locking::read(&certificates.named);
        assert_eq!(named.len(), 1, "the stored certificate is presented when run is called");
        assert_eq!(named[0].certified.end_entity_cert().unwrap().as_ref(), certificate.der().as_ref());
    }

    #[tokio::test]
    async fn stops_promptly_in_the_middle_of_an_order() {
        let dir = crate::test_support::TempDir::new("acme-stop");
        // A "server" that accepts and never answers: the attempt hangs in its handshake.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let directory_url = format!("https://{}/dir", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                connections.push(connection);
            }
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(
            acme_config(&directory_url, "http-01"),
            dir.path().to_owned(),
            serving_certificates(&dir),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "the order should still be waiting on the silent server");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("run returns within 2 s of stop").unwrap();
        held.abort();
    }

    #[tokio::test]
    async fn a_challenge_other_than_http_01_ends_the_task_at_once() {
        let dir = crate::test_support::TempDir::new("acme-dns");
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let task = run(
            acme_config("https://127.0.0.1:1/dir", "dns-01"),
            dir.path().to_owned(),
            serving_certificates(&dir),
            stopped,
        );
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("run gives up on dns-01 at once");
        assert!(!dir.path().join(DIR_NAME).exists(), "nothing is written for a refused configuration");
    }

    #[test]
    fn challenges_are_withdrawn_when_an_order_ends_whatever_the_way() {
        let challenges = AcmeChallenges::default();
        {
            let mut published = PublishedChallenges { challenges: &challenges, tokens: Vec::new() };
            published.insert("token-1".to_owned(), "token-1.thumb".to_owned());
            published.insert("token-2".to_owned(), "token-2.thumb".to_owned());
            assert_eq!(challenges.get("token-1").as_deref(), Some("token-1.thumb"));
        }
        assert_eq!(challenges.get("token-1"), None);
        assert_eq!(challenges.get("token-2"), None);
    }
}
