//! System tier, sibling replication: three real `edgenode` processes in network
//! namespaces, paired as siblings through their config files, written to by
//! concurrent clients; then partitioned, killed with SIGKILL, restarted and healed.
//! The tests are `#[ignore]`d: run them with `--include-ignored`, as root, with the
//! tools `tests/system/install-deps` installs (a missing one fails the test).
//!
//! Each test is one acceptance check of the replication issue and prints what it
//! measured (`check N: …`); run with `--nocapture` to see the numbers. Clients run
//! curl inside each node's own namespace, so a node stays reachable to its clients
//! while its cable is pulled out of the switch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lab;
use crate::lab::{eventually, Endpoint, Host, Lab, LabNode, ADMIN_PASSWORD};
use crate::lab_siblings::{admin_handle, expect_status, log_in, percent_encode, start_paired, text_field};
use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::steps::PASSWORD;
use serde_json::{json, Value};

/// Three siblings, three replicas: every node holds everything.
const REPLICAS: usize = 3;
const NODE_NAMES: [&str; 3] = ["alder", "birch", "cedar"];
/// How long siblings get to connect after they start.
const CONNECT_WITHIN: Duration = Duration::from_secs(60);
/// How long siblings get to find each other again after a heal: they redial with a
/// backoff that doubles up to a minute.
const RECONNECT_AFTER_HEAL_WITHIN: Duration = Duration::from_secs(120);
/// How long both sides get to notice a cut link (the sibling idle timeout is 30 s).
const PARTITION_NOTICED_WITHIN: Duration = Duration::from_secs(60);
/// How long the nodes get to agree after the last write (or the heal, or a restart).
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);
/// One client request, including a media upload on a busy debug build.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages of 100 a post listing may take before we call it runaway.
const LISTING_PAGES_MAX: usize = 50;

/// Check 1's load.
const PHOTO_COUNT: usize = 200;
const POST_COUNT: usize = 1_000;
const USERS_PER_NODE: usize = 2;

/// Check 2: the node cut off, and the node killed with SIGKILL while written to.
const ISOLATED_NODE: usize = 2;
const KILLED_NODE: usize = 1;
const SEED_POSTS_PER_USER: usize = 10;
/// Acknowledged writes the killed node takes before the kill, and again after its restart.
const ACKED_WRITES_AROUND_KILL: usize = 30;
/// Acknowledged writes every writer makes during the partition.
const ACKED_WRITES_PER_WRITER_MIN: usize = 60;
const WRITER_OPERATIONS_MAX: usize = 3_000;
const WRITE_PHASE_WITHIN: Duration = Duration::from_secs(120);
/// A writer that got no answer (its node is down) waits this long before the next try.
const NO_ANSWER_PAUSE: Duration = Duration::from_millis(200);
/// Between a writer's operations: the partition lasts past the idle timeout, and the
/// history stays small enough to check quickly.
const WRITE_PAUSE: Duration = Duration::from_millis(100);
const DOWNTIME: Duration = Duration::from_secs(1);
const WRITER_SEED: u64 = 0x5eed_2024;

