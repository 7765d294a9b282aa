//! Power cuts: while three people upload, post and delete at once, the node is
//! killed with SIGKILL at a random moment, and started again on the same data dir,
//! 200 times over (`EDGENODE_POWER_CUTS` changes the count; `EDGENODE_FAULT_SEED`
//! replays a run). The clients keep a history in which only a 2xx answer counts as
//! acknowledged. After every restart: the database opens within the ready timeout,
//! every write acknowledged before the cut is there (posts readable by their author
//! with the token they had, deletes still 404, photos serving their thumb), and the
//! media dir holds no file without a media row (blob files of uploads cut before
//! their row committed, temp files, and an orphan we plant are all gone).
//!
//! System tier (`#[ignore]`d; run with `--include-ignored`); prints `power cuts: …`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgenode_tests::checks::{id_field, id_of};
use edgenode_tests::faults::{env_number, numbered_photo, SeededRng};
use edgenode_tests::fixtures::{looks_like_jpeg, sha256_hex};
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

const CYCLES_VARIABLE: &str = "EDGENODE_POWER_CUTS";
const SEED_VARIABLE: &str = "EDGENODE_FAULT_SEED";
const CYCLES_DEFAULT: u64 = 200;
/// The cut comes this long (uniformly drawn) after the clients start.
const KILL_DELAY_MS_MAX: u64 = 300;
/// Every this many cycles (and after the last) every acknowledged write is checked,
/// not only those of the cycle just cut.
const FULL_CHECK_EVERY_CYCLES: u64 = 50;
const VISIBILITIES: [&str; 3] = ["public", "followers", "private"];
/// Busy (503 `busy`, conversions queue full) is an honest refusal, not a failure.
const BUSY: u16 = 503;

/// What the clients were told, and what is still in doubt.
#[derive(Default)]
struct History {
    /// Acknowledged (201) and not acknowledged-deleted: post id → what was posted.
    live_posts: BTreeMap<String, PostSent>,
    /// Acknowledged deletes (204): post id → author index.
    deleted_posts: BTreeMap<String, usize>,
    /// Media the node acknowledged (2xx), or that was found served after a cut
    /// mid-upload: media id (SHA-256) → owner index.
    media: BTreeMap<String, usize>,
    /// Every upload sent, acknowledged or not: media id → owner index.
    media_sent: BTreeMap<String, usize>,
    /// Writes acknowledged during the current cycle, checked right after its restart.
    new_posts: Vec<String>,
    new_deletes: Vec<String>,
    new_media: Vec<String>,
    figures: Figures,
}

#[derive(Debug, Clone)]
struct PostSent {
    author: usize,
    caption: String,
    media: Vec<String>,
}

#[derive(Debug, Default)]
struct Figures {
    uploads_acknowledged: u64,
    posts_acknowledged: u64,
    deletes_acknowledged: u64,
    /// Requests cut off by the kill (outcome unknown to the client).
    uploads_in_doubt: u64,
    posts_in_doubt: u64,
    deletes_in_doubt: u64,
    in_doubt_uploads_landed: u64,
    busy_answers: u64,
    /// Answers that are neither 2xx nor 503 busy, with what was asked.
    unexpected_answers: Vec<String>,
}

/// The invariants' violations, each with what was expected and what came back.
#[derive(Debug, Default)]
struct Violations {
    lost: Vec<String>,
    resurrected: Vec<String>,
    orphans: Vec<String>,
    sessions_lost: Vec<String>,
}

impl Violations {
    fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.resurrected.is_empty() && self.orphans.is_empty() && self.sessions_lost.is_empty()
    }
}

