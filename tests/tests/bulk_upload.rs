//! Bulk upload: a user sends a library of 500 photos in nested folders to a node with
//! `edgenode upload --post`, in a terminal (a pseudo-terminal, where the progress bar
//! shows), and presses Ctrl-C at about half. Run again, the command finishes the job:
//! every photo is on the node once, posted once, with the caption its file name and
//! EXIF date give, and the two summaries add up. A third run finds nothing to do.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgenode_tests::checks::expect_status;
use edgenode_tests::fixtures::{camera_jpeg, sha256_hex};
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::Value;

const PHOTOS: usize = 500;
const FOLDERS: usize = 5;
/// Every this many photos carries an EXIF capture date.
const DATED_EVERY: usize = 50;
const CAPTURE_DATE_EXIF: &[u8] = b"2024:06:01 09:30:00";
const CAPTURE_DATE: &str = "2024-06-01";
/// Ctrl-C once the node has converted this many photos.
const INTERRUPT_AT_PHOTOS: f64 = 250.0;
/// Bounds on each run of the command and on the wait for "about half".
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const HALF_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn five_hundred_photos_interrupted_at_half_then_resumed_are_each_uploaded_and_posted_once() {
    let started = Instant::now();
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let admin = client.claim_admin(&node, "harbour_admin");
    let invite = client.create_invite(&admin);
    let alice = client.join(&invite, "alice");
    let library = Library::make(PHOTOS);
    let state_home = TempDir::new("state");

    // First run, in a terminal: Ctrl-C at about half.
    let mut first = Terminal::run(&upload_command_line(&node, &library.root), &state_home.path);
    let deadline = Instant::now() + HALF_TIMEOUT;
    while metric(&client, &admin, "edgenode_media_processed_total") < INTERRUPT_AT_PHOTOS {
        assert!(first.status().is_none(), "the upload ended before it was interrupted:\n{}", first.output());
        assert!(
            Instant::now() < deadline,
            "the node had not half of the photos after {HALF_TIMEOUT:?}:\n{}",
            first.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.press_ctrl_c();
    let status = first.wait(RUN_TIMEOUT);
    let screen = first.output();
    assert_eq!(status.code(), Some(130), "after Ctrl-C the command exits 130:\n{screen}");
    assert!(
        screen.contains(&format!("/{PHOTOS} photos [")) && screen.contains("ETA"),
        "a progress bar (count, bytes, rate, ETA) on the terminal:\n{screen}"
    );
    assert!(screen.contains("interrupted"), "Ctrl-C is acknowledged:\n{screen}");
    let first = summary_in(&screen);
    let first_seconds = first["seconds"].as_f64().unwrap();
    assert_eq!(first["interrupted"], Value::Bool(true), "{first}");
    let uploaded_first = count(&first, "uploaded");
    assert!(0 < uploaded_first && uploaded_first < PHOTOS as u64, "interrupted midway: {first}");
    assert_eq!(count(&first, "not_done"), PHOTOS as u64 - count(&first, "posted"), "{first}");
    assert_eq!((count(&first, "photos"), count(&first, "ignored_files")), (PHOTOS as u64, 1), "{first}");

    // Second run, output not on a terminal: it goes on where the first stopped.
    let second_run = run_to_end(&mut upload_command(&node, &library.root, &state_home.path));
    assert!(second_run.status.success(), "the rerun completes:\n{}", second_run.text());
    assert!(
        second_run.stderr.contains("upload: 100/"),
        "plain progress lines without a terminal:\n{}",
        second_run.stderr
    );
    let second = summary_in(&second_run.stdout);
    assert_eq!(count(&second, "failed"), 0, "{second}");
    assert_eq!(count(&second, "not_done"), 0, "{second}");
    assert_eq!(count(&second, "done_before"), count(&first, "posted"), "what the first run finished: {second}");
    assert_eq!(
        count(&second, "already_on_node"),
        0,
        "the first run recorded every photo it sent, so none is asked for twice: {second}"
    );
    assert_eq!(count(&second, "already_posted"), 0, "{second}");
    assert_eq!(uploaded_first + count(&second, "uploaded"), PHOTOS as u64, "each photo sent once: {first} {second}");
    assert_eq!(
        count(&first, "uploaded_bytes") + count(&second, "uploaded_bytes"),
        library.bytes,
        "every byte of the library sent once"
    );
    assert_eq!(count(&first, "posted") + count(&second, "posted"), PHOTOS as u64, "{first} {second}");

    // On the node: 500 photos, and 500 posts, one per photo, captioned from the files.
    assert_eq!(metric(&client, &admin, "edgenode_media_processed_total"), PHOTOS as f64, "each photo converted once");
    let posts = all_posts(&client, &alice);
    assert_eq!(posts.len(), PHOTOS, "one post per photo, none twice");
    let media: HashSet<&str> = posts.iter().filter_map(|post| post["media"][0]["id"].as_str()).collect();
    assert_eq!(media, library.hashes.iter().map(String::as_str).collect(), "every photo posted");
    let mut captions: BTreeMap<String, usize> = BTreeMap::new();
    for post in &posts {
        assert_eq!(post["media"].as_array().map(Vec::len), Some(1), "{post}");
        assert_eq!(post["visibility"], "followers", "the default visibility: {post}");
        *captions.entry(post["caption"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    assert_eq!(captions, library.captions.iter().map(|caption| (caption.clone(), 1)).collect(), "captions");

    // A third run has nothing left to do.
    let third_run = run_to_end(&mut upload_command(&node, &library.root, &state_home.path));
    assert!(third_run.status.success(), "{}", third_run.text());
    let third = summary_in(&third_run.stdout);
    assert_eq!(
        (count(&third, "done_before"), count(&third, "uploaded"), count(&third, "posted")),
        (PHOTOS as u64, 0, 0),
        "{third}"
    );
    let state_file = state_home.path.join(format!("edgenode/upload-{}-alice.jsonl", node.node_id()));
    assert!(state_file.is_file(), "the state lives under $XDG_STATE_HOME: {}", state_file.display());
    eprintln!(
        "bulk upload: {PHOTOS} photos ({} bytes); first run {first_seconds:.1} s until Ctrl-C ({uploaded_first} \
         uploaded, {} posted), second {:.1} s ({} uploaded, {} posted), third {:.1} s; {:.1} s in all",
        library.bytes,
        count(&first, "posted"),
        second["seconds"].as_f64().unwrap(),
        count(&second, "uploaded"),
        count(&second, "posted"),
        third["seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn trusting_the_node_ca_with_a_token_the_photos_go_and_a_file_that_is_no_photo_fails_the_run() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let admin = client.claim_admin(&node, "harbour_admin");
    let library = TempDir::new("ca-library");
    let photos: Vec<Vec<u8>> = (0..3).map(|index| tiny_photo(index, false)).collect();
    for (index, photo) in photos.iter().enumerate() {
        std::fs::write(library.path.join(format!("photo-{index}.jpg")), photo).unwrap();
    }
    std::fs::write(library.path.join("broken.jpg"), "a text file with a photo's name").unwrap();
    let state_home = TempDir::new("ca-state");

    let mut command = Command::new(edgenode_binary());
    command
        .args(["upload", "--to", &format!("https://localhost:{}", node.addr().port()), "--ca"])
        .arg(node.data_dir().join("ca.crt"))
        .args(["--handle", "harbour_admin", "--token", &admin.token, "--json"])
        .arg(&library.path)
        .env("XDG_STATE_HOME", &state_home.path)
        .env_remove("EDGENODE_PASSWORD");
    let finished = run_to_end(&mut command);
    assert_eq!(finished.status.code(), Some(1), "a failed file fails the run:\n{}", finished.text());
    let summary = summary_in(&finished.stdout);
    assert_eq!((count(&summary, "uploaded"), count(&summary, "failed")), (3, 1), "{summary}");
    let failure = &summary["failures"][0];
    assert!(
        failure["path"].as_str().unwrap().ends_with("broken.jpg")
            && failure["reason"].as_str().unwrap().contains("not a JPEG, PNG or WebP image"),
        "the failure says which file and why: {summary}"
    );
    for photo in &photos {
        let original = format!("/api/v1/media/{}/original", sha256_hex(photo));
        let response = client.request("GET", &original, Some(&admin.token), &[], Vec::new());
        assert_eq!((response.status, &response.body), (200, photo), "the photo is the user's, byte for byte");
    }
}

#[test]
fn killed_with_sigkill_midway_the_rerun_posts_each_photo_once() {
    const LIBRARY_PHOTOS: usize = 200;
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let admin = client.claim_admin(&node, "harbour_admin");
    let invite = client.create_invite(&admin);
    let alice = client.join(&invite, "alice");
    let library = Library::make(LIBRARY_PHOTOS);
    let state_home = TempDir::new("kill-state");

    // `kill -9` at about half: whatever was in flight (an upload, a post whose answer
    // never came) is left as it was.
    let mut command = upload_command(&node, &library.root, &state_home.path);
    let mut killed = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + HALF_TIMEOUT;
    while metric(&client, &admin, "edgenode_media_processed_total") < (LIBRARY_PHOTOS / 2) as f64 {
        assert!(killed.try_wait().unwrap().is_none(), "the upload ended before it was killed");
        assert!(Instant::now() < deadline, "the node had not half of the photos after {HALF_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.kill().unwrap();
    killed.wait().unwrap();

    let rerun = run_to_end(&mut upload_command(&node, &library.root, &state_home.path));
    assert!(rerun.status.success(), "the rerun completes:\n{}", rerun.text());
    let summary = summary_in(&rerun.stdout);
    assert!(count(&summary, "done_before") > 0, "the journal kept what the killed run did: {summary}");
    let posts = all_posts(&client, &alice);
    let mut media: Vec<&str> = posts.iter().filter_map(|post| post["media"][0]["id"].as_str()).collect();
    media.sort_unstable();
    media.dedup();
    assert_eq!((posts.len(), media.len()), (LIBRARY_PHOTOS, LIBRARY_PHOTOS), "one post per photo, none twice");
    assert_eq!(metric(&client, &admin, "edgenode_media_processed_total"), LIBRARY_PHOTOS as f64);
    eprintln!(
        "bulk upload after kill -9: rerun found {} done before, {} on the node already, {} posted already; \
         uploaded {}, posted {}",
        count(&summary, "done_before"),
        count(&summary, "already_on_node"),
        count(&summary, "already_posted"),
        count(&summary, "uploaded"),
        count(&summary, "posted")
    );
}

/// The photos on disk: `<root>/<folder>/photo-NNNN.jpg`, small and all different, some
/// with an EXIF capture date; beside them a file that is no photo and a hidden folder.
struct Library {
    root: PathBuf,
    hashes: Vec<String>,
    /// The caption each photo's post should carry (`--caption "{name} {date}"`).
    captions: Vec<String>,
    bytes: u64,
    _dir: TempDir,
}

impl Library {
    fn make(photos: usize) -> Library {
        let dir = TempDir::new("library");
        let root = dir.path.clone();
        let (mut hashes, mut captions, mut bytes) = (Vec::new(), Vec::new(), 0);
        for index in 0..photos {
            let folder = root.join(format!("2024-{:02}", 1 + index * FOLDERS / photos));
            std::fs::create_dir_all(&folder).unwrap();
            let dated = index % DATED_EVERY == 0;
            let photo = tiny_photo(index, dated);
            let name = format!("photo-{index:04}");
            std::fs::write(folder.join(format!("{name}.jpg")), &photo).unwrap();
            hashes.push(sha256_hex(&photo));
            captions.push(if dated { format!("{name} {CAPTURE_DATE}") } else { name });
            bytes += photo.len() as u64;
        }
        assert_eq!(hashes.iter().collect::<HashSet<_>>().len(), photos, "every photo is different");
        std::fs::write(root.join("2024-01/notes.txt"), "not a photo").unwrap();
        std::fs::create_dir_all(root.join(".thumbnails")).unwrap();
        std::fs::write(root.join(".thumbnails/photo-0000.jpg"), tiny_photo(photos, false)).unwrap();
        Library { root, hashes, captions, bytes, _dir: dir }
    }
}

/// A 48×32 photo whose colours depend on `index`, with a capture date when `dated`.
fn tiny_photo(index: usize, dated: bool) -> Vec<u8> {
    let (low, high) = ((index % 256) as u8, (index / 256) as u8);
    let jpeg =
        camera_jpeg(48, 32, 1, false, move |x, y| [low, high.wrapping_mul(97).wrapping_add(x as u8 * 4), y as u8 * 6]);
    if !dated {
        return jpeg;
    }
    let taken = exif::Field {
        tag: exif::Tag::DateTimeOriginal,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Ascii(vec![CAPTURE_DATE_EXIF.to_vec()]),
    };
    let mut writer = exif::experimental::Writer::new();
    writer.push_field(&taken);
    let mut tiff = std::io::Cursor::new(Vec::new());
    writer.write(&mut tiff, false).expect("writing EXIF");
    edgenode::media::testimage::insert_exif_app1(&jpeg, &tiff.into_inner())
}

/// `edgenode upload` as alice, with posts, 8 at once, trusting the node by its pin.
fn upload_arguments(node: &Node, library: &Path) -> Vec<String> {
    [
        "upload",
        "--to",
        &format!("https://{}", node.addr()),
        "--pin",
        node.pin(),
        "--handle",
        "alice",
        "--post",
        "--concurrency",
        "8",
        "--caption",
        "{name} {date}",
        "--json",
        library.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn upload_command(node: &Node, library: &Path, state_home: &Path) -> Command {
    let mut command = Command::new(edgenode_binary());
    command.args(upload_arguments(node, library)).env("EDGENODE_PASSWORD", PASSWORD).env("XDG_STATE_HOME", state_home);
    command
}

/// The shell line `script` runs: a terminal 120 columns wide, then the command.
fn upload_command_line(node: &Node, library: &Path) -> String {
    let binary = edgenode_binary();
    let words: Vec<String> = std::iter::once(binary.to_str().unwrap().to_owned())
        .chain(upload_arguments(node, library))
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect();
    format!("stty cols 120 rows 40; exec {}", words.join(" "))
}

/// A command in a pseudo-terminal, through util-linux's `script`: what it shows is
/// collected, and Ctrl-C is typed as a person types it (the terminal sends SIGINT).
struct Terminal {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn run(shell_line: &str, state_home: &Path) -> Terminal {
        let mut child = Command::new("script")
            .args(["--quiet", "--flush", "--return", "--command", shell_line, "/dev/null"])
            .env("EDGENODE_PASSWORD", PASSWORD)
            .env("XDG_STATE_HOME", state_home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running `script` (util-linux)");
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut stream in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(length @ 1..) = stream.read(&mut chunk) {
                    output.lock().unwrap().extend_from_slice(&chunk[..length]);
                }
            });
        }
        Terminal { child, output }
    }

    fn press_ctrl_c(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the terminal's keyboard");
        stdin.write_all(b"\x03").and_then(|()| stdin.flush()).expect("typing Ctrl-C");
    }

    fn status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for script")
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status() {
                // The readers have the last words once the terminal closes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the upload did not end within {timeout:?} of Ctrl-C:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn text(&self) -> String {
        format!("{}\n---- stdout ----\n{}\n---- stderr ----\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to its end (killed and failed past `RUN_TIMEOUT`).
fn run_to_end(command: &mut Command) -> Finished {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the upload did not end within {RUN_TIMEOUT:?}:\n{}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// The `--json` summary in what the command printed.
fn summary_in(output: &str) -> Value {
    let start = output.find("{\"node_id\"").unwrap_or_else(|| panic!("no JSON summary in:\n{output}"));
    let line = output[start..].lines().next().unwrap();
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field].as_u64().unwrap_or_else(|| panic!("no {field} in {summary}"))
}

/// A metric, read as an admin.
fn metric(client: &Client, admin: &Account, name: &str) -> f64 {
    let response = client.request("GET", "/metrics", Some(&admin.token), &[], Vec::new());
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).expect("metrics are text");
    let line =
        text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line[name.len() + 1..].trim().parse().unwrap_or_else(|error| panic!("{line}: {error}"))
}

/// Every post of the user, as the user sees them, page after page.
fn all_posts(client: &Client, user: &Account) -> Vec<Value> {
    let mut posts = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/users/{}/posts?limit=100{cursor}", user.handle);
        let page = expect_status("listing alice's posts", client.get_json(&path, Some(&user.token)), 200);
        posts.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return posts,
        }
    }
}

/// A temporary directory, removed when dropped unless the test is failing.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(what: &str) -> TempDir {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let serial = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("edgenode-bulk-upload-{what}-{}-{serial}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