/// Check 1: three nodes, users on each, 200 photos and 1,000 posts written by
/// concurrent clients to each author's home node; every node ends with everything.
#[test]
#[ignore = "system tier: root, network namespaces, python-zeroconf (tests/system/install-deps), minutes"]
fn three_siblings_converge_after_200_photos_and_1000_posts() {
    lab::require_tools();
    let cluster = Cluster::start();
    let users = cluster.register_users(USERS_PER_NODE);
    let resident_at_start: Vec<u64> = cluster.nodes.iter().map(LabNode::peak_resident_bytes).collect();
    // Clients speak to each node inside its own namespace (over loopback): what
    // crosses `eth0` is sibling traffic.
    let link_bytes_at_start: u64 = cluster.hosts.iter().map(Host::link_bytes_sent).sum();

    let photos: Vec<Vec<u8>> = (0..PHOTO_COUNT).map(|index| distinct_photo(index as u8)).collect();
    let distinct_hashes: BTreeSet<String> = photos.iter().map(|photo| sha256_hex(photo)).collect();
    assert_eq!(distinct_hashes.len(), PHOTO_COUNT, "the fixture photos differ from each other");

    let started = Instant::now();
    // One client thread per user: photo i and post i belong to user i % users.
    let written: Vec<Written> = std::thread::scope(|scope| {
        let threads: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(user_index, user)| {
                let endpoint = cluster.nodes[user.home].endpoint();
                let photos = &photos;
                let user_count = users.len();
                scope.spawn(move || write_photos_and_posts(&endpoint, user, user_index, user_count, photos))
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().expect("a writer thread")).collect()
    });
    let last_ack = written.iter().map(|written| written.last_ack).max().expect("writers");
    let writing_took = last_ack.duration_since(started);

    let statuses = cluster.wait_until_converged("check 1: digests equal and no media missing after the writes");
    let converged_after = last_ack.elapsed();
    let peak_resident: Vec<u64> = cluster.nodes.iter().map(LabNode::peak_resident_bytes).collect();
    let link_bytes: u64 = cluster.hosts.iter().map(Host::link_bytes_sent).sum::<u64>() - link_bytes_at_start;

    let photo_bytes: usize = written.iter().map(|written| written.photo_bytes).sum();
    let post_json_bytes: usize = written.iter().map(|written| written.post_json_bytes).sum();
    let payload_bytes = photo_bytes + post_json_bytes;
    let frame_bytes: u64 = statuses.iter().map(|status| peer_counter_sum(status, "bytes_out")).sum();
    let frames: u64 = statuses.iter().map(|status| peer_counter_sum(status, "frames_out")).sum();
    println!(
        "check 1: {} users wrote {PHOTO_COUNT} photos and {POST_COUNT} posts in {} ms ({} client threads)",
        users.len(),
        writing_took.as_millis(),
        users.len()
    );
    println!("check 1: converged {} ms after the last acknowledged write", converged_after.as_millis());
    println!(
        "check 1: on the wire {link_bytes} bytes (sent on the nodes' eth0, all sibling traffic) for a payload of \
         {payload_bytes} bytes ({photo_bytes} photo + {post_json_bytes} post JSON): {:.2}x; every item must reach \
         2 siblings, and a photo travels with its display and thumb variants",
        link_bytes as f64 / payload_bytes as f64
    );
    println!(
        "check 1: the peers' counters: {frame_bytes} bytes out in {frames} frames ({:.2}x the payload)",
        frame_bytes as f64 / payload_bytes as f64
    );
    // Each node ends with every media file (original and variants); two thirds of
    // them came from siblings, so the least the links could carry is twice one
    // node's media, plus the frames.
    let media_bytes_per_node: Vec<u64> =
        cluster.nodes.iter().map(|node| bytes_under(&node.data_dir().join("media"), 3)).collect();
    let least_wire_bytes = 2 * media_bytes_per_node[0] + frame_bytes;
    println!(
        "check 1: each node holds {media_bytes_per_node:?} bytes of media files; the least the links could carry \
         is {least_wire_bytes} bytes; they carried {:.2}x that",
        link_bytes as f64 / least_wire_bytes as f64
    );
    for (index, node) in cluster.nodes.iter().enumerate() {
        println!(
            "check 1: {} peak RSS (VmHWM) {} MiB at convergence, {} MiB before the writes; {}",
            node.name,
            mebibytes(peak_resident[index]),
            mebibytes(resident_at_start[index]),
            status_line(&statuses[index])
        );
    }
    assert!(frame_bytes > 0, "the siblings exchanged no frames, yet converged: {statuses:#?}");
    assert!(
        link_bytes >= 2 * photo_bytes as u64,
        "only {link_bytes} bytes crossed the links, yet every node serves {photo_bytes} bytes of photos, two \
         thirds of them uploaded elsewhere"
    );

    // The digests agree; check that what they agree on is what was written.
    for (index, node) in cluster.nodes.iter().enumerate() {
        let endpoint = node.endpoint();
        let token = &cluster.admin_tokens[index];
        let mut posts_seen = 0;
        for (user, written) in users.iter().zip(&written) {
            let listed: BTreeSet<String> = posts_of(&endpoint, token, &user.handle).into_keys().collect();
            let expected: BTreeSet<String> = written.post_ids.iter().cloned().collect();
            let missing: Vec<&String> = expected.difference(&listed).collect();
            let extra: Vec<&String> = listed.difference(&expected).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} lists {} posts of {} (home {}); missing {missing:?}, unexpected {extra:?}",
                node.name,
                listed.len(),
                user.handle,
                NODE_NAMES[user.home]
            );
            posts_seen += listed.len();
        }
        assert_eq!(posts_seen, POST_COUNT, "{} lists every post", node.name);
        // Photos homed elsewhere are served here: a sample of 20 per node.
        let foreign_photos: Vec<&String> = users
            .iter()
            .zip(&written)
            .filter(|(user, _)| user.home != index)
            .flat_map(|(_, written)| &written.media_ids)
            .collect();
        let sample_step = (foreign_photos.len() / 20).max(1);
        for media_id in foreign_photos.iter().step_by(sample_step) {
            let path = format!("/api/v1/media/{media_id}/display");
            let (status, _) = endpoint
                .request("GET", &path, Some(token), None, READ_TIMEOUT)
                .unwrap_or_else(|error| panic!("{}: {error}", node.name));
            assert_eq!(status, 200, "{}: GET {path} of a photo homed elsewhere", node.name);
        }
        println!(
            "check 1: {} lists all {posts_seen} posts of the {} users and serves {} sampled photos homed elsewhere",
            node.name,
            users.len(),
            foreign_photos.len().div_ceil(sample_step)
        );
    }
    for node in 0..cluster.nodes.len() {
        for user in &users {
            assert_home_listed_first(&cluster, node, &cluster.admin_tokens[node], &user.handle, user.home);
        }
    }
    println!("check 1: every node names each user's home node first in GET /api/v1/users/{{handle}}");
}