#[test]
#[ignore = "system tier: minutes (200 SIGKILL power cuts)"]
fn acknowledged_writes_survive_200_power_cuts() {
    let cycles = env_number(CYCLES_VARIABLE, CYCLES_DEFAULT);
    let (seed, mut rng) = SeededRng::from_env(SEED_VARIABLE);
    let started = Instant::now();

    let mut node = Node::start(NodeOptions::default());
    let pin = node.pin().to_owned();
    let setup = Client::new(&node, Transport::Http2);
    let admin = setup.claim_admin(&node, "alice");
    let mut accounts = vec![admin.clone()];
    for handle in ["bob", "carol"] {
        accounts.push(setup.join(&setup.create_invite(&admin), handle));
    }
    // Each person has their own client; HTTP/1.1 and HTTP/2 both take part.
    let transports = [Transport::Http2, Transport::Http1, Transport::Http2];
    let mut clients: Vec<Client> = transports.iter().map(|&transport| Client::new(&node, transport)).collect();
    let mut workers_rng: Vec<SeededRng> = accounts.iter().map(|_| rng.fork()).collect();

    let history = Mutex::new(History::default());
    let photo_numbers = AtomicU64::new(seed.rotate_left(17));
    let mut violations = Violations::default();
    let (mut restart_total, mut restart_slowest) = (Duration::ZERO, Duration::ZERO);
    let mut planted_orphans_left = Vec::new();

    for cycle in 1..=cycles {
        let kill_delay = Duration::from_millis(rng.below(KILL_DELAY_MS_MAX + 1));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for ((who, client), worker_rng) in clients.iter_mut().enumerate().zip(workers_rng.iter_mut()) {
                let (account, history, stop, numbers) = (&accounts[who], &history, &stop, &photo_numbers);
                scope.spawn(move || work_until_cut(cycle, who, account, client, worker_rng, history, stop, numbers));
            }
            std::thread::sleep(kill_delay);
            node.kill_9();
            stop.store(true, Ordering::SeqCst);
        });

        let planted = plant_orphans(node.data_dir(), &mut rng);
        let restart_started = Instant::now();
        let ready = node.restart(); // panics, with the node's stderr, if it does not open
        let restart_time = restart_started.elapsed();
        restart_total += restart_time;
        restart_slowest = restart_slowest.max(restart_time);
        assert_eq!(ready.pin, pin, "cycle {cycle}: the node kept its pin across the cut");
        for client in &mut clients {
            client.reconnect_to(&node);
        }
        planted_orphans_left.extend(
            planted
                .into_iter()
                .filter(|path| path.exists())
                .map(|path| format!("cycle {cycle}: planted {} is still there after restart", path.display())),
        );

        let mut history = history.lock().expect("history");
        let full = cycle % FULL_CHECK_EVERY_CYCLES == 0 || cycle == cycles;
        check_acknowledged(&clients[0], &accounts, &mut history, full, cycle, &mut violations);
        check_media_dir(&clients[0], &accounts, node.data_dir(), &mut history, cycle, &mut violations);
        if cycle % 20 == 0 || !violations.is_empty() {
            println!(
                "power cuts: cycle {cycle}/{cycles}, {:.0?} so far, {} live posts, {} deleted, {} media",
                started.elapsed(),
                history.live_posts.len(),
                history.deleted_posts.len(),
                history.media.len()
            );
        }
        assert!(
            violations.is_empty() && planted_orphans_left.is_empty(),
            "cycle {cycle} (seed {seed}): {violations:#?}\nplanted orphans left: {planted_orphans_left:#?}"
        );
    }

    let history = history.into_inner().expect("history");
    let figures = &history.figures;
    println!(
        "power cuts: seed {seed}, {cycles} cycles of SIGKILL after 0-{KILL_DELAY_MS_MAX} ms, total {:.1?}",
        started.elapsed()
    );
    println!(
        "power cuts: acknowledged: {} uploads, {} posts, {} deletes; cut mid-request (in doubt): {} uploads \
         ({} of them landed whole), {} posts, {} deletes; {} busy (503) answers",
        figures.uploads_acknowledged,
        figures.posts_acknowledged,
        figures.deletes_acknowledged,
        figures.uploads_in_doubt,
        figures.in_doubt_uploads_landed,
        figures.posts_in_doubt,
        figures.deletes_in_doubt,
        figures.busy_answers
    );
    println!(
        "power cuts: at the end checked {} live posts, {} deleted posts, {} media: lost 0, resurrected 0, \
         sessions lost 0, failed opens 0, orphans after restart 0, planted orphans left 0",
        history.live_posts.len(),
        history.deleted_posts.len(),
        history.media.len()
    );
    println!(
        "power cuts: restart to ready: mean {:.0?}, slowest {restart_slowest:.0?}",
        restart_total / u32::try_from(cycles.max(1)).unwrap_or(u32::MAX)
    );
    assert!(
        figures.unexpected_answers.is_empty(),
        "answers that are neither 2xx nor 503 busy: {:#?}",
        figures.unexpected_answers
    );
    assert!(figures.posts_acknowledged > cycles / 2, "too little work got done to prove anything: {figures:?}");
}

