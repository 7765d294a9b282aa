//! The peer transport over real quinn connections on 127.0.0.1: replication between
//! in-process nodes, reconnection, refused keys, bad frames, pairing.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::pairing::PAIRING_FAILURES_MAX;
use super::*;
use crate::core::replication::{MemoryStore, RecordKey, ShardId, Table};
use crate::test_support::TempDir;

const WAIT_MS: u64 = 5000;

pub(super) fn fast_limits() -> PeerLimits {
    PeerLimits {
        dial_backoff_initial_ms: 50,
        dial_backoff_max_ms: 400,
        handshake_timeout_ms: 2_000,
        idle_timeout_ms: 3_000,
        keep_alive_interval_ms: 500,
        ..PeerLimits::default()
    }
}

pub(super) fn fast_replica_config() -> ReplicaConfig {
    ReplicaConfig {
        heartbeat_interval_ms: 200,
        retransmit_after_ms: 300,
        repair_interval_ms: 1_000,
        ..ReplicaConfig::default()
    }
}

pub(crate) struct TestNode {
    pub(crate) node_id: NodeId,
    pub(crate) identity: Identity,
    _dir: TempDir,
}

pub(crate) fn test_node(index: u64) -> TestNode {
    let dir = TempDir::new("peer");
    let identity = Identity::load_or_create(dir.path(), &format!("node{index}")).unwrap();
    TestNode { node_id: NodeId(index), identity, _dir: dir }
}

pub(super) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts a driver for each of `running`, each knowing every node of `all` as a
/// sibling (with the address of those running).
fn start_cluster(all: &[TestNode], running: usize) -> Vec<PeerDriver<MemoryStore>> {
    start_cluster_serving(all, running, |_| None)
}

/// `start_cluster`, each node serving media with the server `media_server` gives it.
pub(crate) fn start_cluster_serving(
    all: &[TestNode],
    running: usize,
    media_server: impl Fn(usize) -> Option<super::streams::StreamServer>,
) -> Vec<PeerDriver<MemoryStore>> {
    let endpoints: Vec<PeerEndpoint> = all[..running]
        .iter()
        .map(|node| {
            let pins = all.iter().filter(|other| other.node_id != node.node_id).map(|other| other.identity.pin.clone());
            PeerEndpoint::bind(&node.identity, loopback(), pins, &fast_limits()).unwrap()
        })
        .collect();
    let addresses: Vec<String> = endpoints.iter().map(|endpoint| endpoint.local_addr().to_string()).collect();
    endpoints
        .into_iter()
        .zip(all)
        .enumerate()
        .map(|(node_index, (endpoint, node))| {
            let siblings = all
                .iter()
                .enumerate()
                .filter(|(_, other)| other.node_id != node.node_id)
                .map(|(index, other)| PeerSibling {
                    node_id: other.node_id,
                    pin: other.identity.pin.clone(),
                    address: addresses.get(index).cloned(),
                    zone: format!("zone{index}"),
                    trust: TRUST_MAX,
                })
                .collect();
            let config = PeerDriverConfig {
                node_id: node.node_id,
                zone: format!("zone-{}", node.node_id),
                siblings,
                replica: fast_replica_config(),
                limits: fast_limits(),
                advertised_address: endpoint.local_addr().to_string(),
                media_server: media_server(node_index),
                trust: std::sync::Arc::new(super::trust::TrustBook::in_memory()),
                neighbours: None,
                records_arrived: None,
            };
            PeerDriver::start(endpoint, config, MemoryStore::default(), DurableState::default(), None)
        })
        .collect()
}

pub(crate) async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn post(index: usize) -> LocalWrite {
    LocalWrite {
        shard: ShardId("a1".to_owned()),
        key: RecordKey::new(Table::Post, format!("post-{index}")),
        body: Some(Bytes::from(format!("caption {index}"))),
    }
}