/// Check 2: node C is cut off while both sides keep writing (posts, likes, deletes,
/// also of posts made on the other side); node B is killed with SIGKILL while it is
/// written to and restarted; the link heals. The nodes converge, and every
/// acknowledged create that was not acknowledged-deleted is on every node, and every
/// acknowledged delete is gone from every node.
#[test]
#[ignore = "system tier: root, network namespaces, python-zeroconf (tests/system/install-deps), minutes"]
fn a_partition_and_a_kill_9_lose_nothing_acknowledged_and_resurrect_nothing() {
    lab::require_tools();
    let mut cluster = Cluster::start();
    let users = cluster.register_users(USERS_PER_NODE);
    let history = Mutex::new(History::default());
    for (user_index, user) in users.iter().enumerate() {
        let endpoint = cluster.nodes[user.home].endpoint();
        for number in 0..SEED_POSTS_PER_USER {
            let body =
                json!({ "caption": format!("seed {number} by {}", user.handle), "media": [], "visibility": "public" });
            let post = expect_status(&endpoint, "POST", "/api/v1/posts", Some(&user.token), Some(&body), 201);
            let created = Created { author: user_index, node: user.home, during_partition: false };
            history.lock().expect("history").created.insert(text_field(&post, "id"), created);
        }
    }
    cluster.wait_until_converged("check 2: the seed posts are everywhere before the partition");
    // Every user gets a session on every node: deletes go to whichever node a writer writes to.
    let sessions: Vec<Vec<String>> = (0..NODE_NAMES.len())
        .map(|node| users.iter().map(|user| log_in(&cluster.nodes[node].endpoint(), &user.handle, PASSWORD)).collect())
        .collect();

    cluster.hosts[ISOLATED_NODE].unplug();
    let partitioned = Instant::now();
    let progress = Progress::default();
    let endpoints: Vec<Endpoint> = cluster.nodes.iter().map(LabNode::endpoint).collect();
    let (killed_at_acked, unanswered_before_restart, noticed_after) = std::thread::scope(|scope| {
        for (node, endpoint) in endpoints.iter().enumerate() {
            let writer = Writer {
                node,
                endpoint: endpoint.clone(),
                users: &users,
                sessions: sessions[node].clone(),
                history: &history,
                progress: &progress,
                dice: Dice::new(WRITER_SEED + node as u64),
            };
            scope.spawn(move || writer.run());
        }
        let stop_writers = StopOnDrop(&progress.stop);
        progress.wait_for("the killed node's writer to get its first acknowledgements", || {
            progress.acked[KILLED_NODE].load(Ordering::SeqCst) >= ACKED_WRITES_AROUND_KILL
        });
        let acked_before_kill = progress.acked[KILLED_NODE].load(Ordering::SeqCst);
        cluster.nodes[KILLED_NODE].kill_9();
        std::thread::sleep(DOWNTIME);
        let unanswered = progress.unanswered[KILLED_NODE].load(Ordering::SeqCst);
        let config = cluster.configs[KILLED_NODE].clone();
        cluster.nodes[KILLED_NODE].restart(&config);
        let acked_at_restart = progress.acked[KILLED_NODE].load(Ordering::SeqCst);
        progress.wait_for("every writer to make enough acknowledged writes, the restarted node too", || {
            progress.acked[KILLED_NODE].load(Ordering::SeqCst) >= acked_at_restart + ACKED_WRITES_AROUND_KILL
                && progress.acked.iter().all(|acked| acked.load(Ordering::SeqCst) >= ACKED_WRITES_PER_WRITER_MIN)
        });
        // Writes go on until both sides have noticed the cut (the sibling idle timeout).
        let noticed_after = cluster.wait_until_partition_noticed(partitioned);
        drop(stop_writers);
        (acked_before_kill, unanswered, noticed_after)
    });
    let writes_took = partitioned.elapsed();
    let history = history.into_inner().expect("history");
    assert!(
        unanswered_before_restart > 0,
        "no write to {} went unanswered while it was down: the kill was not mid-stream",
        NODE_NAMES[KILLED_NODE]
    );
    println!(
        "check 2: {} partitioned for {} ms of writes; {} killed with SIGKILL after {killed_at_acked} acknowledged \
         writes, {unanswered_before_restart} writes to it unanswered while down, restarted on its data dir; the \
         cut was noticed on both sides {} ms after it was made",
        NODE_NAMES[ISOLATED_NODE],
        writes_took.as_millis(),
        NODE_NAMES[KILLED_NODE],
        noticed_after.as_millis()
    );
    cluster.refresh_control_token(KILLED_NODE);

    // The partition was real: what one side made during it is unknown on the other.
    for (made_on, asked) in [(ISOLATED_NODE, 0), (0, ISOLATED_NODE)] {
        let made_during = history
            .created
            .iter()
            .find(|(_, created)| created.during_partition && created.node == made_on)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("no acknowledged post was made on {} during the partition", NODE_NAMES[made_on]));
        let path = format!("/api/v1/posts/{made_during}");
        let (status, answer) = cluster.nodes[asked].https("GET", &path, Some(&cluster.admin_tokens[asked]), None);
        assert_eq!(
            status, 404,
            "{} has post {made_during}, made on {} during the partition: the partition leaks: {answer}",
            NODE_NAMES[asked], NODE_NAMES[made_on]
        );
    }

    cluster.hosts[ISOLATED_NODE].plug();
    let healed = Instant::now();
    cluster.wait_until_connected(RECONNECT_AFTER_HEAL_WITHIN);
    let reconnected_after = healed.elapsed();
    cluster.wait_until_converged("check 2: digests equal after the heal");
    println!(
        "check 2: after the heal the siblings reconnected in {} ms and converged in {} ms",
        reconnected_after.as_millis(),
        healed.elapsed().as_millis()
    );
    println!("check 2: history: {}", history.summary());
    assert!(
        history.cross_side_deletes.iter().all(|&count| count > 0),
        "the writes include acknowledged deletes, on each side, of posts made on the other side: {}",
        history.summary()
    );

    let verdicts: Vec<Verdict> =
        (0..NODE_NAMES.len()).map(|node| check_against_history(&cluster, node, &users, &history)).collect();
    for verdict in &verdicts {
        println!("check 2: {}", verdict.line());
    }
    let failures: Vec<String> = verdicts.iter().filter(|verdict| !verdict.passed()).map(Verdict::details).collect();
    assert!(failures.is_empty(), "acknowledged writes lost or deletes resurrected:\n{}", failures.join("\n"));
    let like_counts: Vec<&BTreeMap<String, u64>> = verdicts.iter().map(|verdict| &verdict.like_counts).collect();
    assert!(like_counts.windows(2).all(|pair| pair[0] == pair[1]), "the nodes agree on every like count");
}

/// Check 3: a user's home node is stopped; the user logs in on a sibling, posts and
/// likes there; the home node comes back, converges, and has the post and the like.
#[test]
#[ignore = "system tier: root, network namespaces, python-zeroconf (tests/system/install-deps), minutes"]
fn a_user_fails_over_to_a_sibling_and_the_home_node_catches_up() {
    lab::require_tools();
    let mut cluster = Cluster::start();
    let (home, replica) = (0, 1);
    let ada = cluster.register(home, "ada_failover");
    let bo = cluster.register(replica, "bo_failover");
    let body = json!({ "caption": "before the failover", "media": [], "visibility": "public" });
    let earlier =
        expect_status(&cluster.nodes[replica].endpoint(), "POST", "/api/v1/posts", Some(&bo.token), Some(&body), 201);
    let earlier_id = text_field(&earlier, "id");
    cluster.wait_until_converged("check 3: converged before the home node stops");

    let status = cluster.nodes[home].terminate();
    assert!(status.success(), "{} exits cleanly on SIGTERM: {status}", NODE_NAMES[home]);
    let stopped = Instant::now();
    let on_replica = cluster.nodes[replica].endpoint();
    let token = log_in(&on_replica, &ada.handle, PASSWORD);
    let body =
        json!({ "caption": "posted while my home node was away #failover", "media": [], "visibility": "public" });
    let post = expect_status(&on_replica, "POST", "/api/v1/posts", Some(&token), Some(&body), 201);
    let post_id = text_field(&post, "id");
    let like_path = format!("/api/v1/posts/{earlier_id}/like");
    let liked = expect_ok(&on_replica, "PUT", &like_path, Some(&token), Some(&json!({})));
    assert_eq!(liked["liked"], json!(true), "{}: {liked}", NODE_NAMES[replica]);
    println!(
        "check 3: {} logged in on {} {} ms after {} stopped, posted {post_id} and liked {earlier_id}",
        ada.handle,
        NODE_NAMES[replica],
        stopped.elapsed().as_millis(),
        NODE_NAMES[home]
    );

    let config = cluster.configs[home].clone();
    cluster.nodes[home].restart(&config);
    cluster.refresh_control_token(home);
    let restarted = Instant::now();
    cluster.wait_until_connected(CONNECT_WITHIN);
    cluster.wait_until_converged("check 3: the home node catches up after its restart");
    println!("check 3: {} converged {} ms after its restart", NODE_NAMES[home], restarted.elapsed().as_millis());

    let at_home = cluster.nodes[home].endpoint();
    let token = log_in(&at_home, &ada.handle, PASSWORD);
    let seen = expect_ok(&at_home, "GET", &format!("/api/v1/posts/{post_id}"), Some(&token), None);
    assert_eq!(seen["author"]["handle"], json!(ada.handle), "{}: {seen}", NODE_NAMES[home]);
    assert_eq!(seen["caption"], body["caption"], "{}: {seen}", NODE_NAMES[home]);
    let listed = posts_of(&at_home, &token, &ada.handle);
    assert!(
        listed.contains_key(&post_id),
        "{} lists {post_id} among {}'s posts: {listed:?}",
        NODE_NAMES[home],
        ada.handle
    );
    let liked_post = expect_ok(&at_home, "GET", &format!("/api/v1/posts/{earlier_id}"), Some(&token), None);
    assert_eq!(
        (&liked_post["liked_by_me"], &liked_post["like_count"]),
        (&json!(true), &json!(1)),
        "{} has {}'s like of {earlier_id}: {liked_post}",
        NODE_NAMES[home],
        ada.handle
    );
    println!(
        "check 3: {} has the post ({:?}) and the like (like_count {}, liked_by_me {})",
        NODE_NAMES[home], seen["caption"], liked_post["like_count"], liked_post["liked_by_me"]
    );
    assert_home_listed_first(&cluster, home, &token, &ada.handle, home);
}