/// One person's uploads, posts and deletes until the node is cut off.
#[allow(clippy::too_many_arguments)] // one worker's whole context; a struct would only rename it
fn work_until_cut(
    cycle: u64,
    who: usize,
    account: &Account,
    client: &mut Client,
    rng: &mut SeededRng,
    history: &Mutex<History>,
    stop: &AtomicBool,
    photo_numbers: &AtomicU64,
) {
    let token = Some(account.token.as_str());
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst) {
        sent += 1;
        let roll = rng.below(10);
        let delete_target = if roll >= 8 {
            let history = history.lock().expect("history");
            let own: Vec<&String> =
                history.live_posts.iter().filter(|(_, post)| post.author == who).map(|(id, _)| id).collect();
            (!own.is_empty()).then(|| own[rng.below(own.len() as u64) as usize].clone())
        } else {
            None
        };
        if let Some(post_id) = delete_target {
            let what = format!("cycle {cycle}: {} deletes post {post_id}", account.handle);
            let answer = client.try_request("DELETE", &format!("/api/v1/posts/{post_id}"), token, &[], Vec::new());
            let mut history = history.lock().expect("history");
            // Whatever happens next, the client no longer counts on the post living.
            history.live_posts.remove(&post_id);
            match answer {
                Ok(response) if response.status == 204 => {
                    history.figures.deletes_acknowledged += 1;
                    history.deleted_posts.insert(post_id.clone(), who);
                    history.new_deletes.push(post_id);
                }
                Ok(response) => note_refusal(&mut history.figures, &what, response.status, &response.body_text()),
                Err(_) => {
                    history.figures.deletes_in_doubt += 1;
                    return;
                }
            }
        } else if roll < 3 {
            let photo = numbered_photo(photo_numbers.fetch_add(1, Ordering::Relaxed));
            let media_id = sha256_hex(&photo);
            let what = format!("cycle {cycle}: {} uploads {media_id}", account.handle);
            history.lock().expect("history").media_sent.insert(media_id.clone(), who);
            let path = format!("/api/v1/media/{media_id}");
            let answer = client.try_request("PUT", &path, token, &[("content-type", "image/jpeg")], photo);
            let mut history = history.lock().expect("history");
            match answer {
                Ok(response) if response.status == 201 => {
                    let media = response.json();
                    assert_eq!(id_of(&media), media_id, "{what}: the media id is the SHA-256 of the bytes: {media}");
                    history.figures.uploads_acknowledged += 1;
                    history.media.insert(media_id.clone(), who);
                    history.new_media.push(media_id);
                }
                Ok(response) => note_refusal(&mut history.figures, &what, response.status, &response.body_text()),
                Err(_) => {
                    history.figures.uploads_in_doubt += 1;
                    return;
                }
            }
        } else {
            let media: Vec<String> = {
                let history = history.lock().expect("history");
                let own: Vec<&String> =
                    history.media.iter().filter(|(_, owner)| **owner == who).map(|(id, _)| id).collect();
                let count = rng.below(3).min(own.len() as u64);
                (0..count).map(|_| own[rng.below(own.len() as u64) as usize].clone()).collect::<BTreeSet<_>>()
            }
            .into_iter()
            .collect();
            let caption = format!("cut {cycle} by {} #{sent} #power", account.handle);
            let visibility = VISIBILITIES[rng.below(3) as usize];
            let body = serde_json::to_vec(&json!({ "caption": caption, "media": media, "visibility": visibility }))
                .expect("JSON");
            let what = format!("cycle {cycle}: {} posts {caption:?}", account.handle);
            let answer =
                client.try_request("POST", "/api/v1/posts", token, &[("content-type", "application/json")], body);
            let mut history = history.lock().expect("history");
            match answer {
                Ok(response) if response.status == 201 => {
                    let post_id = id_of(&response.json());
                    history.figures.posts_acknowledged += 1;
                    history.live_posts.insert(post_id.clone(), PostSent { author: who, caption, media });
                    history.new_posts.push(post_id);
                }
                Ok(response) => note_refusal(&mut history.figures, &what, response.status, &response.body_text()),
                Err(_) => {
                    history.figures.posts_in_doubt += 1;
                    return;
                }
            }
        }
    }
}

