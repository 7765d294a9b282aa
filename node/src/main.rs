//! `edgenode`: the command line. Thin: parse flags, load config, start the runtime,
//! wire the layers together (store → media → api → net) and wait for a signal.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use edgenode::api::{Api, NodeInfo};
use edgenode::config::Config;
use edgenode::discovery::{self, Advertisement, Discovery};
use edgenode::http::{self as transports, systemd, Identity};
use edgenode::media::{MediaLimits, Pipeline};
use edgenode::os;
use edgenode::services::replication::Siblings;
use edgenode::services::search::SearchService;
use edgenode::store::Store;

#[derive(Parser)]
#[command(name = "edgenode", version, about = "A self-hosted neighbourhood photo-sharing node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: HTTPS and HTTP/3 on one port, storage in the data directory.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address and port for both TCP (HTTPS) and UDP (HTTP/3).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Node name (mDNS instance and host name).
        #[arg(long)]
        name: Option<String>,
        /// Claim code for the first (admin) account; generated when not given.
        #[arg(long)]
        claim_code: Option<String>,
        /// Do not advertise or browse with mDNS.
        #[arg(long)]
        no_mdns: bool,
    },
    /// Browse the local network for Edgenode nodes (no node needs to run here).
    Discover {
        /// Seconds to listen for adverts.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pair with sibling nodes and list them (talks to the node running on this data dir).
    Peer {
        #[command(subcommand)]
        action: PeerAction,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Show this node's identity, claim state, whether it is serving, and nearby nodes.
    Status {
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PeerAction {
    /// Show a one-time code; run `edgenode peer join` with it on the other node.
    Pair {
        /// Seconds to wait for the other node to join (0: print the code and return).
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Join the node at ADDRESS (its peer address, `host:port`) with the code it showed.
    Join { address: String, code: String },
    /// Siblings with state, last contact, lag and trust.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// TOML configuration file (every key has a default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the database, media and identity live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl CommonArgs {
    fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,quinn=warn,h3=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    match cli.command {
        Command::Serve { common, listen, name, claim_code, no_mdns } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(name) = name {
                config.name = name;
            }
            if claim_code.is_some() {
                config.claim_code = claim_code;
            }
            if no_mdns {
                config.mdns.enabled = false;
            }
            config.validate()?;
            runtime.block_on(serve(config))
        }
        Command::Status { common, json } => runtime.block_on(status(common.load()?, json)),
        Command::Peer { action, common } => runtime.block_on(peer(common.load()?, action)),
        Command::Discover { timeout, json } => discover(std::time::Duration::from_secs(timeout), json),
    }
}

async fn serve(config: Config) -> Result<()> {
    create_private_dir(&config.data_dir)?;
    let identity = Identity::load_or_create(&config.data_dir, &config.name)?;
    let store = Arc::new(
        Store::open_as(&config.data_dir, edgenode::core::model::NodeId::from_pin(&identity.pin))
            .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?,
    );
    store.set_disk_reserve(config.limits.disk_free_bytes_min);
    let claim_code = claim_code(&config, &store)?;
    let limits = &config.limits;
    let pipeline = Pipeline::new(MediaLimits {
        upload_bytes_max: limits.upload_bytes_max,
        pixels_max: limits.image_pixels_max,
        workers: limits.media_workers,
        decoded_bytes_in_flight_max: limits.media_decoded_bytes_in_flight_max,
    });
    let listeners = transports::bind(config.listen, &identity, limits).await?;
    let siblings = Siblings::start(&config, &identity, store.clone()).await?;
    let search = SearchService::start(&config, store.clone(), &siblings)
        .map_err(|reason| anyhow::anyhow!("cannot start search: {reason}"))?;
    let peer_address = siblings.peer_address();
    let local_addr = listeners.local_addr;
    let node = NodeInfo {
        name: config.name.clone(),
        region: config.region.clone(),
        roles: config.roles.clone(),
        pin: identity.pin.clone(),
        addresses: vec![local_addr.to_string()],
    };
    let fanout = edgenode::services::fanout::Fanout::start(
        store.clone(),
        siblings.neighbour_link().clone(),
        siblings.neighbour_services(),
        &config.fanout,
        &config.data_dir,
    )?;
    let control_token = base64_url(&os::random_bytes::<32>());
    write_private_file(&config.data_dir.join("control-token"), control_token.as_bytes())?;
    let mut api = Api::new(&config, store.clone(), pipeline, node, claim_code)
        .with_control_token(&control_token)
        .with_siblings(siblings.clone())
        .with_search(search)
        .with_fanout(fanout);
    let discovery = if config.mdns.enabled {
        let advertisement = Advertisement {
            name: config.name.clone(),
            node_id: store.node_id().to_string(),
            pin: identity.pin.clone(),
            region: config.region.clone(),
            port: local_addr.port(),
            listen_ip: local_addr.ip(),
            interfaces: config.mdns.interfaces.clone(),
            siblings_pins: edgenode::services::replication::all_siblings(&config)?
                .iter()
                .map(|sibling| sibling.pin.clone())
                .collect(),
        };
        let discovery = tokio::task::spawn_blocking(move || Discovery::start(advertisement)).await?;
        api = api.with_nearby(discovery.nearby_handle());
        Some(discovery)
    } else {
        tracing::info!("mDNS is off (--no-mdns or [mdns] enabled = false)");
        None
    };
    let api = Arc::new(api);

    let (shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        systemd::notify("STOPPING=1");
        let _ = shutdown_sender.send(true);
        // Goodbye packets go out at once, not after the drain, so phones stop
        // offering a node that is going away.
        if let Some(discovery) = discovery {
            let _ = tokio::task::spawn_blocking(move || discovery.shutdown()).await;
        }
    });
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                systemd::notify("WATCHDOG=1");
            }
        });
    }
    let serving = tokio::spawn(transports::serve(listeners, api, config.limits.clone(), shutdown));

    // Written before the ready line, so whoever waits for that line finds it.
    write_private_file(&config.data_dir.join("peer-address"), peer_address.to_string().as_bytes())?;
    let ready = format!(
        "edgenode ready listen={local_addr} pin={} node_id={} peer={peer_address}",
        identity.pin,
        store.node_id()
    );
    tracing::info!(listen = %local_addr, pin = %identity.pin, node_id = %store.node_id(), name = %config.name, "ready");
    println!("{ready}");
    std::io::stdout().flush()?;
    // Tells `edgenode status` where this node answers, whatever flags started it.
    let address_file = config.data_dir.join("serving-address");
    write_private_file(&address_file, local_addr.to_string().as_bytes())?;
    systemd::notify("READY=1");

    serving.await.context("the server task failed")??;
    siblings.shutdown().await;
    let _ = std::fs::remove_file(&address_file);
    tracing::info!("stopped");
    Ok(())
}

