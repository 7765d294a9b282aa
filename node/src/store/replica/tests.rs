//! Tests of `RedbReplicaStore` as a whole: against the memory store, the indexes it
//! keeps, local writes, and two nodes replicating over redb; and the helpers the
//! other files' tests share.

use bytes::Bytes;
use serde::Serialize;

use super::*;
use crate::core::model::{Comment, Credential, Follow, Like, MediaOwner, Post, Record, User, Visibility};
use crate::core::replication::placement::TRUST_MAX;
use crate::core::replication::{LocalWrite, MemoryStore, ReplicaConfig, ReplicaNode, Sibling};
use crate::core::text;

pub(super) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgenode-replica-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(super) fn open(dir: &std::path::Path) -> (RedbReplicaStore, DurableState) {
    RedbReplicaStore::open(Arc::new(Store::open(dir).unwrap())).unwrap()
}

/// splitmix64, seeded: the same ops on every run; the seed is in every message.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (mixed ^ (mixed >> 31)) % bound
    }
}

pub(super) fn item<T: Serialize>(
    shard: &str,
    table: Table,
    key: String,
    at: u64,
    origin: u64,
    body: Option<T>,
) -> Item {
    let record = match body {
        Some(body) => Record::live(version(at, origin), body),
        None => Record::tombstone(version(at, origin)),
    };
    Item::from_record(ShardId(shard.to_owned()), RecordKey::new(table, key), &record).unwrap()
}

pub(super) fn post(post_id: &str, author_id: &str, caption: &str, visibility: Visibility) -> Post {
    Post {
        post_id: post_id.to_owned(),
        author_id: author_id.to_owned(),
        caption: caption.to_owned(),
        media: vec![],
        visibility,
        tags: text::hashtags(caption),
        created_at: 1,
    }
}

const USERS_IN_TEST: [&str; 3] = ["aa01", "bb02", "cc03"];

/// A random valid item of a random table of a random shard, from a small key pool
/// so that writes overwrite each other.
fn random_item(rng: &mut Rng) -> Item {
    let shard = USERS_IN_TEST[rng.below(3) as usize];
    let other = USERS_IN_TEST[rng.below(3) as usize];
    let index = rng.below(4);
    let at = 1 + rng.below(400);
    let origin = 1 + rng.below(3);
    let live = rng.below(10) < 7;
    let post_id = format!("{other}0{index}");
    match rng.below(7) {
        0 => {
            let user = User {
                user_id: shard.into(),
                handle: format!("h{shard}{index}"),
                display_name: "x".into(),
                bio: String::new(),
                admin: false,
                created_at: at,
                home: None,
                avatar: None,
                locked: false,
            };
            item(shard, Table::User, shard.into(), at, origin, live.then_some(user))
        }
        1 => {
            let credential = Credential::new(format!("hash{index}"));
            item(shard, Table::Credential, shard.into(), at, origin, live.then_some(credential))
        }
        2 => {
            let post_id = format!("{shard}0{index}");
            let visibility = if index.is_multiple_of(2) { Visibility::Public } else { Visibility::Followers };
            let body = post(&post_id, shard, &format!("boats #t{} at {at}", rng.below(3)), visibility);
            item(shard, Table::Post, post_id, at, origin, live.then_some(body))
        }
        3 => item(shard, Table::Follow, pair_key(shard, other), at, origin, live.then_some(Follow { since: at })),
        4 => item(shard, Table::Like, pair_key(&post_id, shard), at, origin, live.then_some(Like { at })),
        5 => {
            let comment_id = format!("{shard}c{index}");
            let comment = Comment {
                comment_id: comment_id.clone(),
                post_id: post_id.clone(),
                author_id: shard.into(),
                text: format!("nice {at}"),
                created_at: at,
            };
            item(shard, Table::Comment, pair_key(&post_id, &comment_id), at, origin, live.then_some(comment))
        }
        _ => {
            let media = format!("{index:064x}");
            item(
                shard,
                Table::MediaOwner,
                pair_key(&media, shard),
                at,
                origin,
                live.then_some(MediaOwner { since: at }),
            )
        }
    }
}