fn note_refusal(figures: &mut Figures, what: &str, status: u16, body: &str) {
    if status == BUSY {
        figures.busy_answers += 1;
    } else {
        figures.unexpected_answers.push(format!("{what}: {status} {body}"));
    }
}

/// Checks the writes acknowledged this cycle (or, when `full`, all of them).
fn check_acknowledged(
    client: &Client,
    accounts: &[Account],
    history: &mut History,
    full: bool,
    cycle: u64,
    violations: &mut Violations,
) {
    let (posts, deletes, media): (Vec<String>, Vec<String>, Vec<String>) = if full {
        (
            history.live_posts.keys().cloned().collect(),
            history.deleted_posts.keys().cloned().collect(),
            history.media.keys().cloned().collect(),
        )
    } else {
        (
            std::mem::take(&mut history.new_posts),
            std::mem::take(&mut history.new_deletes),
            std::mem::take(&mut history.new_media),
        )
    };
    if full {
        history.new_posts.clear();
        history.new_deletes.clear();
        history.new_media.clear();
    }
    for post_id in posts {
        // Deleted later in the same cycle (acknowledged or in doubt): checked as such.
        let Some(sent) = history.live_posts.get(&post_id) else { continue };
        let author = &accounts[sent.author];
        let (status, post) = checked_get(client, &format!("/api/v1/posts/{post_id}"), author, cycle, violations);
        if status != 200 {
            violations
                .lost
                .push(format!("cycle {cycle}: acknowledged post {post_id} of {}: {status} {post}", author.handle));
            continue;
        }
        let media_ids: Vec<String> =
            post["media"].as_array().map(|media| media.iter().map(id_of).collect()).unwrap_or_default();
        if post["caption"] != json!(sent.caption) || media_ids != sent.media || id_field(&post, "id") != post_id {
            violations.lost.push(format!("cycle {cycle}: post {post_id} came back changed: sent {sent:?}, got {post}"));
        }
    }
    for post_id in deletes {
        let author = &accounts[history.deleted_posts[&post_id]];
        let (status, post) = checked_get(client, &format!("/api/v1/posts/{post_id}"), author, cycle, violations);
        if status != 404 {
            violations.resurrected.push(format!("cycle {cycle}: deleted post {post_id} answers {status} {post}"));
        }
    }
    for media_id in media {
        let owner = &accounts[history.media[&media_id]];
        let response =
            client.request("GET", &format!("/api/v1/media/{media_id}/thumb"), Some(&owner.token), &[], vec![]);
        if response.status == 401 {
            violations.sessions_lost.push(format!("cycle {cycle}: {}'s token: {}", owner.handle, response.body_text()));
        }
        if response.status != 200 || !looks_like_jpeg(&response.body) {
            violations.lost.push(format!(
                "cycle {cycle}: thumb of acknowledged media {media_id} of {}: {} {}",
                owner.handle,
                response.status,
                response.body_text()
            ));
        }
    }
}