/// Three paired siblings, each claimed by its own admin.
struct Cluster {
    /// Declared before `lab`: the nodes stop before their namespaces go.
    nodes: Vec<LabNode>,
    /// Each node's config file as it runs paired.
    configs: Vec<String>,
    /// Each node's `control-token`, for `GET /api/v1/node/replication`.
    control_tokens: Vec<String>,
    /// Each node's admin, signed in on that node.
    admin_tokens: Vec<String>,
    hosts: Vec<Host>,
    _lab: Lab,
}

/// A user registered on its home node, with a session there.
struct User {
    handle: String,
    home: usize,
    token: String,
}

impl Cluster {
    /// Starts each node alone to learn its id and pin (and claims it), stops it, and
    /// starts all three again on the same data dirs with each other as siblings.
    fn start() -> Cluster {
        let mut lab = Lab::new();
        let hosts: Vec<Host> = NODE_NAMES.iter().map(|_| lab.host()).collect();
        let (nodes, configs) = start_paired(&hosts, &NODE_NAMES, REPLICAS);
        let control_tokens = nodes.iter().map(|node| node.read_data_file("control-token")).collect();
        let admin_tokens =
            nodes.iter().map(|node| log_in(&node.endpoint(), &admin_handle(&node.name), ADMIN_PASSWORD)).collect();
        let cluster = Cluster { nodes, configs, control_tokens, admin_tokens, hosts, _lab: lab };
        cluster.wait_until_connected(CONNECT_WITHIN);
        cluster
    }

    /// `per_node` users registered on each node with an invite of that node's admin.
    fn register_users(&self, per_node: usize) -> Vec<User> {
        (0..self.nodes.len())
            .flat_map(|node| (0..per_node).map(move |number| (node, number)))
            .map(|(node, number)| self.register(node, &format!("{}_{number}", NODE_NAMES[node])))
            .collect()
    }

    fn register(&self, node: usize, handle: &str) -> User {
        let endpoint = self.nodes[node].endpoint();
        let invite =
            expect_status(&endpoint, "POST", "/api/v1/invites", Some(&self.admin_tokens[node]), Some(&json!({})), 201);
        let body = json!({ "handle": handle, "password": PASSWORD, "invite": text_field(&invite, "code") });
        let created = expect_status(&endpoint, "POST", "/api/v1/accounts", None, Some(&body), 201);
        User { handle: handle.to_owned(), home: node, token: text_field(&created, "token") }
    }

    /// Re-reads a restarted node's control token (it may be made anew at start).
    fn refresh_control_token(&mut self, node: usize) {
        self.control_tokens[node] = self.nodes[node].read_data_file("control-token");
    }

    /// `GET /api/v1/node/replication` on one node.
    fn replication(&self, node: usize) -> Result<Value, String> {
        let endpoint = self.nodes[node].endpoint();
        let token = Some(self.control_tokens[node].as_str());
        let (status, answer) = endpoint.request("GET", "/api/v1/node/replication", token, None, READ_TIMEOUT)?;
        if status != 200 {
            return Err(format!("GET /api/v1/node/replication on {}: {status} {answer}", NODE_NAMES[node]));
        }
        Ok(answer)
    }

    fn replication_of_all(&self) -> Result<Vec<Value>, String> {
        (0..self.nodes.len()).map(|node| self.replication(node)).collect()
    }

    /// Waits (polling every 250 ms) until every node reports every sibling connected.
    fn wait_until_connected(&self, within: Duration) {
        eventually(within, "every node connected to both siblings", || {
            let statuses = self.replication_of_all()?;
            let all_connected = statuses.iter().all(|status| {
                status["peers"].as_array().is_some_and(|peers| {
                    peers.len() == self.nodes.len() - 1 && peers.iter().all(|peer| peer["connected"] == json!(true))
                })
            });
            if all_connected {
                Ok(())
            } else {
                Err(describe(&statuses))
            }
        });
    }