/// `committed`: the store's own reads (which see only committed data) are compared too.
fn assert_same(redb: &RedbReplicaStore, memory: &MemoryStore, seed: u64, step: usize, committed: bool) {
    let context = format!("seed {seed}, step {step}");
    assert_eq!(redb.shards(), memory.shards(), "{context}");
    for shard in memory.shards() {
        let mut ranges = vec![HashRange::ALL, HashRange::new(12, 0xabc0_0000_0000_0000).unwrap()];
        ranges.extend(HashRange::ALL.children());
        for range in ranges {
            assert_eq!(redb.fingerprint(&shard, range), memory.fingerprint(&shard, range), "{context} {range:?}");
        }
        assert_eq!(
            redb.summaries(&shard, HashRange::ALL, usize::MAX),
            memory.summaries(&shard, HashRange::ALL, usize::MAX),
            "{context}"
        );
        for stored in memory.items(&shard) {
            assert_eq!(redb.get(&shard, &stored.key), Some(stored.clone()), "{context}");
            if let (Table::Post, Some(body), true) = (stored.key.table, &stored.body, committed) {
                let expected: Post = serde_json::from_slice(body).unwrap();
                assert_eq!(redb.store().post(&stored.key.key).unwrap(), Some(expected), "{context}");
            }
        }
    }
    assert_eq!(
        redb.tombstones_before(Timestamp(200), 1000),
        memory.tombstones_before(Timestamp(200), 1000),
        "{context}"
    );
    assert_eq!(redb.originated_by(NodeId(2)), memory.originated_by(NodeId(2)), "{context}");
}

