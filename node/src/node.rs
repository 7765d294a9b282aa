//! The composition root: the one place that knows every piece of a node. `Node::start`
//! builds them in order (identity and store, the link with replication, fan-out,
//! search, the API, discovery, the transports), `Node::shutdown` stops them in the
//! reverse order, and `serve` is `edgenode serve`: start, announce the ready line,
//! wait for SIGTERM or Ctrl-C, stop.
//!
//! In the library rather than the binary so a test or a tool can run a node
//! in-process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use crate::api::metrics::Metrics;
use crate::api::{Api, BodyPlan, NodeInfo, RequestBody};
use crate::config::Config;
use crate::core::model::NodeId;
use crate::discovery::{Advertisement, Discovery};
use crate::http::{self as transports, systemd, Identity, NetError};
use crate::link::neighbours::{NeighbourHandler, Refusal};
use crate::media::{MediaLimits, Pipeline};
use crate::os;
use crate::services::fanout::{self, Fanout, FanoutServiceError};
use crate::services::replication::{self, ReplicationError, Siblings};
use crate::services::search::{SearchError, SearchService};
use crate::store::{Store, StoreError};
use crate::tls::ServingCertificates;

/// How long shutdown waits, once the transports have stopped, for API handlers that
/// outlived their connection (the client hung up, or the grace period ran out) while
/// replication and the link still work: enough for a local write or a call to a node
/// that answers; one waiting on a node that does not is cut short by step 3.
const HANDLERS_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long it waits for the rest once replication has closed the link: their calls
/// to other nodes then fail at once.
const HANDLERS_AFTER_LINK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot open the database in {}", path.display())]
    OpenStore {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only in the rollback drill's build (node/Cargo.toml).
    #[cfg(feature = "rollback-drill")]
    #[error(
        "rollback drill: the database was migrated to schema {}; this build now fails as a bad release would",
        crate::store::SCHEMA_VERSION
    )]
    RollbackDrill,
    #[error(transparent)]
    Transports(#[from] NetError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("cannot start search: {0}")]
    Search(SearchError),
    #[error(transparent)]
    Fanout(#[from] FanoutServiceError),
    #[error("the {what} task failed")]
    Task {
        what: &'static str,
        #[source]
        source: JoinError,
    },
    #[error("cannot print the ready line")]
    Stdout(#[source] std::io::Error),
    #[error("cannot listen for {signal}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// `edgenode serve`: starts the node, announces it (the ready line on stdout, files in
/// the data dir for the CLI and the test harness, `READY=1` to systemd), serves until
/// SIGTERM or Ctrl-C, and stops it.
/// The rollback drill's build stops here, its database migrated (node/Cargo.toml);
/// any other build goes on.
fn rollback_drill() -> Result<(), NodeError> {
    #[cfg(feature = "rollback-drill")]
    return Err(NodeError::RollbackDrill);
    #[cfg(not(feature = "rollback-drill"))]
    Ok(())
}

pub async fn serve(config: Config) -> Result<(), NodeError> {
    let data_dir = config.data_dir.clone();
    let mut node = Node::start(config).await?;
    let mut signals = Signals::listen()?;
    let watchdog = systemd::watchdog_interval().map(|interval| tokio::spawn(watchdog(interval)));
    let address_file = data_dir.join("serving-address");
    let announced = node.announce(&data_dir, &address_file);
    // The transports end on their own only when they fail.
    let transports_ended = match &announced {
        Ok(()) => tokio::select! {
            () = signals.recv() => None,
            ended = &mut node.transports => Some(ended),
        },
        Err(_) => None,
    };
    tracing::info!("shutting down: finishing requests in flight");
    systemd::notify("STOPPING=1");
    let stopped = node.stop(transports_ended).await;
    let _ = std::fs::remove_file(&address_file);
    // systemd's watchdog still applies while the node drains: ping until the end.
    if let Some(watchdog) = watchdog {
        watchdog.abort();
        let _ = watchdog.await;
    }
    announced?;
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

/// A running node.
pub struct Node {
    config: Config,
    pin: String,
    store: Arc<Store>,
    siblings: Arc<Siblings>,
    api: Arc<CountedApi>,
    /// API requests being handled, for shutdown to wait on.
    handlers: watch::Receiver<usize>,
    discovery: Option<Discovery>,
    transports: JoinHandle<Result<(), NetError>>,
    stop_transports: watch::Sender<bool>,
    local_addr: SocketAddr,
    peer_address: SocketAddr,
}

impl Node {
    /// Builds and starts every piece, each after what it uses: the store and identity,
    /// the peer endpoint with replication, fan-out and search over its link, the API
    /// over all of them, discovery, and last the transports, which start serving.
    /// Call within a multi-thread runtime.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        create_private_dir(&config.data_dir)?;
        // Before anything reads or adds to it, so the files the node then creates (0600
        // whatever the umask) are not the only private ones.
        crate::store::make_data_dir_private(&config.data_dir)
            .map_err(|source| NodeError::DataDir { path: config.data_dir.clone(), source })?;
        let identity = Identity::load_or_create(&config.data_dir, &config.name)?;
        let store =
            Store::open_as(&config.data_dir, NodeId::from_pin(&identity.pin), config.limits.database_cache_bytes)
                .map_err(|source| NodeError::OpenStore { path: config.data_dir.clone(), source })?;
        rollback_drill()?;
        let store = Arc::new(store);
        store.set_disk_reserve(config.limits.disk_free_bytes_min);
        let claim_code = claim_code(&config, &store)?;
        let spool_dir = config.data_dir.join(crate::api::SPOOL_DIR);
        crate::api::prepare_spool_dir(&spool_dir).map_err(|source| NodeError::DataDir { path: spool_dir, source })?;
        let limits = &config.limits;
        let pipeline = Pipeline::new(MediaLimits {
            upload_bytes_max: limits.upload_bytes_max,
            pixels_max: limits.image_pixels_max,
            workers: limits.media_workers,
            decoded_bytes_in_flight_max: limits.media_decoded_bytes_in_flight_max,
        });
        // Bound now (a port in use fails the start before anything else runs); they
        // accept only once serving starts, last.
        let certificates = Arc::new(ServingCertificates::start(
            &config.data_dir,
            &identity,
            &crate::discovery::rules::host_label(&config.name),
            &store.node_id().to_string(),
        )?);
        let listeners = transports::bind(config.listen, &identity, certificates.clone(), limits).await?;
        let siblings = Siblings::start(&config, &identity, store.clone()).await?;
        let search = SearchService::start(&config, store.clone(), &siblings).map_err(NodeError::Search)?;
        let peer_address = siblings.peer_address();
        let local_addr = listeners.local_addr;
        let node_info = NodeInfo {
            name: config.name.clone(),
            region: config.region.clone(),
            roles: config.roles.clone(),
            pin: identity.pin.clone(),
            addresses: vec![local_addr.to_string()],
            base_url: NodeInfo::base_url(
                &crate::discovery::rules::host_label(&config.name),
                local_addr.port(),
                config.tls.acme.as_ref().and_then(|acme| acme.domains.first()).map(String::as_str),
            ),
        };
        let fanout = Fanout::start(
            store.clone(),
            siblings.neighbour_link().clone(),
            siblings.neighbour_services(),
            &config.fanout,
            &config.data_dir,
        )?;
        let (stop_transports, transports_stop) = watch::channel(false);
        let updates = crate::services::update::UpdateService::start(
            &config.update,
            store.node_id().0,
            &config.data_dir,
            transports_stop.clone(),
        );
        let control_token = base64_url(&os::random_bytes::<32>());
        write_private_file(&config.data_dir.join("control-token"), control_token.as_bytes())?;
        let mut api = Api::new(&config, store.clone(), pipeline, node_info, claim_code)
            .with_tls(certificates.clone(), local_addr.port())
            .with_control_token(&control_token)
            .with_siblings(siblings.clone())
            .with_search(search)
            .with_fanout(fanout.clone())
            .with_updates(updates.clone());
        api.metrics.register_collector(Box::new(siblings.metrics_collector()));
        api.metrics.register_collector(Box::new(updates.metrics_collector()));
        api.metrics.register_collector(Box::new(fanout.metrics_collector()));
        let discovery = if config.mdns.enabled {
            let advertisement = Advertisement {
                name: config.name.clone(),
                node_id: store.node_id().to_string(),
                pin: identity.pin.clone(),
                region: config.region.clone(),
                port: local_addr.port(),
                listen_ip: local_addr.ip(),
                interfaces: config.mdns.interfaces.clone(),
                siblings_pins: replication::all_siblings(&config)?.iter().map(|sibling| sibling.pin.clone()).collect(),
            };
            let discovery = tokio::task::spawn_blocking(move || Discovery::start(advertisement))
                .await
                .map_err(|source| NodeError::Task { what: "mDNS", source })?;
            api = api.with_nearby(discovery.nearby_handle());
            Some(discovery)
        } else {
            tracing::info!("mDNS is off (--no-mdns or [mdns] enabled = false)");
            None
        };
        let (handlers_running, handlers) = watch::channel(0);
        let api = Arc::new(CountedApi { api, running: handlers_running });
        // Weak: the API holds fan-out, which must not keep the API alive.
        let avatar_api = Arc::downgrade(&api);
        fanout.set_avatar_maker(Box::new(move |media_id| {
            avatar_api.upgrade().is_some_and(|counted| counted.api.ensure_avatar(media_id))
        }));
        if let Some(address) = config.metrics_listen {
            let listener = transports::bind_metrics(address).await?;
            tracing::info!(%address, "metrics on plain HTTP: GET /metrics");
            tokio::spawn(transports::serve_metrics(listener, api.clone(), transports_stop.clone()));
        }
        if let Some(address) = config.onboarding_listen {
            let listener = transports::bind_onboarding(address).await?;
            tracing::info!(%address, "onboarding on plain HTTP: the trust page, CA downloads, redirects to HTTPS");
            tokio::spawn(transports::serve_onboarding(
                listener,
                api.clone(),
                local_addr.port(),
                transports_stop.clone(),
            ));
        }
        let own_card = crate::tls::SiblingCard {
            ca_pem: certificates.ca().certificate_pem.clone(),
            name: crate::discovery::rules::host_label(&config.name),
            https_port: local_addr.port(),
        };
        crate::services::sibling_web::start(&siblings, &own_card, config.data_dir.clone(), transports_stop.clone());
        let own_files = config.tls.cert_file.clone().zip(config.tls.key_file.clone());
        tokio::spawn(certificates.clone().keep_current(identity.private_key(), own_files, transports_stop.clone()));
        if let Some(acme) = config.tls.acme.clone() {
            tokio::spawn(crate::tls::acme::run(
                acme,
                config.data_dir.clone(),
                certificates.clone(),
                transports_stop.clone(),
            ));
        }
        let transports =
            tokio::spawn(transports::serve(listeners, api.clone(), config.limits.clone(), transports_stop));
        Ok(Node {
            config,
            pin: identity.pin,
            store,
            siblings,
            api,
            handlers,
            discovery,
            transports,
            stop_transports,
            local_addr,
            peer_address,
        })
    }

    /// Where HTTPS (TCP) and HTTP/3 (UDP) are served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where siblings and neighbours reach this node (the peer endpoint, UDP).
    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    /// `sha256/BASE64` of the node's key.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    pub fn node_id(&self) -> NodeId {
        self.store.node_id()
    }

    /// Stops the node; see `stop`.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.stop(None).await
    }

    /// Files for the CLI and the harness, the ready line, and `READY=1`.
    fn announce(&self, data_dir: &Path, address_file: &Path) -> Result<(), NodeError> {
        let (local_addr, peer_address, node_id) = (self.local_addr, self.peer_address, self.node_id());
        // Written before the ready line, so whoever waits for that line finds it.
        write_private_file(&data_dir.join("peer-address"), peer_address.to_string().as_bytes())?;
        let ready =
            format!("edgenode ready listen={local_addr} pin={} node_id={node_id} peer={peer_address}", self.pin);
        tracing::info!(listen = %local_addr, pin = %self.pin, node_id = %node_id, name = %self.config.name, "ready");
        println!("{ready}");
        std::io::stdout().flush().map_err(NodeError::Stdout)?;
        // Tells `edgenode status` where this node answers, whatever flags started it.
        write_private_file(address_file, local_addr.to_string().as_bytes())?;
        systemd::notify("READY=1");
        Ok(())
    }

    /// Stops every piece after the pieces that use it, so nothing runs after what it
    /// needs (and no timer is polled after the runtime began shutting down, which
    /// panics): requests use everything; fan-out, search and discovery use the link
    /// and the store; replication owns the link and writes the store; the store is
    /// last. `transports_ended`: what the transports task returned, if it already has.
    async fn stop(self, transports_ended: Option<Result<Result<(), NetError>, JoinError>>) -> Result<(), NodeError> {
        let Node { store, siblings, api, mut handlers, discovery, transports, stop_transports, .. } = self;

        // 1. Transports: stop accepting and finish the requests in flight (within
        // `shutdown_grace_seconds`). mDNS goodbyes go out at once, not after the
        // drain, so phones stop offering a node that is going away.
        let _ = stop_transports.send(true);
        let goodbye = discovery.map(|discovery| tokio::task::spawn_blocking(move || discovery.shutdown()));
        let served = match transports_ended {
            Some(ended) => ended,
            None => transports.await,
        };
        if let Some(goodbye) = goodbye {
            if let Err(error) = goodbye.await {
                tracing::warn!(%error, "mDNS did not stop cleanly");
            }
        }
        // A handler whose connection is gone still runs on its blocking thread, maybe
        // inside `block_on` with a timer (a call to another node).
        if !handlers_finished(&mut handlers, HANDLERS_DRAIN_TIMEOUT).await {
            tracing::warn!(running = *handlers.borrow(), "requests still running; they fail once replication stops");
        }
        drop(api);
        tracing::debug!("shutdown: transports stopped");

        // 2. Fan-out and search. Fan-out's neighbour services refuse from now on: no
        // new work arrives (thumb prefetches run on blocking threads and call other
        // nodes), and the services no longer hold fan-out, which holds the link that
        // holds the services. Fan-out's own loops (`Fanout::start`) have no stop;
        // after step 3 their calls fail at once, and they end with the runtime.
        // Search's loops hold it weakly between rounds: with the API (dropped above)
        // gone they end at their next round, or with the runtime.
        let services = siblings.neighbour_services();
        for name in [fanout::SERVICE_FANOUT, fanout::SERVICE_PROFILE, fanout::SERVICE_MEDIA] {
            services.register(name, Arc::new(ShuttingDown));
        }
        tracing::debug!("shutdown: fan-out refuses calls");

        // 3. Replication: the driver stops, the peer endpoint (the link every service
        // calls through) closes, the replication state is committed.
        siblings.shutdown().await;
        drop(siblings);
        if !handlers_finished(&mut handlers, HANDLERS_AFTER_LINK_TIMEOUT).await {
            tracing::warn!(running = *handlers.borrow(), "requests still running after replication stopped");
        }
        tracing::debug!("shutdown: replication stopped");

        // 4. The store closes when its last holder lets go (redb then marks the file
        // clean, so the next start needs no repair): here, or, while fan-out's loops
        // (and search's feeder until its next round) still hold it, when the runtime
        // drops them.
        let holders = Arc::strong_count(&store) - 1;
        drop(store);
        tracing::debug!(holders, "shutdown: store released");

        let served = served.map_err(|source| NodeError::Task { what: "server", source })?;
        Ok(served?)
    }
}

/// Waits until no API request is being handled, at most `within`; false on timeout.
async fn handlers_finished(handlers: &mut watch::Receiver<usize>, within: Duration) -> bool {
    // `Err` from `wait_for`: the API is gone, and with it every handler.
    tokio::time::timeout(within, handlers.wait_for(|running| *running == 0)).await.is_ok()
}

/// The API as the transports see it, counting the requests being handled: a handler
/// runs on a blocking thread and can outlive the connection that asked for it, so
/// shutdown waits on this count rather than on the transports alone.
struct CountedApi {
    api: Api,
    running: watch::Sender<usize>,
}

impl transports::Service for CountedApi {
    fn serve_cached(&self, head: &http::request::Parts) -> Option<http::Response<Bytes>> {
        self.api.serve_cached(head)
    }

    fn plan_body(&self, head: &http::request::Parts) -> BodyPlan {
        self.api.plan_body(head)
    }

    fn handle(&self, request: http::Request<RequestBody>) -> http::Response<Bytes> {
        self.running.send_modify(|running| *running += 1);
        let _finished = Finished(&self.running);
        self.api.handle(request)
    }

    fn metrics(&self) -> &Metrics {
        &self.api.metrics
    }
}

/// Counts a request as handled when dropped, also when its handler panicked.
struct Finished<'a>(&'a watch::Sender<usize>);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running -= 1);
    }
}