    /// Waits (polling every 250 ms) until the isolated node reports both siblings
    /// disconnected and the first node reports it disconnected; returns how long after
    /// `cut` that was.
    fn wait_until_partition_noticed(&self, cut: Instant) -> Duration {
        let isolated_id = json!(self.nodes[ISOLATED_NODE].ready.node_id);
        eventually(PARTITION_NOTICED_WITHIN, "both sides of the partition notice it", || {
            let statuses = vec![self.replication(0)?, self.replication(ISOLATED_NODE)?];
            let isolated_sees_nobody = statuses[1]["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|peer| peer["connected"] == json!(false)));
            let pair_sees_it_down = statuses[0]["peers"].as_array().is_some_and(|peers| {
                peers.iter().any(|peer| peer["node_id"] == isolated_id && peer["connected"] == json!(false))
            });
            if isolated_sees_nobody && pair_sees_it_down {
                Ok(cut.elapsed())
            } else {
                Err(describe(&statuses))
            }
        })
    }

    /// Waits (polling every 250 ms) until all digests are equal and no node misses
    /// media; returns the statuses that showed it.
    fn wait_until_converged(&self, what: &str) -> Vec<Value> {
        eventually(CONVERGE_WITHIN, what, || {
            let statuses = self.replication_of_all()?;
            let digests: BTreeSet<String> = statuses.iter().map(|status| status["digest"].to_string()).collect();
            let digest_known = statuses.iter().all(|status| !status["digest"].is_null());
            let no_media_missing = statuses.iter().all(|status| status["media_missing"] == json!(0));
            if digest_known && digests.len() == 1 && no_media_missing {
                Ok(statuses)
            } else {
                Err(describe(&statuses))
            }
        })
    }
}

/// What one check-1 writer acknowledged.
struct Written {
    media_ids: Vec<String>,
    post_ids: Vec<String>,
    photo_bytes: usize,
    post_json_bytes: usize,
    last_ack: Instant,
}

/// Uploads photo i and publishes post i for every i with `i % user_count == user_index`
/// on the user's home node; post i carries photo i when there is one.
fn write_photos_and_posts(
    endpoint: &Endpoint,
    user: &User,
    user_index: usize,
    user_count: usize,
    photos: &[Vec<u8>],
) -> Written {
    let mut written = Written {
        media_ids: Vec::new(),
        post_ids: Vec::new(),
        photo_bytes: 0,
        post_json_bytes: 0,
        last_ack: Instant::now(),
    };
    let mut photo_ids = BTreeMap::new();
    for index in (user_index..photos.len()).step_by(user_count) {
        let photo = &photos[index];
        let path = format!("/api/v1/media/{}", sha256_hex(photo));
        let (status, media) = endpoint
            .request("PUT", &path, Some(&user.token), Some(("image/jpeg", photo)), WRITE_TIMEOUT)
            .unwrap_or_else(|error| panic!("{} uploading photo {index}: {error}", user.handle));
        assert_eq!(status, 201, "{} uploading photo {index} ({} bytes): {media}", user.handle, photo.len());
        written.last_ack = Instant::now();
        written.photo_bytes += photo.len();
        let media_id = text_field(&media, "id");
        photo_ids.insert(index, media_id.clone());
        written.media_ids.push(media_id);
    }
    for index in (user_index..POST_COUNT).step_by(user_count) {
        let media: Vec<&String> = photo_ids.get(&index).into_iter().collect();
        let body = json!({
            "caption": format!("post {index} by {} #replication", user.handle),
            "media": media,
            "visibility": "public",
        });
        let body_bytes = body.to_string();
        let (status, post) = endpoint
            .request(
                "POST",
                "/api/v1/posts",
                Some(&user.token),
                Some(("application/json", body_bytes.as_bytes())),
                WRITE_TIMEOUT,
            )
            .unwrap_or_else(|error| panic!("{} publishing post {index}: {error}", user.handle));
        assert_eq!(status, 201, "{} publishing post {index}: {post}", user.handle);
        written.last_ack = Instant::now();
        written.post_json_bytes += body_bytes.len();
        written.post_ids.push(text_field(&post, "id"));
    }
    written
}

/// The client-side history of check 2: what was acknowledged, and what was tried
/// without an answer (its outcome unknown).
#[derive(Default)]
struct History {
    created: BTreeMap<String, Created>,
    /// Acknowledged deletes: post → the nodes that acknowledged one.
    deleted: BTreeMap<String, BTreeSet<usize>>,
    /// Deletes sent without an answer: the post may or may not be gone.
    deletes_unanswered: BTreeSet<String>,
    creates_unanswered: usize,
    /// Acknowledged likes: post → users.
    likes: BTreeMap<String, BTreeSet<usize>>,
    /// Every like sent, answered or not: post → users.
    likes_tried: BTreeMap<String, BTreeSet<usize>>,
    /// Answers other than success (say 404 for a post this side does not have yet).
    refused: usize,
    /// Per side (0: the connected pair, 1: the isolated node): acknowledged deletes,
    /// during the partition, of posts made on the other side.
    cross_side_deletes: [usize; 2],
    sessions_renewed: usize,
}

struct Created {
    author: usize,
    node: usize,
    during_partition: bool,
}

impl History {
    /// Posts whose presence is certain: acknowledged, no delete acknowledged or unanswered.
    fn must_exist(&self) -> BTreeSet<&String> {
        self.created
            .keys()
            .filter(|id| !self.deleted.contains_key(*id) && !self.deletes_unanswered.contains(*id))
            .collect()
    }