async fn holds(driver: &PeerDriver<MemoryStore>, write: &LocalWrite) -> bool {
    let (shard, key, body) = (write.shard.clone(), write.key.clone(), write.body.clone());
    driver.read_store(move |store| store.get(&shard, &key).is_some_and(|item| item.body == body)).await.unwrap()
}

async fn holds_all(driver: &PeerDriver<MemoryStore>, writes: &[LocalWrite]) -> bool {
    for write in writes {
        if !holds(driver, write).await {
            return false;
        }
    }
    true
}

async fn connected(driver: &PeerDriver<MemoryStore>, peer: NodeId) -> bool {
    driver.peer_states().await.unwrap().iter().any(|state| state.node_id == peer && state.connected)
}

/// A bare client endpoint that presents `identity` and expects the server's `pin`.
async fn raw_connect(
    identity: &Identity,
    server_pin: &str,
    server: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    raw_connect_with(identity, server_pin, server, &fast_limits()).await
}

async fn raw_connect_with(
    identity: &Identity,
    server_pin: &str,
    server: SocketAddr,
    limits: &PeerLimits,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let transport = Arc::new(transport_config(limits).unwrap());
    let config = crypto::client_config(identity, Some(server_pin), ALPN_PEER, transport).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.connect_with(config, server, "edgenode").unwrap().await
}