#[test]
fn behaves_like_the_memory_store_for_random_puts_and_purges() {
    let dir = temp_dir("like-memory");
    let seed = 0x5eed;
    let mut rng = Rng(seed);
    let (mut redb, durable) = open(&dir);
    let mut memory = MemoryStore::default();
    for step in 0..300 {
        if rng.below(10) == 0 {
            // Purge what the memory store holds (any record, tombstone or not).
            let shards = memory.shards();
            if shards.is_empty() {
                continue;
            }
            let shard = shards[rng.below(shards.len() as u64) as usize].clone();
            let items = memory.items(&shard);
            let key = items[rng.below(items.len() as u64) as usize].key.clone();
            memory.purge(&shard, &key);
            redb.purge(&shard, &key);
        } else {
            let item = random_item(&mut rng);
            // The node applies only newer versions; the redb store checks that itself.
            if memory.get(&item.shard, &item.key).is_none_or(|stored| stored.version < item.version) {
                memory.put(item.clone());
            }
            redb.put(item);
        }
        let committed = step % 10 == 0;
        if committed {
            redb.commit(&durable).unwrap();
        }
        if step % 5 == 0 {
            assert_same(&redb, &memory, seed, step, committed);
        }
    }
    redb.commit(&durable).unwrap();
    // Derived indexes agree with the live records left.
    let store = Arc::clone(redb.store());
    for user in USERS_IN_TEST {
        let shard = ShardId(user.into());
        let live_posts: Vec<String> = memory
            .items(&shard)
            .into_iter()
            .filter(|item| item.key.table == Table::Post && item.body.is_some())
            .map(|item| item.key.key)
            .collect();
        let mut indexed: Vec<String> =
            store.posts_by_author(user, None, 100, |_| true).unwrap().into_iter().map(|post| post.post_id).collect();
        indexed.reverse();
        assert_eq!(indexed.len(), live_posts.len(), "posts_by_author of {user}");
    }
    // And everything survives a reopen: the fingerprints are stored, not rebuilt.
    drop(redb);
    drop(store);
    let (redb, _) = open(&dir);
    assert_same(&redb, &memory, seed, usize::MAX, true);
    drop(redb);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_schema_2_database_gets_the_fingerprints_its_index_implies() {
    let dir = temp_dir("schema-2");
    let seed = 0xf1f0;
    let mut rng = Rng(seed);
    let (mut redb, durable) = open(&dir);
    let mut memory = MemoryStore::default();
    for _ in 0..300 {
        let item = random_item(&mut rng);
        if memory.get(&item.shard, &item.key).is_none_or(|stored| stored.version < item.version) {
            memory.put(item.clone());
        }
        redb.put(item);
    }
    redb.commit(&durable).unwrap();
    let store = Arc::clone(redb.store());
    let digest = store.replication_digest().unwrap();
    drop(redb);
    {
        // What a schema 2 database is: the index without stored fingerprints.
        let txn = store.db.begin_write().unwrap();
        txn.delete_table(REPLICA_SHARD_FINGERPRINTS).unwrap();
        txn.delete_table(REPLICA_BUCKET_FINGERPRINTS).unwrap();
        txn.open_table(crate::store::META).unwrap().insert("schema_version", 2u64.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    let (redb, _) = open(&dir);
    assert_same(&redb, &memory, seed, usize::MAX, true);
    assert_eq!(redb.store().replication_digest().unwrap(), digest, "the same digest as the write path kept");
    drop(redb);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn applied_items_keep_the_indexes_and_tombstones_remove_them() {
    let dir = temp_dir("indexes");
    let (mut redb, durable) = open(&dir);
    let store = Arc::clone(redb.store());
    let author = "aa01";
    let user = User {
        user_id: author.into(),
        handle: "ada".into(),
        display_name: "Ada".into(),
        bio: String::new(),
        admin: false,
        created_at: 1,
        home: None,
        avatar: None,
        locked: false,
    };
    redb.put(item(author, Table::User, author.into(), 10, 77, Some(user.clone())));
    let boats = post("aa0101", author, "boats in the #harbour", Visibility::Public);
    redb.put(item(author, Table::Post, "aa0101".into(), 11, 77, Some(boats.clone())));
    redb.put(item("bb02", Table::Follow, pair_key("bb02", author), 12, 77, Some(Follow { since: 1 })));
    // Refused: a post filed under someone else's shard, a key that is not a pair.
    redb.put(item("bb02", Table::Post, "aa0102".into(), 13, 77, Some(post("aa0102", author, "x", Visibility::Public))));
    redb.put(item("bb02", Table::Like, "no-separator".into(), 13, 77, Some(Like { at: 1 })));
    redb.commit(&durable).unwrap();

    assert_eq!(store.user_by_handle("ada").unwrap(), Some(user.clone()));
    assert_eq!(store.posts_by_author(author, None, 10, |_| true).unwrap(), vec![boats.clone()]);
    assert_eq!(store.search_posts(&["t:harbour".into()], 10).unwrap(), vec![boats.clone()]);
    assert!(store.follows("bb02", author).unwrap());
    assert_eq!(store.follower_count(author).unwrap(), 1);
    assert!(store.post("aa0102").unwrap().is_none());
    assert_eq!(redb.shards(), vec![ShardId(author.into()), ShardId("bb02".into())]);

    // A rename moves the handle; a newer tombstone drops the post everywhere; an
    // older write after it loses.
    let renamed = User { handle: "ada2".into(), ..user };
    redb.put(item(author, Table::User, author.into(), 20, 78, Some(renamed.clone())));
    redb.put(item::<Post>(author, Table::Post, "aa0101".into(), 21, 78, None));
    redb.put(item(author, Table::Post, "aa0101".into(), 15, 79, Some(boats)));
    redb.put(item::<Follow>("bb02", Table::Follow, pair_key("bb02", author), 22, 78, None));
    redb.commit(&durable).unwrap();
    assert_eq!(store.user_by_handle("ada").unwrap(), None);
    assert_eq!(store.user_by_handle("ada2").unwrap(), Some(renamed));
    assert!(store.post("aa0101").unwrap().is_none());
    assert!(store.posts_by_author(author, None, 10, |_| true).unwrap().is_empty());
    assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
    assert!(!store.follows("bb02", author).unwrap());
    let tombstones = redb.tombstones_before(Timestamp(100), 10);
    assert_eq!(tombstones.len(), 2);
    for tombstone in tombstones {
        redb.purge(&tombstone.shard, &tombstone.key);
    }
    redb.commit(&durable).unwrap();
    assert!(redb.get(&ShardId(author.into()), &RecordKey::new(Table::Post, "aa0101")).is_none());
    assert!(redb.tombstones_before(Timestamp(100), 10).is_empty());
    assert_eq!(redb.shards(), vec![ShardId(author.into())], "bb02 held only the purged follow");
    drop(redb);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn local_writes_are_indexed_for_replication() {
    let dir = temp_dir("local");
    let store = Arc::new(Store::open(&dir).unwrap());
    let ada = store.create_user("ada", "h".into(), super::super::Admission::Claim).unwrap();
    let boats = store.create_post(&ada.user_id, "boats".into(), vec![], Visibility::Public).unwrap();
    store.set_like(&boats.post_id, &ada.user_id, true).unwrap();
    store.delete_post(&boats).unwrap();
    let (redb, _) = RedbReplicaStore::open(Arc::clone(&store)).unwrap();
    let shard = ShardId(ada.user_id.clone());
    assert_eq!(redb.shards(), vec![shard.clone()]);
    assert_eq!(redb.summaries(&shard, HashRange::ALL, 100).len(), 4, "user, credential, post, like");
    let mine = redb.originated_by(store.node_id());
    assert_eq!(mine.len(), 4);
    assert!(mine.windows(2).all(|pair| pair[0].version < pair[1].version), "one version per write");
    let post_item = redb.get(&shard, &RecordKey::new(Table::Post, boats.post_id.as_str())).unwrap();
    assert!(post_item.is_tombstone());
    assert_eq!(redb.tombstones_before(Timestamp(u64::MAX), 10).len(), 1);
    let user_item = redb.get(&shard, &RecordKey::new(Table::User, ada.user_id.as_str())).unwrap();
    assert_eq!(user_item.to_record::<User>().unwrap().body, Some(ada));
    drop(redb);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

fn sibling(store: &Store) -> Sibling {
    Sibling { id: store.node_id(), zone: format!("z{}", store.node_id()), trust: TRUST_MAX }
}

fn node(store: Arc<Store>, siblings: Vec<Sibling>, now: u64) -> ReplicaNode<RedbReplicaStore> {
    let id = store.node_id();
    let (redb, durable) = RedbReplicaStore::open(store).unwrap();
    ReplicaNode::new(id, ReplicaConfig::default(), siblings, redb, durable, now)
}

fn commit(node: &ReplicaNode<RedbReplicaStore>) {
    node.store().commit(node.durable()).unwrap();
}

fn local_write<T: Serialize>(
    node: &mut ReplicaNode<RedbReplicaStore>,
    now: u64,
    shard: &str,
    table: Table,
    key: String,
    body: Option<&T>,
) {
    let body = body.map(|body| Bytes::from(serde_json::to_vec(body).unwrap()));
    let write = LocalWrite { shard: ShardId(shard.into()), key: RecordKey::new(table, key), body };
    node.handle_local_write(now, write).unwrap();
    commit(node);
}

/// Passes messages both ways until neither node has anything to say, committing
/// each node's store and state before what it sends leaves (the driver contract).
fn exchange(nodes: &mut [ReplicaNode<RedbReplicaStore>; 2], now: u64) {
    for _round in 0..1000 {
        let mut quiet = true;
        for from in 0..2 {
            commit(&nodes[from]);
            let mut outgoing = Vec::new();
            while let Some(message) = nodes[from].poll_transmit() {
                outgoing.push(message);
            }
            let sender = nodes[from].id();
            let to = 1 - from;
            for (peer, message) in outgoing {
                assert_eq!(peer, nodes[to].id());
                quiet = false;
                nodes[to].handle_message(now, sender, message);
                commit(&nodes[to]);
            }
        }
        if quiet {
            return;
        }
    }
    panic!("the nodes kept talking for 1000 rounds");
}

#[test]
fn two_nodes_over_redb_converge_and_answer_alike() {
    let dirs = [temp_dir("pair-a"), temp_dir("pair-b")];
    let stores = [Arc::new(Store::open(&dirs[0]).unwrap()), Arc::new(Store::open(&dirs[1]).unwrap())];
    // A write made through `Store` before replication ran: shipped by a new epoch.
    let ada = stores[0].create_user("ada", "h".into(), super::super::Admission::Claim).unwrap();
    // Real time: the store's own writes are stamped with it, and a sibling refuses
    // records stamped far ahead of its `now`.
    let start = crate::os::now_ms();
    let siblings = vec![sibling(&stores[0]), sibling(&stores[1])];
    let mut nodes =
        [node(Arc::clone(&stores[0]), siblings.clone(), start), node(Arc::clone(&stores[1]), siblings, start)];
    nodes[0].start_new_epoch(start);
    commit(&nodes[0]);

    let now = start + 1_000;
    let boats = post("aa0101", &ada.user_id, "boats #harbour", Visibility::Public);
    let boats = Post { post_id: format!("{}01", ada.user_id), ..boats };
    local_write(&mut nodes[0], now, &ada.user_id, Table::Post, boats.post_id.clone(), Some(&boats));
    let bob = User {
        user_id: "bb02".into(),
        handle: "bob".into(),
        display_name: "Bob".into(),
        bio: String::new(),
        admin: false,
        created_at: now,
        home: None,
        avatar: None,
        locked: false,
    };
    local_write(&mut nodes[1], now, "bb02", Table::User, "bb02".into(), Some(&bob));
    local_write(&mut nodes[1], now, "bb02", Table::Follow, pair_key("bb02", &ada.user_id), Some(&Follow { since: 1 }));
    let kites = post("bb0201", "bb02", "kites #sky", Visibility::Public);
    local_write(&mut nodes[1], now, "bb02", Table::Post, "bb0201".into(), Some(&kites));
    local_write(
        &mut nodes[1],
        now,
        "bb02",
        Table::Post,
        "bb0202".into(),
        Some(&post("bb0202", "bb02", "gone", Visibility::Public)),
    );
    local_write::<Post>(&mut nodes[1], now, "bb02", Table::Post, "bb0202".into(), None);

    for index in 0..2 {
        nodes[index].handle_connected(now, nodes[1 - index].id());
    }
    exchange(&mut nodes, now);
    // Later writes ride the log of the running session.
    let edited = Post { caption: "boats and #kites".into(), tags: vec!["kites".into()], ..boats.clone() };
    local_write(&mut nodes[0], now + 10, &ada.user_id, Table::Post, boats.post_id.clone(), Some(&edited));
    exchange(&mut nodes, now + 10);
    nodes[0].handle_timeout(now + 20_000);
    nodes[1].handle_timeout(now + 20_000);
    exchange(&mut nodes, now + 20_000);

    for shard in [ShardId(ada.user_id.clone()), ShardId("bb02".into())] {
        assert_eq!(
            nodes[0].store().fingerprint(&shard, HashRange::ALL),
            nodes[1].store().fingerprint(&shard, HashRange::ALL),
            "{shard}"
        );
    }
    for store in &stores {
        assert_eq!(store.user_by_handle("ada").unwrap(), Some(ada.clone()));
        assert_eq!(store.user_by_handle("bob").unwrap(), Some(bob.clone()));
        assert_eq!(store.post(&boats.post_id).unwrap(), Some(edited.clone()));
        assert_eq!(store.post("bb0201").unwrap(), Some(kites.clone()));
        assert_eq!(store.post("bb0202").unwrap(), None);
        assert!(store.follows("bb02", &ada.user_id).unwrap());
        let tagged = |tag: &str| -> Vec<String> {
            store.search_posts(&[format!("t:{tag}")], 10).unwrap().into_iter().map(|post| post.post_id).collect()
        };
        assert_eq!(tagged("kites"), vec![boats.post_id.clone()], "the edit is indexed");
        assert_eq!(tagged("sky"), vec!["bb0201".to_owned()]);
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        assert_eq!(
            store.credential(&ada.user_id).unwrap().map(|credential| credential.password_hash),
            Some("h".into())
        );
    }

    // The durable state comes back as it was committed.
    let (log_end, epoch, received) =
        (nodes[1].durable().log.end_seq(), nodes[1].durable().log.epoch(), nodes[1].durable().received.clone());
    let [first, second] = nodes;
    drop(first);
    let (redb, _) = second.into_parts();
    drop(redb);
    let (_, durable) = RedbReplicaStore::open(Arc::clone(&stores[1])).unwrap();
    assert_eq!((durable.log.end_seq(), durable.log.epoch(), durable.received), (log_end, epoch, received));
    drop(stores);
    for dir in dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `EDGENODE_MEASURE_OPEN=<records>` times opening a database of that many
/// replicated records; the footprint benchmark runs it. With
/// `EDGENODE_MEASURE_DIR=<dir>` the database is built there (unless that dir already
/// holds one) and kept, so the benchmark can start the binary on it.
#[test]
#[ignore = "benchmark: run by bench/footprint/run with EDGENODE_MEASURE_OPEN=<records>"]
fn measure_open_time() {
    let records = std::env::var("EDGENODE_MEASURE_OPEN")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .expect("EDGENODE_MEASURE_OPEN=<records> says how many records to measure");
    let kept_dir = std::env::var_os("EDGENODE_MEASURE_DIR").map(std::path::PathBuf::from);
    let dir = kept_dir.clone().unwrap_or_else(|| temp_dir("measure"));
    if !dir.join("edgenode.redb").exists() {
        let (mut redb, durable) = open(&dir);
        for index in 0..records {
            let shard = format!("{:04x}", index % 1000);
            let post_id = format!("{shard}{index:012x}");
            let body = post(&post_id, &shard, "a day at the #harbour", Visibility::Public);
            redb.put(item(&shard, Table::Post, post_id, 10 + index, 1, Some(body)));
            if index % 10_000 == 9_999 {
                redb.commit(&durable).unwrap();
            }
        }
        redb.commit(&durable).unwrap();
    }
    // The first open of a database of an older schema migrates it; the figure is the
    // open after that, as a node's every later start.
    drop(Store::open(&dir).unwrap());
    let started = std::time::Instant::now();
    let store = Store::open(&dir).unwrap();
    let opened = started.elapsed();
    let digest_started = std::time::Instant::now();
    let (held, _, _) = store.replication_digest().unwrap();
    assert_eq!(held, records, "every record is in the fingerprints");
    println!("{records} records: Store::open {opened:?}, replication digest {:?}", digest_started.elapsed());
    drop(store);
    if kept_dir.is_none() {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn shard_floors_survive_a_restart_and_a_state_from_before_them_settles_what_it_holds() {
    let dir = temp_dir("floors");
    let (mut redb, mut durable) = open(&dir);
    let (ada, bob) = (ShardId("aa01".into()), ShardId("bb02".into()));
    redb.put(item("aa01", Table::Post, "aa0101".into(), 10, 77, Some(post("aa0101", "aa01", "x", Visibility::Public))));
    redb.put(item("bb02", Table::Post, "bb0201".into(), 11, 77, Some(post("bb0201", "bb02", "y", Visibility::Public))));
    durable.purge_floor = Timestamp(9);
    durable.shard_floors.insert(ada.clone(), Timestamp(7));
    redb.commit(&durable).unwrap();
    // Raised, settled, withdrawn: each commit writes what changed.
    durable.shard_floors.insert(ada.clone(), Timestamp(8));
    durable.shard_floors.insert(bob.clone(), Timestamp(5));
    redb.commit(&durable).unwrap();
    durable.shard_floors.remove(&bob);
    durable.shards_settle_by_repair_only = true;
    redb.commit(&durable).unwrap();
    drop(redb);
    let (redb, reopened) = open(&dir);
    assert_eq!(reopened.shard_floors, [(ada.clone(), Timestamp(8))].into_iter().collect());
    assert!(reopened.shards_settle_by_repair_only);

    // The state as an edgenode before shard floors wrote it: no floor fields, no rows.
    let store = Arc::clone(redb.store());
    drop(redb);
    let txn = store.db.begin_write().unwrap();
    {
        let mut state = txn.open_table(REPLICA_STATE).unwrap();
        let bytes = state.get("state").unwrap().unwrap().value().to_vec();
        let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields.remove("floors_kept").is_some() && fields.remove("shards_settle_by_repair_only").is_some());
        state.insert("state", serde_json::to_vec(&json).unwrap().as_slice()).unwrap();
        txn.open_table(REPLICA_FLOORS).unwrap().retain(|_, _| false).unwrap();
    }
    txn.commit().unwrap();
    let (redb, upgraded) = RedbReplicaStore::open(Arc::clone(&store)).unwrap();
    // Collection already relied on every replica holding every write below the purge
    // floor, so every shard held is settled there.
    assert_eq!(upgraded.shard_floors, [(ada, Timestamp(9)), (bob, Timestamp(9))].into_iter().collect());
    assert!(!upgraded.shards_settle_by_repair_only);
    redb.commit(&upgraded).unwrap();
    drop(redb);
    let (_, again) = RedbReplicaStore::open(Arc::clone(&store)).unwrap();
    assert_eq!(again.shard_floors, upgraded.shard_floors, "the migrated floors were written");
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}
