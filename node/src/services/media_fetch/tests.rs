//! Media streams over real quinn connections on 127.0.0.1, between two drivers that
//! share records by hand (their replication runs on `MemoryStore`s) and serve media
//! from real `Store`s: a replica fetches a photo's files from the sibling that has
//! them, refuses files that do not match their description, and asks nothing of a
//! node that does not serve media.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::core::replication::{MemoryStore, RecordKey, ReplicaStore, ShardId, Table};
use crate::link::tests::{eventually, start_cluster_serving, test_node, TestNode};
use crate::link::PeerDriver;
use crate::media::{testimage, MediaLimits, Pipeline};
use crate::store::{hex, pair_key, Admission, BlobInfo, RedbReplicaStore};
use crate::test_support::TempDir;

fn fast_fetch_limits() -> MediaFetchLimits {
    MediaFetchLimits {
        round_interval_ms: 100,
        retry_backoff_initial_ms: 100,
        retry_backoff_max_ms: 200,
        fetch_timeout_ms: 5_000,
        ..MediaFetchLimits::default()
    }
}

fn open_store(dir: &TempDir) -> Arc<Store> {
    Arc::new(Store::open(&dir.path().join("data")).unwrap())
}

/// Starts a driver per node, each knowing the others (with their addresses) and
/// serving media from its store, if it has one.
fn start_drivers(nodes: &[TestNode], stores: &[Option<Arc<Store>>]) -> Vec<PeerDriver<MemoryStore>> {
    start_cluster_serving(nodes, nodes.len(), |index| stores[index].clone().map(media_server))
}

async fn all_connected(drivers: &[PeerDriver<MemoryStore>]) {
    eventually("the siblings are connected", || async {
        drivers.iter().all(|driver| driver.connections().len() == drivers.len() - 1)
    })
    .await;
}

/// `fetch_media` over `driver`'s connection to its one sibling. When both siblings
/// dial at once, one connection loses the tie-break and closes just after it was
/// reported; a fetch that died with it is repeated on the survivor.
async fn fetch_from(driver: &PeerDriver<MemoryStore>, media_id: &str) -> Result<Option<FetchedMedia>, MediaFetchError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let Some((_, connection)) = driver.connections().pop() else {
            assert!(tokio::time::Instant::now() < deadline, "no connection to the sibling");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let result = fetch_media(&connection, media_id).await;
        if connection.close_reason().is_none() || tokio::time::Instant::now() >= deadline {
            return result;
        }
    }
}

/// Uploads a real photo (through the pipeline, as the API does) owned by a new user;
/// returns its description and the owner's user id.
fn put_photo(store: &Store) -> (MediaInfo, String) {
    let jpeg = testimage::jpeg_with_exif(96, 64, 1, true, |x, y| [(x * 2) as u8, (y * 3) as u8, 128]);
    let media_id = hex(&Sha256::digest(&jpeg));
    let processed = Pipeline::new(MediaLimits::default()).process(&jpeg).unwrap();
    let blob = |kind: BlobKind, bytes: &[u8], width: u32, height: u32| {
        store.blobs.write_durable(&media_id, kind, bytes, u64::from_le_bytes(crate::os::random_bytes())).unwrap();
        BlobInfo { width, height, bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }
    };
    let info = MediaInfo {
        media_id: media_id.clone(),
        mime: processed.kind.mime().to_owned(),
        width: processed.width,
        height: processed.height,
        blurhash: processed.blurhash.clone(),
        original: blob(BlobKind::Original, &processed.original, processed.width, processed.height),
        display: blob(BlobKind::Display, &processed.display.bytes, processed.display.width, processed.display.height),
        thumb: blob(BlobKind::Thumb, &processed.thumb.bytes, processed.thumb.width, processed.thumb.height),
        created_at: crate::os::now_ms(),
    };
    let user = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
    assert!(store.put_media(&info, &user.user_id).unwrap());
    (info, user.user_id)
}

/// Copies the owner record of `media_id` from `from` to `to` the way replication
/// applies it: the owner arrives, the `media` row and files do not.
fn replicate_owner(from: &Arc<Store>, to: &Arc<Store>, media_id: &str, user_id: &str) {
    let shard = ShardId(user_id.to_owned());
    let key = RecordKey::new(Table::MediaOwner, pair_key(media_id, user_id));
    let item = {
        let (replica, _) = RedbReplicaStore::open(from.clone()).unwrap();
        replica.get(&shard, &key).expect("the uploader holds the owner record")
    };
    let (mut replica, durable) = RedbReplicaStore::open(to.clone()).unwrap();
    replica.put(item);
    replica.commit(&durable).unwrap();
}