    fn summary(&self) -> String {
        let during = self.created.values().filter(|created| created.during_partition).count();
        format!(
            "{} acknowledged creates ({during} during the partition), {} acknowledged deletes (cross-side: {} on the \
             pair, {} on the isolated node), {} acknowledged likes, unanswered: {} creates and {} deletes; {} refused; \
             {} sessions renewed",
            self.created.len(),
            self.deleted.len(),
            self.cross_side_deletes[0],
            self.cross_side_deletes[1],
            self.likes.values().map(BTreeSet::len).sum::<usize>(),
            self.creates_unanswered,
            self.deletes_unanswered.len(),
            self.refused,
            self.sessions_renewed
        )
    }
}

fn side_of(node: usize) -> usize {
    usize::from(node == ISOLATED_NODE)
}

#[derive(Default)]
struct Progress {
    acked: [AtomicUsize; 3],
    unanswered: [AtomicUsize; 3],
    stop: AtomicBool,
}

impl Progress {
    /// Waits (bounded by `WRITE_PHASE_WITHIN`) until `done`; a writer that stops
    /// early shows as a timeout here, and its panic at the end of the scope.
    fn wait_for(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WRITE_PHASE_WITHIN;
        while !done() {
            let acked: Vec<usize> = self.acked.iter().map(|acked| acked.load(Ordering::SeqCst)).collect();
            assert!(
                Instant::now() < deadline,
                "waited {WRITE_PHASE_WITHIN:?} for {what}; acknowledged so far: {acked:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Tells the writers to stop when dropped, also when the test fails mid-phase.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A client writing to one node during the partition: creates by the node's own
/// users, likes by anyone, deletes by the author of any post it knows of.
struct Writer<'a> {
    node: usize,
    endpoint: Endpoint,
    users: &'a [User],
    /// Each user's session on this node.
    sessions: Vec<String>,
    history: &'a Mutex<History>,
    progress: &'a Progress,
    dice: Dice,
}

enum Outcome {
    Acknowledged(Value),
    Refused,
    Unanswered,
}

impl Writer<'_> {
    fn run(mut self) {
        for number in 0..WRITER_OPERATIONS_MAX {
            if self.progress.stop.load(Ordering::SeqCst) {
                return;
            }
            let outcome = match self.dice.below(100) {
                0..45 => self.create(number),
                45..75 => self.like(),
                _ => self.delete(),
            };
            match outcome {
                Outcome::Acknowledged(_) => {
                    self.progress.acked[self.node].fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(WRITE_PAUSE);
                }
                Outcome::Refused => {
                    self.history.lock().expect("history").refused += 1;
                    std::thread::sleep(WRITE_PAUSE);
                }
                Outcome::Unanswered => {
                    self.progress.unanswered[self.node].fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(NO_ANSWER_PAUSE);
                }
            }
        }
    }

    fn create(&mut self, number: usize) -> Outcome {
        let own_users: Vec<usize> = (0..self.users.len()).filter(|&user| self.users[user].home == self.node).collect();
        let author = own_users[self.dice.below(own_users.len())];
        let caption = format!("partition write {number} on {} by {}", NODE_NAMES[self.node], self.users[author].handle);
        let body = json!({ "caption": caption, "media": [], "visibility": "public" });
        let outcome = self.send(author, "POST", "/api/v1/posts", Some(&body), 201);
        let mut history = self.history.lock().expect("history");
        match &outcome {
            Outcome::Acknowledged(post) => {
                let created = Created { author, node: self.node, during_partition: true };
                history.created.insert(text_field(post, "id"), created);
            }
            Outcome::Unanswered => history.creates_unanswered += 1,
            Outcome::Refused => {}
        }
        outcome
    }

    fn like(&mut self) -> Outcome {
        let post = {
            let history = self.history.lock().expect("history");
            let known: Vec<&String> = history.created.keys().collect();
            known[self.dice.below(known.len())].clone()
        };
        let user = self.dice.below(self.users.len());
        self.history.lock().expect("history").likes_tried.entry(post.clone()).or_default().insert(user);
        let outcome = self.send(user, "PUT", &format!("/api/v1/posts/{post}/like"), Some(&json!({})), 200);
        if let Outcome::Acknowledged(_) = outcome {
            self.history.lock().expect("history").likes.entry(post).or_default().insert(user);
        }
        outcome
    }

    fn delete(&mut self) -> Outcome {
        let (post, author, made_on) = {
            let history = self.history.lock().expect("history");
            let candidates: Vec<(&String, &Created)> =
                history.created.iter().filter(|(id, _)| !history.deleted.contains_key(*id)).collect();
            if candidates.is_empty() {
                return Outcome::Refused;
            }
            let (id, created) = candidates[self.dice.below(candidates.len())];
            (id.clone(), created.author, created.node)
        };
        let outcome = self.send(author, "DELETE", &format!("/api/v1/posts/{post}"), None, 204);
        let mut history = self.history.lock().expect("history");
        match outcome {
            Outcome::Acknowledged(_) => {
                if side_of(made_on) != side_of(self.node) {
                    history.cross_side_deletes[side_of(self.node)] += 1;
                }
                history.deleted.entry(post).or_default().insert(self.node);
            }
            Outcome::Unanswered => {
                history.deletes_unanswered.insert(post);
            }
            Outcome::Refused => {}
        }
        outcome
    }

    /// Sends as `user`; a session the node no longer knows is renewed once (the
    /// write then counts as refused).
    fn send(&mut self, user: usize, method: &str, path: &str, body: Option<&Value>, success: u16) -> Outcome {
        let body_text = body.map(Value::to_string);
        let body = body_text.as_deref().map(|text| ("application/json", text.as_bytes()));
        match self.endpoint.request(method, path, Some(&self.sessions[user]), body, WRITE_TIMEOUT) {
            Err(_) => Outcome::Unanswered,
            Ok((status, answer)) if status == success => Outcome::Acknowledged(answer),
            Ok((401, _)) => {
                let handle = &self.users[user].handle;
                let login = json!({ "handle": handle, "password": PASSWORD });
                if let Ok((200, session)) = self.endpoint.request(
                    "POST",
                    "/api/v1/sessions",
                    None,
                    Some(("application/json", login.to_string().as_bytes())),
                    WRITE_TIMEOUT,
                ) {
                    self.sessions[user] = text_field(&session, "token");
                    self.history.lock().expect("history").sessions_renewed += 1;
                }
                Outcome::Refused
            }
            Ok(_) => Outcome::Refused,
        }
    }
}

/// One node's final state against the history.
struct Verdict {
    node: usize,
    creates_checked: usize,
    deletes_checked: usize,
    likes_checked: usize,
    lost: Vec<String>,
    resurrected: Vec<String>,
    likes_lost: Vec<String>,
    /// Posts present that no acknowledged create made (an unanswered create that landed).
    unacknowledged_present: usize,
    like_counts: BTreeMap<String, u64>,
}

impl Verdict {
    fn passed(&self) -> bool {
        self.lost.is_empty() && self.resurrected.is_empty() && self.likes_lost.is_empty()
    }

    fn line(&self) -> String {
        format!(
            "{}: {} lost of {} acknowledged creates checked, {} resurrected of {} acknowledged deletes checked, \
             {} likes lost of {} checked; {} present from unanswered creates",
            NODE_NAMES[self.node],
            self.lost.len(),
            self.creates_checked,
            self.resurrected.len(),
            self.deletes_checked,
            self.likes_lost.len(),
            self.likes_checked,
            self.unacknowledged_present
        )
    }

    fn details(&self) -> String {
        format!(
            "{}\n  lost: {:?}\n  resurrected: {:?}\n  likes lost: {:?}",
            self.line(),
            self.lost,
            self.resurrected,
            self.likes_lost
        )
    }
}

/// The checker: every acknowledged create not deleted is listed (and served), every
/// acknowledged delete is neither listed nor served, and every acknowledged like counts.
fn check_against_history(cluster: &Cluster, node: usize, users: &[User], history: &History) -> Verdict {
    let endpoint = cluster.nodes[node].endpoint();
    let token = &cluster.admin_tokens[node];
    let mut present: BTreeMap<String, Value> = BTreeMap::new();
    for user in users {
        present.extend(posts_of(&endpoint, token, &user.handle));
    }
    let must_exist = history.must_exist();
    let lost: Vec<String> =
        must_exist.iter().filter(|id| !present.contains_key(**id)).map(|id| (*id).clone()).collect();
    let mut resurrected: Vec<String> = history.deleted.keys().filter(|id| present.contains_key(*id)).cloned().collect();
    for id in history.deleted.keys() {
        let (status, answer) = endpoint.https("GET", &format!("/api/v1/posts/{id}"), Some(token), None);
        if status != 404 && !resurrected.contains(id) {
            resurrected.push(format!("{id} (GET answered {status}: {answer})"));
        }
    }
    let unacknowledged_present = present.keys().filter(|id| !history.created.contains_key(*id)).count();
    assert!(
        unacknowledged_present <= history.creates_unanswered,
        "{} has {unacknowledged_present} posts nobody made (only {} creates went unanswered)",
        NODE_NAMES[node],
        history.creates_unanswered
    );
    let mut likes_lost = Vec::new();
    let mut likes_checked = 0;
    for (id, likers) in &history.likes {
        let Some(post) = present.get(id).filter(|_| must_exist.contains(id)) else { continue };
        likes_checked += likers.len();
        let tried = history.likes_tried.get(id).map_or(0, BTreeSet::len) as u64;
        let count = post["like_count"].as_u64().unwrap_or(0);
        if count < likers.len() as u64 || count > tried {
            likes_lost.push(format!("{id}: like_count {count}, {} acknowledged, {tried} tried", likers.len()));
        }
    }
    let like_counts = present.iter().map(|(id, post)| (id.clone(), post["like_count"].as_u64().unwrap_or(0))).collect();
    Verdict {
        node,
        creates_checked: must_exist.len(),
        deletes_checked: history.deleted.len(),
        likes_checked,
        lost,
        resurrected,
        likes_lost,
        unacknowledged_present,
        like_counts,
    }
}

/// `GET /api/v1/users/{handle}` on `node` names the user's home node first.
fn assert_home_listed_first(cluster: &Cluster, node: usize, token: &str, handle: &str, home: usize) {
    let path = format!("/api/v1/users/{handle}");
    let profile = expect_ok(&cluster.nodes[node].endpoint(), "GET", &path, Some(token), None);
    // docs/api.md names a node's id `id`; the replication brief said `node_id`.
    let first = &profile["nodes"][0];
    let first_id = if first["id"].is_null() { &first["node_id"] } else { &first["id"] };
    assert_eq!(
        *first_id,
        json!(cluster.nodes[home].ready.node_id),
        "{}: GET {path} lists the home node ({}) first: {profile}",
        NODE_NAMES[node],
        NODE_NAMES[home]
    );
}

/// Every post of `handle` a node lists to the holder of `token`, by id.
fn posts_of(endpoint: &Endpoint, token: &str, handle: &str) -> BTreeMap<String, Value> {
    let mut posts = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..LISTING_PAGES_MAX {
        let mut path = format!("/api/v1/users/{handle}/posts?limit=100");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", percent_encode(cursor)));
        }
        let page = expect_ok(endpoint, "GET", &path, Some(token), None);
        let items = page["items"].as_array().unwrap_or_else(|| panic!("GET {path}: no items in {page}"));
        for post in items {
            posts.insert(text_field(post, "id"), post.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) if !items.is_empty() => cursor = Some(next.to_owned()),
            _ => return posts,
        }
    }
    panic!("{handle}'s posts did not end within {LISTING_PAGES_MAX} pages");
}

/// A small deterministic generator (xorshift64), so a writer's choices replay.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0, "a choice among nothing");
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

fn expect_ok(endpoint: &Endpoint, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
    expect_status(endpoint, method, path, token, body, 200)
}

/// The sum of one counter over a node's peers.
fn peer_counter_sum(status: &Value, counter: &str) -> u64 {
    status["peers"].as_array().map_or(0, |peers| peers.iter().filter_map(|peer| peer[counter].as_u64()).sum())
}

fn status_line(status: &Value) -> String {
    format!(
        "records {} tombstones {} media_missing {} log_end {} epoch {} digest {}",
        status["records"],
        status["tombstones"],
        status["media_missing"],
        status["log_end"],
        status["epoch"],
        status["digest"]
    )
}

/// The nodes' replication statuses, one line each, for messages.
fn describe(statuses: &[Value]) -> String {
    statuses
        .iter()
        .map(|status| {
            let peers: Vec<String> = status["peers"]
                .as_array()
                .map(|peers| {
                    peers
                        .iter()
                        .map(|peer| {
                            format!(
                                "{}:{}",
                                peer["node_id"],
                                if peer["connected"] == json!(true) { "up" } else { "down" }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("\n  {} {}; peers {peers:?}", status["node_id"], status_line(status))
        })
        .collect()
}

/// The size of the files under `dir`, at most `depth` levels down.
fn bytes_under(dir: &Path, depth: usize) -> u64 {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()));
    entries
        .map(|entry| {
            let entry = entry.unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()));
            let metadata = entry.metadata().unwrap_or_else(|error| panic!("{}: {error}", entry.path().display()));
            match (metadata.is_dir(), depth) {
                (true, 0) => 0,
                (true, _) => bytes_under(&entry.path(), depth - 1),
                (false, _) => metadata.len(),
            }
        })
        .sum()
}

fn mebibytes(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

/// Issue 15's check: the people-facing records (profile edits, blocks, follow
/// approvals, an account's deletion) made on different replicas while one is cut off
/// converge to one state after the heal, and a user's notifications read the same on
/// every replica.
#[test]
#[ignore = "system tier: root, network namespaces, minutes"]
fn profiles_blocks_approvals_and_deletions_from_both_sides_of_a_partition_converge() {
    lab::require_tools();
    let cluster = Cluster::start();
    let ada = cluster.register(0, "ada");
    let bo = cluster.register(1, "bob");
    let cy = cluster.register(2, "cyd");
    let di = cluster.register(1, "dia");
    let ed = cluster.register(0, "eddy");
    let on = |node: usize| cluster.nodes[node].endpoint();

    // Before the cut: ada locks her account; bo, cy and ed ask to follow her; she has a
    // public and a followers-only post; di posts a photo, likes and comments on ada's.
    expect_ok(&on(0), "PATCH", "/api/v1/me/profile", Some(&ada.token), Some(&json!({ "locked": true })));
    for follower in [&bo, &cy, &ed] {
        let answer = expect_ok(&on(follower.home), "PUT", "/api/v1/users/ada/follow", Some(&follower.token), None);
        assert_eq!(answer["status"], "requested", "{} follows locked ada: {answer}", follower.handle);
    }
    let post = |user: &User, caption: &str, media: &[String], visibility: &str| {
        let body = json!({ "caption": caption, "media": media, "visibility": visibility });
        text_field(&expect_status(&on(user.home), "POST", "/api/v1/posts", Some(&user.token), Some(&body), 201), "id")
    };
    let ada_public = post(&ada, "harbour at dawn", &[], "public");
    let ada_followers = post(&ada, "for my followers only", &[], "followers");
    let photo = distinct_photo(151);
    let (status, media) = on(di.home)
        .request(
            "PUT",
            &format!("/api/v1/media/{}", sha256_hex(&photo)),
            Some(&di.token),
            Some(("image/jpeg", &photo)),
            WRITE_TIMEOUT,
        )
        .expect("di uploads a photo");
    assert_eq!(status, 201, "di's photo: {media}");
    let di_media = text_field(&media, "id");
    let di_post = post(&di, "dipostunique by di", std::slice::from_ref(&di_media), "public");
    expect_ok(&on(di.home), "PUT", &format!("/api/v1/posts/{ada_public}/like"), Some(&di.token), None);
    let comment = json!({ "text": "lovely, ada" });
    let comments_path = format!("/api/v1/posts/{ada_public}/comments");
    expect_status(&on(di.home), "POST", &comments_path, Some(&di.token), Some(&comment), 201);
    cluster.wait_until_converged("people: everything written before the cut is everywhere");
    // Sessions are per node: ada signs in on both sides of the coming cut.
    let ada_on_cedar = log_in(&on(2), "ada", PASSWORD);

    cluster.hosts[ISOLATED_NODE].unplug();
    // The connected pair: ada edits her profile and approves bo; di deletes the account.
    let alder_edit = json!({ "display_name": "Ada of alder", "bio": "written on alder" });
    expect_ok(&on(0), "PATCH", "/api/v1/me/profile", Some(&ada.token), Some(&alder_edit));
    expect_ok(&on(0), "POST", "/api/v1/me/follow-requests/bob/approve", Some(&ada.token), None);
    expect_ok(&on(1), "DELETE", "/api/v1/me", Some(&di.token), Some(&json!({ "password": PASSWORD })));
    // The cut-off node, later: ada edits her profile again, approves cy and blocks ed;
    // cy comments on ada's post.
    std::thread::sleep(Duration::from_millis(200));
    let cedar_edit = json!({ "display_name": "Ada of cedar" });
    expect_ok(&on(2), "PATCH", "/api/v1/me/profile", Some(&ada_on_cedar), Some(&cedar_edit));
    expect_ok(&on(2), "POST", "/api/v1/me/follow-requests/cyd/approve", Some(&ada_on_cedar), None);
    expect_ok(&on(2), "POST", "/api/v1/users/eddy/block", Some(&ada_on_cedar), None);
    let cy_comment = json!({ "text": "written while cedar was cut off" });
    expect_status(&on(2), "POST", &comments_path, Some(&cy.token), Some(&cy_comment), 201);
    // Nothing crossed: the pair does not know cedar's edit yet.
    let profile_on_alder = expect_ok(&on(0), "GET", "/api/v1/users/ada", None, None);
    assert_eq!(profile_on_alder["display_name"], "Ada of alder", "the cut was not real: {profile_on_alder}");

    cluster.hosts[ISOLATED_NODE].plug();
    cluster.wait_until_connected(RECONNECT_AFTER_HEAL_WITHIN);
    cluster.wait_until_converged("people: after the heal");

    let mut notifications_by_node = Vec::new();
    for (node, name) in NODE_NAMES.iter().enumerate() {
        let ada_here = log_in(&on(node), "ada", PASSWORD);
        let profile = expect_ok(&on(node), "GET", "/api/v1/users/ada", None, None);
        assert_eq!(profile["display_name"], "Ada of cedar", "{name}: the later profile edit wins: {profile}");
        for follower in [&bo, &cy] {
            let token = log_in(&on(node), &follower.handle, PASSWORD);
            let (status, answer) = on(node).https("GET", &format!("/api/v1/posts/{ada_followers}"), Some(&token), None);
            assert_eq!(status, 200, "{name}: {} was approved on one side and sees the post: {answer}", follower.handle);
        }
        let requests = expect_ok(&on(node), "GET", "/api/v1/me/follow-requests", Some(&ada_here), None);
        let pending: Vec<&str> =
            requests["items"].as_array().expect("items").iter().filter_map(|item| item["handle"].as_str()).collect();
        assert!(
            !pending.contains(&"bob") && !pending.contains(&"cyd"),
            "{name}: approvals from both sides: {requests}"
        );
        let blocks = expect_ok(&on(node), "GET", "/api/v1/me/blocks", Some(&ada_here), None);
        assert!(blocks.to_string().contains("\"eddy\""), "{name}: ada's block of ed made on cedar: {blocks}");
        let ed_here = log_in(&on(node), "eddy", PASSWORD);
        let (status, answer) = on(node).https("PUT", &format!("/api/v1/posts/{ada_public}/like"), Some(&ed_here), None);
        assert_eq!(status, 403, "{name}: blocked ed cannot like ada's post: {answer}");
        assert_eq!(on(node).https("GET", "/api/v1/users/dia", None, None).0, 404, "{name}: di's profile");
        assert_eq!(on(node).https("GET", &format!("/api/v1/posts/{di_post}"), None, None).0, 404, "{name}: di's post");
        let thumb = format!("/api/v1/media/{di_media}/thumb");
        assert_eq!(on(node).https("GET", &thumb, Some(&ada_here), None).0, 404, "{name}: di's photo");
        let found = expect_ok(&on(node), "GET", "/api/v1/search?q=dipostunique&scope=node", None, None);
        assert_eq!(found["posts"], json!([]), "{name}: di's post is not found by search: {found}");
        let comments = expect_ok(&on(node), "GET", &comments_path, None, None);
        let texts = comments.to_string();
        assert!(
            texts.contains("written while cedar was cut off") && !texts.contains("lovely, ada"),
            "{name}: cy's comment from cedar is there and di's is gone: {comments}"
        );
        let notifications = expect_ok(&on(node), "GET", "/api/v1/notifications", Some(&ada_here), None);
        assert!(!notifications.to_string().contains("\"dia\""), "{name}: no notification names deleted di");
        notifications_by_node.push(notifications);
    }
    for (node, notifications) in notifications_by_node.iter().enumerate().skip(1) {
        assert_eq!(
            notifications, &notifications_by_node[0],
            "ada's notifications on {} and {}",
            NODE_NAMES[node], NODE_NAMES[0]
        );
    }
    println!(
        "people: profile edits, approvals on both sides, a block and a deletion converged; ada's {} notification \
         groups read the same on all three nodes",
        notifications_by_node[0]["items"].as_array().map_or(0, Vec::len)
    );
}