/// Whether the server lets this connection carry a frame: a refused client
/// certificate only shows on the client once the server's alert arrives.
async fn usable(connection: &quinn::Connection) -> bool {
    let attempt = async {
        let (mut send, _recv) = connection.open_bi().await.ok()?;
        send.write_all(&[0, 0, 0, 2]).await.ok()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        connection.close_reason().is_none().then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten().is_some()
}

fn closed_with(error: &quinn::ConnectionError, code: u32) -> bool {
    matches!(error, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == VarInt::from_u32(code))
}

#[tokio::test]
async fn three_nodes_replicate_writes_both_ways() {
    let nodes: Vec<TestNode> = (1..=3).map(test_node).collect();
    let drivers = start_cluster(&nodes, 3);
    let on_a = post(1);
    drivers[0].handle_local_write(on_a.clone()).await.unwrap();
    eventually("B and C have A's write", || async {
        holds(&drivers[1], &on_a).await && holds(&drivers[2], &on_a).await
    })
    .await;
    let on_c = post(2);
    drivers[2].handle_local_write(on_c.clone()).await.unwrap();
    eventually("A and B have C's write", || async {
        holds(&drivers[0], &on_c).await && holds(&drivers[1], &on_c).await
    })
    .await;

    let states = drivers[0].peer_states().await.unwrap();
    assert_eq!(states.iter().map(|state| state.node_id).collect::<Vec<_>>(), vec![NodeId(2), NodeId(3)]);
    for state in &states {
        assert!(state.connected && state.frames_in > 0 && state.frames_out > 0 && state.bytes_in > 0, "{state:?}");
        assert_eq!(state.bad_frames, 0);
        assert!(state.last_contact_ms_ago.is_some());
    }
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_killed_connection_reconverges() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let drivers = start_cluster(&nodes, 2);
    let writes: Vec<LocalWrite> = (0..60).map(post).collect();
    eventually("A and B are connected", || connected(&drivers[0], NodeId(2))).await;
    for (index, write) in writes.iter().enumerate() {
        drivers[0].handle_local_write(write.clone()).await.unwrap();
        if index == 30 {
            assert!(drivers[0].disconnect(NodeId(2)).await.unwrap());
        }
    }
    eventually("B has every write", || holds_all(&drivers[1], &writes)).await;
    eventually("they are connected again", || connected(&drivers[1], NodeId(1))).await;

    // And after B restarts from its durable parts (on a new port: A cannot dial it,
    // so this also shows that one dialling side is enough), it catches up.
    let mut drivers = drivers;
    let b = drivers.pop().unwrap();
    let (store, durable) = b.shutdown().await.unwrap();
    let later = post(100);
    drivers[0].handle_local_write(later.clone()).await.unwrap();
    let endpoint =
        PeerEndpoint::bind(&nodes[1].identity, loopback(), [nodes[0].identity.pin.clone()], &fast_limits()).unwrap();
    let config = PeerDriverConfig {
        node_id: NodeId(2),
        zone: "zone1".to_owned(),
        siblings: vec![PeerSibling {
            node_id: NodeId(1),
            pin: nodes[0].identity.pin.clone(),
            address: Some(drivers[0].local_addr().to_string()),
            zone: "zone0".to_owned(),
            trust: TRUST_MAX,
        }],
        replica: fast_replica_config(),
        limits: fast_limits(),
        advertised_address: String::new(),
        media_server: None,
        trust: std::sync::Arc::new(super::trust::TrustBook::in_memory()),
        neighbours: None,
        records_arrived: None,
    };
    let b = PeerDriver::start(endpoint, config, store, durable, None);
    eventually("the restarted B has the later write", || holds(&b, &later)).await;
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn unpaired_keys_are_refused_at_the_tls_layer_both_ways() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let stranger = test_node(9);
    let drivers = start_cluster(&nodes, 1);
    let a = &drivers[0];

    // A stranger's key, dialling A: the server refuses its client certificate.
    match raw_connect(&stranger.identity, a.pin(), a.local_addr()).await {
        Ok(connection) => {
            assert!(!usable(&connection).await, "A accepted a key that is not on its sibling list");
            let reason = connection.close_reason().expect("closed");
            let refused_by_tls = matches!(&reason, quinn::ConnectionError::ConnectionClosed(close)
                if close.reason.starts_with(b"invalid peer certificate"));
            assert!(refused_by_tls, "refused by TLS, not later: {reason:?}");
        }
        Err(error) => assert!(matches!(error, quinn::ConnectionError::TransportError(_)), "{error:?}"),
    }

    // B's key, dialling A: accepted, and the control stream works.
    let sibling = raw_connect(&nodes[1].identity, a.pin(), a.local_addr()).await.unwrap();
    assert!(usable(&sibling).await);
    sibling.close(VarInt::from_u32(0), b"");

    // A sibling dialling a server whose key is not the pin it expects: refused by
    // the client.
    let impostor =
        PeerEndpoint::bind(&stranger.identity, loopback(), [nodes[1].identity.pin.clone()], &fast_limits()).unwrap();
    let impostor_address = impostor.local_addr();
    let impostor_endpoint = impostor.endpoint.clone();
    let accepting = tokio::spawn(async move {
        if let Some(incoming) = impostor_endpoint.accept().await {
            let _ = incoming.await;
        }
    });
    let error = raw_connect(&nodes[1].identity, &nodes[0].identity.pin, impostor_address).await.unwrap_err();
    assert!(matches!(error, quinn::ConnectionError::TransportError(_)), "{error:?}");
    accepting.abort();

    let states = a.peer_states().await.unwrap();
    assert_eq!(states[0].bad_frames, 0);
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_the_endpoint_keeps_serving() {
    // A and B run; C is a sibling on paper whose key a raw client uses.
    let nodes: Vec<TestNode> = (1..=3).map(test_node).collect();
    let drivers = start_cluster(&nodes, 2);
    let a = &drivers[0];
    let garbage: [&[u8]; 3] = [
        &[0, 0, 0, 4, 9, 1, 0, 0],        // protocol version 9
        &[0xff, 0xff, 0xff, 0xff],        // 4 GiB frame: refused before allocating
        &[0, 0, 0, 6, 1, 77, 1, 2, 3, 4], // unknown tag
    ];
    for bytes in garbage {
        let connection = raw_connect(&nodes[2].identity, a.pin(), a.local_addr()).await.unwrap();
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        let error = tokio::time::timeout(Duration::from_millis(WAIT_MS), connection.closed())
            .await
            .expect("A closes the connection");
        assert!(closed_with(&error, close_code::BAD_FRAME), "{error:?}");
    }
    eventually("A counted three bad frames from C", || async {
        let states = a.peer_states().await.unwrap();
        states.iter().any(|state| state.node_id == NodeId(3) && state.bad_frames == 3 && !state.connected)
    })
    .await;

    let write = post(7);
    a.handle_local_write(write.clone()).await.unwrap();
    eventually("B still gets A's writes", || holds(&drivers[1], &write)).await;
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn pairing_with_the_right_code_exchanges_pins_and_ids() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let mut drivers = start_cluster(&nodes[..1], 1);
    drivers.extend(start_cluster(&nodes[1..], 1));
    let (a, b) = (&drivers[0], &drivers[1]);

    // No code outstanding: an unpinned key does not get past TLS.
    assert!(b.join(&a.local_addr().to_string(), "AAAAA-AAAAA").await.is_err());

    let code = a.start_pairing();
    let joined = b.join(&a.local_addr().to_string(), &code.to_string().to_lowercase()).await.unwrap();
    assert_eq!(
        joined,
        SiblingInfo { node_id: NodeId(1), pin: a.pin().to_owned(), address: a.local_addr().to_string() }
    );
    let paired = a.take_paired();
    assert_eq!(paired.len(), 1);
    assert_eq!((paired[0].node_id, paired[0].pin.as_str()), (NodeId(2), b.pin()));
    assert_eq!(paired[0].address, b.local_addr().to_string());

    // Single use.
    assert!(b.join(&a.local_addr().to_string(), code.as_str()).await.is_err());
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn pairing_codes_are_burnt_after_three_wrong_tries() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let mut drivers = start_cluster(&nodes[..1], 1);
    drivers.extend(start_cluster(&nodes[1..], 1));
    let (a, b) = (&drivers[0], &drivers[1]);
    let address = a.local_addr().to_string();
    let code = a.start_pairing();
    for _ in 0..PAIRING_FAILURES_MAX {
        assert_eq!(b.join(&address, "WRONG-C0DE0").await, Err(PairingError::WrongCode));
    }
    assert!(b.join(&address, code.as_str()).await.is_err(), "the code is void after three wrong tries");
    assert!(a.take_paired().is_empty());
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_node_without_a_running_endpoint_can_join() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let drivers = start_cluster(&nodes[..1], 1);
    let a = &drivers[0];
    let code = a.start_pairing();
    let address = a.local_addr().to_string();
    let joined = pairing::join_standalone(&nodes[1].identity, NodeId(2), "192.0.2.7:7443", &address, code.as_str())
        .await
        .unwrap();
    assert_eq!((joined.node_id, joined.pin.as_str()), (NodeId(1), a.pin()));
    let paired = a.take_paired();
    assert_eq!(
        paired,
        vec![SiblingInfo {
            node_id: NodeId(2),
            pin: nodes[1].identity.pin.clone(),
            address: "192.0.2.7:7443".to_owned()
        }]
    );
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_costs_a_bounded_queue() {
    let nodes: Vec<TestNode> = (1..=3).map(test_node).collect();
    let drivers = start_cluster(&nodes, 2);
    let a = &drivers[0];
    // C says Hello, so A streams its log to it, and then never reads.
    let limits =
        PeerLimits { stream_receive_window_bytes: 64 * 1024, receive_window_bytes: 64 * 1024, ..fast_limits() };
    let connection = raw_connect_with(&nodes[2].identity, a.pin(), a.local_addr(), &limits).await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let hello = Message::Hello(wire::Hello {
        epoch: 0,
        log_end: 0,
        marks: Vec::new(),
        complete: crate::core::hlc::Timestamp::default(),
        reply_wanted: true,
    });
    send.write_all(&wire::encode(&hello, ReplicaConfig::default().frame_bytes_max).unwrap()).await.unwrap();
    eventually("A has C connected", || connected(a, NodeId(3))).await;

    let body = Bytes::from(vec![b'x'; 32 * 1024]);
    let writes: Vec<LocalWrite> =
        (0..100).map(|index| LocalWrite { body: Some(body.clone()), ..post(index) }).collect();
    for write in &writes {
        a.handle_local_write(write.clone()).await.unwrap();
    }
    eventually("B has every write", || holds_all(&drivers[1], &writes)).await;
    let states = a.peer_states().await.unwrap();
    let c = states.iter().find(|state| state.node_id == NodeId(3)).unwrap();
    assert!(c.frames_dropped > 0, "{c:?}");
    assert!(c.bytes_out < 3 * 1024 * 1024 / 2, "A queued {} bytes for a peer that reads nothing", c.bytes_out);
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

struct Echo;

impl neighbours::NeighbourHandler for Echo {
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, neighbours::Refusal> {
        if body == b"refuse me" {
            return Err(neighbours::Refusal("refused as asked".to_owned()));
        }
        Ok(format!("{from}:{}", String::from_utf8_lossy(body)).into_bytes())
    }
}

/// A node that is no sibling calls a service of another over `edgenode-neighbour/1`:
/// admitted by its configured pin, answered; unknown services and refusals come back
/// as refusals; a key the server was not given cannot call at all.
#[tokio::test]
async fn neighbours_call_each_others_services_and_strangers_cannot() {
    use neighbours::{NeighbourAddress, NeighbourError, NeighbourLink, NeighbourServices};
    let (server, caller, stranger) = (test_node(1), test_node(2), test_node(9));
    let services = Arc::new(NeighbourServices::default());
    services.register("echo", Arc::new(Echo));
    let endpoint =
        PeerEndpoint::bind(&server.identity, loopback(), [caller.identity.pin.clone()], &fast_limits()).unwrap();
    let config = PeerDriverConfig {
        node_id: server.node_id,
        zone: "zone1".to_owned(),
        siblings: Vec::new(),
        replica: fast_replica_config(),
        limits: fast_limits(),
        advertised_address: String::new(),
        media_server: None,
        trust: Arc::new(super::trust::TrustBook::in_memory()),
        neighbours: Some(NeighbourServing {
            pins: BTreeMap::from([(caller.identity.pin.clone(), caller.node_id)]),
            services,
            connections: Default::default(),
        }),
        records_arrived: None,
    };
    let driver = PeerDriver::start(endpoint, config, MemoryStore::default(), DurableState::default(), None);
    let book = [NeighbourAddress {
        node_id: server.node_id,
        address: driver.local_addr().to_string(),
        pin: server.identity.pin.clone(),
    }];
    let link = NeighbourLink::bind_client(&caller.identity, loopback(), &fast_limits()).unwrap();
    link.set_neighbours(book.clone());

    let answer = link.call(server.node_id, "echo", b"hello", Duration::from_millis(WAIT_MS)).await.expect("an answer");
    assert_eq!(answer, format!("{}:hello", caller.node_id).into_bytes(), "the server knows who called");
    let again =
        link.call(server.node_id, "echo", b"again", Duration::from_millis(WAIT_MS)).await.expect("a second answer");
    assert_eq!(again, format!("{}:again", caller.node_id).into_bytes());
    match link.call(server.node_id, "echo", b"refuse me", Duration::from_millis(WAIT_MS)).await {
        Err(NeighbourError::Refused { reason, .. }) => assert_eq!(reason, "refused as asked"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match link.call(server.node_id, "nothing-here", b"", Duration::from_millis(WAIT_MS)).await {
        Err(NeighbourError::Refused { reason, .. }) => assert!(reason.contains("no service"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        link.call(NodeId(77), "echo", b"", Duration::from_millis(WAIT_MS)).await,
        Err(NeighbourError::Unknown(NodeId(77)))
    ));

    let outsider = NeighbourLink::bind_client(&stranger.identity, loopback(), &fast_limits()).unwrap();
    outsider.set_neighbours(book);
    match outsider.call(server.node_id, "echo", b"let me in", Duration::from_millis(WAIT_MS)).await {
        Err(NeighbourError::Unreachable { .. }) => {}
        other => panic!("a stranger's key must not get an answer, got {other:?}"),
    }
    driver.shutdown().await.unwrap();
}