#[tokio::test]
async fn a_replica_fetches_missing_media_and_refuses_files_that_do_not_match() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let dirs = [TempDir::new("media-a"), TempDir::new("media-b")];
    let (a, b) = (open_store(&dirs[0]), open_store(&dirs[1]));
    let drivers = start_drivers(&nodes, &[Some(a.clone()), Some(b.clone())]);
    all_connected(&drivers).await;

    let (info, owner) = put_photo(&a);
    let media_id = info.media_id.clone();
    replicate_owner(&a, &b, &media_id, &owner);
    assert!(b.owns_media(&media_id, &owner).unwrap());
    assert_eq!(b.missing_media(64).unwrap(), vec![media_id.clone()]);
    assert_eq!(a.missing_media_count().unwrap(), 0);

    // Rot one byte of A's display file: same length, other hash.
    let display_path = a.blobs.path(&media_id, BlobKind::Display);
    let display = std::fs::read(&display_path).unwrap();
    let mut rotten = display.clone();
    rotten[display.len() / 2] ^= 0x55;
    std::fs::write(&display_path, &rotten).unwrap();

    let connections = drivers[1].sibling_connections();
    let fetcher = MediaFetcher::new(b.clone(), move || connections.current(), fast_fetch_limits());
    let stats = fetcher.stats();
    let wake = Arc::new(Notify::new());
    let task = fetcher.spawn(wake.clone());
    let stats_ref = &stats;
    eventually("B refuses the rotten file", move || async move { stats_ref.refused.load(Ordering::Relaxed) >= 1 })
        .await;
    assert!(b.media(&media_id).unwrap().is_none(), "nothing is stored from a bad answer");
    assert!(!b.blobs.exists(&media_id, BlobKind::Original));
    assert_eq!(b.missing_media_count().unwrap(), 1);

    // Repaired, the next round (from any sibling) brings it over.
    std::fs::write(&display_path, &display).unwrap();
    wake.notify_one();
    let b_ref = &b;
    let media_id_ref = media_id.as_str();
    eventually("B has the media", move || async move { b_ref.media(media_id_ref).unwrap().is_some() }).await;
    assert_eq!(b.media(&media_id).unwrap(), Some(info));
    for kind in BLOB_KINDS {
        assert_eq!(b.blobs.read(&media_id, kind).unwrap(), a.blobs.read(&media_id, kind).unwrap(), "{}", kind.name());
    }
    assert_eq!(b.missing_media_count().unwrap(), 0);
    // The counter moves just after the row commits.
    let fetched = stats.clone();
    eventually("the fetch is counted", move || {
        let fetched = fetched.clone();
        async move { fetched.fetched.load(Ordering::Relaxed) >= 1 }
    })
    .await;
    assert_eq!(stats.fetched.load(Ordering::Relaxed), 1);
    assert!(stats.failed.load(Ordering::Relaxed) >= 1);
    assert!(b.used_bytes() > a.blobs.read(&media_id, BlobKind::Original).unwrap().len() as u64);

    task.abort();
    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn fetch_media_answers_not_found_and_a_node_without_media_refuses_streams() {
    let nodes: Vec<TestNode> = (1..=2).map(test_node).collect();
    let dir = TempDir::new("media-only-a");
    let a = open_store(&dir);
    let drivers = start_drivers(&nodes, &[Some(a.clone()), None]);
    all_connected(&drivers).await;
    let (info, _) = put_photo(&a);

    // B asks A (which serves media).
    let unknown = "0".repeat(64);
    assert!(fetch_from(&drivers[1], &unknown).await.unwrap().is_none());
    assert!(matches!(fetch_from(&drivers[1], "../etc/passwd").await, Err(MediaFetchError::BadMediaId(_))));
    let fetched = fetch_from(&drivers[1], &info.media_id).await.unwrap().unwrap();
    assert_eq!(fetched.info, info);
    assert_eq!(fetched.thumb, a.blobs.read(&info.media_id, BlobKind::Thumb).unwrap());

    // A asks B (which does not): the stream is reset, the connection stays.
    assert!(matches!(fetch_from(&drivers[0], &info.media_id).await, Err(MediaFetchError::Read(_))));
    assert_eq!(drivers[0].connections().len(), 1);

    for driver in drivers {
        driver.shutdown().await.unwrap();
    }
}