/// Stands in for a service of this node while it shuts down.
struct ShuttingDown;

impl NeighbourHandler for ShuttingDown {
    fn handle(&self, _from: NodeId, _body: &[u8]) -> Result<Vec<u8>, Refusal> {
        Err(Refusal("this node is shutting down".to_owned()))
    }
}

/// SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C), listened for from before the ready
/// line on, so a stop asked for right after it is not missed.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn listen() -> Result<Signals, NodeError> {
        let listen =
            |kind, signal_name| signal(kind).map_err(|source| NodeError::Signal { signal: signal_name, source });
        Ok(Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Tells systemd the node is alive every `interval` (half of `WatchdogSec`).
async fn watchdog(interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        systemd::notify("WATCHDOG=1");
    }
}

/// The claim code while the node is unclaimed: from config, else the one saved on an
/// earlier start, else a new one. Saved to `<data_dir>/claim-code` for `edgenode status`.
fn claim_code(config: &Config, store: &Store) -> Result<Option<String>, NodeError> {
    let path = config.data_dir.join("claim-code");
    if store.claimed_by()?.is_some() {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    let code = match &config.claim_code {
        Some(code) => code.clone(),
        None => {
            let code = match std::fs::read_to_string(&path) {
                Ok(saved) if !saved.trim().is_empty() => saved.trim().to_owned(),
                _ => new_claim_code(),
            };
            println!("edgenode claim-code={code}");
            tracing::info!("unclaimed: create the first (admin) account with claim code {code}");
            code
        }
    };
    write_private_file(&path, code.as_bytes())?;
    Ok(Some(code))
}

/// Twelve characters from an alphabet without look-alikes (0/O, 1/I/L), in groups of four.
fn new_claim_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let random = os::random_bytes::<12>();
    let chars: Vec<char> = random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect();
    chars.chunks(4).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| NodeError::DataDir { path: path.to_owned(), source })
}

/// Writes `bytes` to `path` (owner-only), synced.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| NodeError::WriteFile { path: path.to_owned(), source })
}