/// The claim code while the node is unclaimed: from config, else the one saved on an
/// earlier start, else a new one. Saved to `<data_dir>/claim-code` for `edgenode status`.
fn claim_code(config: &Config, store: &Store) -> Result<Option<String>> {
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

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn discover(timeout: std::time::Duration, json: bool) -> Result<()> {
    let nodes = discovery::browse_once(timeout)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        print!("{}", discovery::render_table(&nodes));
    }
    Ok(())
}

/// Twelve characters from an alphabet without look-alikes (0/O, 1/I/L), in groups of four.
fn new_claim_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let random = os::random_bytes::<12>();
    let chars: Vec<char> = random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect();
    chars.chunks(4).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create the data directory {}", path.display()))
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn status(config: Config, json: bool) -> Result<()> {
    let identity = Identity::load(&config.data_dir)?;
    let claim_code =
        std::fs::read_to_string(config.data_dir.join("claim-code")).ok().map(|code| code.trim().to_owned());
    let saved_address = std::fs::read_to_string(config.data_dir.join("serving-address")).ok();
    let mut target = saved_address.and_then(|address| address.trim().parse().ok()).unwrap_or(config.listen);
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let control_token = std::fs::read_to_string(config.data_dir.join("control-token")).unwrap_or_default();
    let fetch = async {
        let info = fetch_json(target, &identity.pin, "/api/v1/node", Some(control_token.trim())).await?;
        let nearby = fetch_json(target, &identity.pin, "/api/v1/node/nearby", Some(control_token.trim())).await.ok();
        anyhow::Ok((info, nearby))
    };
    let (live, nearby) = match tokio::time::timeout(std::time::Duration::from_secs(5), fetch).await {
        Ok(Ok((info, nearby))) => (Some(info), nearby),
        Ok(Err(error)) => {
            tracing::debug!(%error, "node not answering");
            (None, None)
        }
        Err(_) => (None, None),
    };
    if json {
        let value = serde_json::json!({
            "data_dir": config.data_dir,
            "pin": identity.pin,
            "claim_code": claim_code,
            "serving": live.is_some(),
            "node": live,
            "nearby": nearby,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let field = |info: &Option<serde_json::Value>, key: &str| {
        info.as_ref().and_then(|info| info.get(key)).map(|value| value.to_string().trim_matches('"').to_owned())
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("data dir", config.data_dir.display().to_string()),
        ("pin", identity.pin.clone()),
        ("serving", if live.is_some() { format!("yes, https://{target}") } else { format!("no answer on {target}") }),
    ];
    for (label, key) in [
        ("name", "name"),
        ("node id", "node_id"),
        ("version", "version"),
        ("region", "region"),
        ("uptime s", "uptime_seconds"),
    ] {
        if let Some(value) = field(&live, key) {
            rows.push((label, value));
        }
    }
    if let Some(storage) = live.as_ref().map(|info| &info["storage"]).filter(|storage| storage.is_object()) {
        let gigabytes =
            |key: &str| storage[key].as_f64().map_or("?".to_owned(), |bytes| format!("{:.2} GB", bytes / 1e9));
        let used = gigabytes("used_bytes");
        rows.push((
            "storage",
            format!("{used} used, {} free of {}", gigabytes("free_bytes"), gigabytes("total_bytes")),
        ));
    }
    rows.push((
        "claimed",
        match (&claim_code, field(&live, "claimed")) {
            (Some(code), _) => format!("no — claim code {code}"),
            (None, Some(claimed)) => {
                if claimed == "true" {
                    "yes".into()
                } else {
                    "no".into()
                }
            }
            (None, None) => "yes (no claim code saved)".into(),
        },
    ));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{label:<width$}  {value}");
    }
    if let Some(nearby) = nearby {
        let nodes: Vec<discovery::NearbyNode> = serde_json::from_value(nearby["items"].clone()).unwrap_or_default();
        if nearby["mdns"] == serde_json::Value::Bool(false) {
            println!("\nnearby: mDNS is off");
        } else {
            print!("\nnearby:\n{}", discovery::render_table(&nodes));
        }
    }
    Ok(())
}

/// The node running on this data dir, as the CLI reaches it: address, pin, control token.
struct LocalNode {
    target: std::net::SocketAddr,
    pin: String,
    control_token: String,
}

impl LocalNode {
    fn of(config: &Config) -> Result<LocalNode> {
        let identity = Identity::load(&config.data_dir)?;
        let saved_address = std::fs::read_to_string(config.data_dir.join("serving-address")).ok();
        let mut target = saved_address.and_then(|address| address.trim().parse().ok()).unwrap_or(config.listen);
        if target.ip().is_unspecified() {
            target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let control_token = std::fs::read_to_string(config.data_dir.join("control-token")).with_context(|| {
            format!("no node has run on {} yet: start it with `edgenode serve`", config.data_dir.display())
        })?;
        Ok(LocalNode { target, pin: identity.pin, control_token: control_token.trim().to_owned() })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let call = call_json(self.target, &self.pin, method, path, Some(&self.control_token), body);
        match tokio::time::timeout(std::time::Duration::from_secs(30), call).await {
            Ok(answer) => answer.with_context(|| format!("asking the node on {}", self.target)),
            Err(_) => bail!("the node on {} did not answer within 30 s", self.target),
        }
    }
}

async fn peer(config: Config, action: PeerAction) -> Result<()> {
    let node = LocalNode::of(&config)?;
    match action {
        PeerAction::Pair { wait } => {
            let before = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
            let known = |answer: &serde_json::Value| -> Vec<String> {
                answer["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item["node_id"].as_str().map(str::to_owned))
                    .collect()
            };
            let known_before = known(&before);
            let answer = node.call(http::Method::POST, "/api/v1/node/peers/pair", None).await?;
            let code = answer["code"].as_str().unwrap_or_default();
            println!("pairing code  {code}  (valid {} s, one use)", answer["expires_in_seconds"]);
            println!("on the other node run:");
            println!("  edgenode peer join {} {code}", answer["peer_address"].as_str().unwrap_or_default());
            let others: Vec<&str> = answer["peer_addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|address| address.as_str())
                .skip(1)
                .collect();
            if !others.is_empty() {
                println!("  (or, from another network, this node's other addresses: {})", others.join(", "));
            }
            println!(
                "and check that it reports this node as {} with pin {}",
                answer["node_id"].as_str().unwrap_or_default(),
                answer["pin"].as_str().unwrap_or_default()
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            while std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let now = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
                if let Some(new) = known(&now).into_iter().find(|id| !known_before.contains(id)) {
                    println!("paired with {new}");
                    return Ok(());
                }
            }
            if wait > 0 {
                bail!("nobody joined within {wait} s; the code stays valid until it expires");
            }
            Ok(())
        }
        PeerAction::Join { address, code } => {
            let body = serde_json::json!({"address": address, "code": code});
            let answer = node.call(http::Method::POST, "/api/v1/node/peers/join", Some(body)).await?;
            println!(
                "paired with {} at {} (pin {})",
                answer["node_id"].as_str().unwrap_or_default(),
                answer["address"].as_str().unwrap_or_default(),
                answer["pin"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        PeerAction::List { json } => {
            let answer = node.call(http::Method::GET, "/api/v1/node/peers", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["items"])?);
                return Ok(());
            }
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no siblings: pair with `edgenode peer pair` here and `edgenode peer join` there");
                return Ok(());
            }
            println!(
                "{:<16}  {:<22}  {:<12}  {:>12}  {:>6}  {:<15}  {:<6}",
                "NODE ID", "ADDRESS", "STATE", "LAST CONTACT", "LAG", "TRUST", "SOURCE"
            );
            let mut reasons = Vec::new();
            for item in items {
                let trust = format!(
                    "{} {}",
                    item["trust"].as_u64().unwrap_or_default(),
                    item["trust_tier"].as_str().unwrap_or_default()
                );
                // Why a sibling lost trust: its events by kind, and the latest one.
                let counts = item["trust_events"].as_object().cloned().unwrap_or_default();
                let lowered: Vec<String> = counts
                    .iter()
                    .filter(|(event, _)| event.as_str() != "verified")
                    .map(|(event, count)| format!("{event} x{count}"))
                    .collect();
                if !lowered.is_empty() {
                    let latest = item["trust_recent"].as_array().and_then(|recent| recent.last()).cloned();
                    let latest = latest.map_or(String::new(), |note| {
                        format!(
                            "; latest: {} ({})",
                            note["event"].as_str().unwrap_or_default(),
                            note["detail"].as_str().unwrap_or_default()
                        )
                    });
                    reasons.push(format!(
                        "  {}: {}, verified x{}{latest}",
                        item["node_id"].as_str().unwrap_or_default(),
                        lowered.join(", "),
                        counts.get("verified").and_then(|count| count.as_u64()).unwrap_or_default()
                    ));
                }
                let contact = item["last_contact_ms_ago"]
                    .as_u64()
                    .map_or("never".to_owned(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
                let lag = item["lag_entries"].as_u64().map_or("-".to_owned(), |lag| lag.to_string());
                println!(
                    "{:<16}  {:<22}  {:<12}  {:>12}  {:>6}  {:<15}  {:<6}",
                    item["node_id"].as_str().unwrap_or_default(),
                    item["address"].as_str().unwrap_or("-"),
                    item["state"].as_str().unwrap_or_default(),
                    contact,
                    lag,
                    trust,
                    item["source"].as_str().unwrap_or_default(),
                );
            }
            if !reasons.is_empty() {
                println!("trust lowered by:\n{}", reasons.join("\n"));
            }
            Ok(())
        }
    }
}

/// GET `path` from the local node over HTTPS, checking its pin.
async fn fetch_json(
    target: std::net::SocketAddr,
    pin: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<serde_json::Value> {
    call_json(target, pin, http::Method::GET, path, bearer, None).await
}

/// Calls `path` on the local node over HTTPS, checking its pin; an error answer
/// becomes an error with the node's message.
async fn call_json(
    target: std::net::SocketAddr,
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
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|error| error["error"]["message"].as_str().or(error["message"].as_str()).map(str::to_owned))
            .unwrap_or_default();
        bail!("node answered {status}: {message}");
    }
    Ok(serde_json::from_slice(&body)?)
}