/// GET as `viewer`; a 401 means the session did not survive, noted as such.
fn checked_get(client: &Client, path: &str, viewer: &Account, cycle: u64, violations: &mut Violations) -> (u16, Value) {
    let (status, body) = client.get_json(path, Some(&viewer.token));
    if status == 401 {
        violations.sessions_lost.push(format!("cycle {cycle}: GET {path} with {}'s token: {body}", viewer.handle));
    }
    (status, body)
}

/// After a restart, every file under `<data dir>/media` must belong to a media item
/// the node serves (its row committed), with all three of its files; no temp files.
fn check_media_dir(
    client: &Client,
    accounts: &[Account],
    data_dir: &Path,
    history: &mut History,
    cycle: u64,
    violations: &mut Violations,
) {
    let mut files_by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in media_files(&data_dir.join("media")) {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        match name.split_once('.') {
            Some((id, kind)) if id.len() == 64 && ["original", "display", "thumb"].contains(&kind) => {
                files_by_id.entry(id.to_owned()).or_default().insert(kind.to_owned());
            }
            _ => violations.orphans.push(format!("cycle {cycle}: {} is not a blob file", path.display())),
        }
    }
    for (media_id, kinds) in &files_by_id {
        if kinds.len() != 3 {
            violations.orphans.push(format!("cycle {cycle}: media {media_id} has only {kinds:?}"));
        }
        if history.media.contains_key(media_id) {
            continue;
        }
        let Some(&owner) = history.media_sent.get(media_id) else {
            violations.orphans.push(format!("cycle {cycle}: files of media {media_id} that nobody uploaded"));
            continue;
        };
        // An upload cut off by the kill: its files may stay only if its row committed,
        // and then its owner is served its thumb.
        let response = client.request(
            "GET",
            &format!("/api/v1/media/{media_id}/thumb"),
            Some(&accounts[owner].token),
            &[],
            vec![],
        );
        if response.status == 200 {
            history.figures.in_doubt_uploads_landed += 1;
            history.media.insert(media_id.clone(), owner);
        } else {
            violations.orphans.push(format!(
                "cycle {cycle}: {kinds:?} of media {media_id} kept after restart, but the node answers {} {}",
                response.status,
                response.body_text()
            ));
        }
    }
    for media_id in history.media.keys() {
        if !files_by_id.contains_key(media_id) {
            violations.lost.push(format!("cycle {cycle}: the files of acknowledged media {media_id} are gone"));
        }
    }
}

/// Every file two levels under `media/` (`ab/<sha256>.<kind>`, temp files too).
fn media_files(media_dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(shards) = std::fs::read_dir(media_dir) else { return Vec::new() };
    let mut files = Vec::new();
    for shard in shards.flatten() {
        if let Ok(entries) = std::fs::read_dir(shard.path()) {
            files.extend(entries.flatten().map(|entry| entry.path()));
        }
    }
    files
}

/// While the node is down, leaves what a cut mid-upload leaves: a temp file and a
/// complete-looking blob whose row never committed. Both must be gone after start.
fn plant_orphans(data_dir: &Path, rng: &mut SeededRng) -> Vec<std::path::PathBuf> {
    let media_id = format!("{:016x}", rng.next_u64()).repeat(4);
    let shard = data_dir.join("media").join(&media_id[..2]);
    std::fs::create_dir_all(&shard).unwrap_or_else(|error| panic!("creating {}: {error}", shard.display()));
    let planted = vec![shard.join(format!("{media_id}.thumb")), shard.join(format!(".tmp-{:016x}", rng.next_u64()))];
    for path in &planted {
        std::fs::write(path, numbered_photo(0)).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }
    planted
}
