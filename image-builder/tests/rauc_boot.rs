//! RAUC's custom boot backend (`systemd/libexec/rauc-boot`, x86_64) against a model of
//! systemd-boot's boot counting, on an ESP directory (no disk, no root): the slot RAUC
//! makes primary boots next, a good boot stays, and a slot whose tries run out is
//! left for the other one.
//!
//! The model is what systemd-boot documents (Automatic Boot Assessment): entries whose
//! name has `+0` tries left sort last; otherwise the default pattern picks the highest
//! entry; before it boots a counted entry it renames `+L-D` to `+(L-1)-(D+1)`;
//! systemd-bless-boot renames the booted entry to its name without the counter.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/libexec/rauc-boot")
}

struct Esp {
    dir: PathBuf,
}

impl Drop for Esp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Esp {
    fn new(test: &str) -> Esp {
        let dir = std::env::temp_dir().join(format!("image-builder-rauc-boot-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("esp/loader/entries")).unwrap();
        // As the image is built: slot A with a good entry.
        fs::write(
            dir.join("esp/loader/entries/edgenode-1-a.conf"),
            "title Edgenode 1.0.0 (slot A)\nlinux /edgenode-a/vmlinuz\ninitrd /edgenode-a/initrd.img\noptions root=PARTUUID=uuid-a ro rauc.slot=A\n",
        )
        .unwrap();
        Esp { dir }
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.join("esp/loader/entries"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A slot's root file system as RAUC just wrote it (what `mount` would show).
    fn slot_tree(&self, slot: &str, version: &str) -> PathBuf {
        let tree = self.dir.join(format!("slot-{slot}-{version}"));
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::create_dir_all(tree.join("usr/lib/edgenode")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.1.0-9-amd64"), format!("old kernel {version}")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.1.0-10-amd64"), format!("kernel {version}")).unwrap();
        fs::write(tree.join("boot/initrd.img-6.1.0-10-amd64"), format!("initrd {version}")).unwrap();
        fs::write(tree.join("usr/lib/edgenode/kernel-options"), "ro rootwait console=ttyS0,115200\n").unwrap();
        fs::write(tree.join("usr/lib/edgenode/version"), format!("{version}\n")).unwrap();
        tree
    }

    fn run(&self, args: &[&str], tree: Option<&Path>) -> Output {
        let mut command = Command::new("sh");
        command.arg(script()).args(args).env("EDGENODE_ESP", self.dir.join("esp"));
        if let Some(tree) = tree {
            command.env("EDGENODE_SLOT_TREE", tree).env("EDGENODE_SLOT_PARTUUID", "uuid-new");
        }
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str], tree: Option<&Path>) -> String {
        let output = self.run(args, tree);
        assert!(output.status.success(), "rauc-boot {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// What RAUC does to install into SLOT: mark it bad, write it, make it primary.
    fn install(&self, slot: &str, version: &str) {
        self.ok(&["set-state", slot, "bad"], None);
        let tree = self.slot_tree(slot, version);
        self.ok(&["set-primary", slot], Some(&tree));
    }

    /// systemd-boot at power-on: picks the default entry and counts a try down.
    /// Returns the booted entry's file name as it is after the rename.
    fn power_on(&self) -> String {
        let entries = self.dir.join("esp/loader/entries");
        let mut candidates: Vec<(bool, u64, String)> = self
            .entries()
            .into_iter()
            .filter(|name| name.starts_with("edgenode-") && name.ends_with(".conf"))
            .map(|name| {
                let generation: u64 = name.split('-').nth(1).unwrap().parse().unwrap();
                (tries_left(&name) == Some(0), generation, name)
            })
            .collect();
        // Entries with tries left first, then the highest.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let chosen = candidates.first().expect("an entry to boot").2.clone();
        let Some((stem, counter)) = chosen.trim_end_matches(".conf").split_once('+') else { return chosen };
        let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
        let (left, done): (u64, u64) = (left.parse().unwrap(), done.parse().unwrap());
        if left == 0 {
            return chosen;
        }
        let renamed = format!("{stem}+{}-{}.conf", left - 1, done + 1);
        fs::rename(entries.join(&chosen), entries.join(&renamed)).unwrap();
        renamed
    }

    /// systemd-bless-boot good, after boot-complete.target.
    fn bless(&self, booted: &str) {
        let entries = self.dir.join("esp/loader/entries");
        let good = format!("{}.conf", booted.split('+').next().unwrap().trim_end_matches(".conf"));
        fs::rename(entries.join(booted), entries.join(good)).unwrap();
    }
}

fn tries_left(name: &str) -> Option<u64> {
    let counter = name.trim_end_matches(".conf").split_once('+')?.1;
    counter.split('-').next()?.parse().ok()
}

fn slot_of(entry: &str) -> &str {
    entry.split(['-', '+', '.']).nth(2).unwrap()
}

#[test]
fn an_update_boots_once_marked_good_and_stays() {
    let esp = Esp::new("good");
    assert_eq!(esp.ok(&["get-primary"], None), "A");
    assert_eq!(esp.ok(&["get-state", "A"], None), "good");
    assert_eq!(esp.ok(&["get-state", "B"], None), "bad", "slot B is empty in a new image");

    esp.install("B", "2.0.0");
    assert_eq!(esp.entries(), ["edgenode-1-a.conf", "edgenode-2-b+3.conf"]);
    let entry = fs::read_to_string(esp.dir.join("esp/loader/entries/edgenode-2-b+3.conf")).unwrap();
    assert!(entry.contains("title Edgenode 2.0.0 (slot B)\n"), "{entry}");
    assert!(entry.contains("linux /edgenode-b/vmlinuz\ninitrd /edgenode-b/initrd.img\n"), "{entry}");
    assert!(
        entry.contains("options root=PARTUUID=uuid-new ro rootwait console=ttyS0,115200 rauc.slot=B\n"),
        "the slot's own kernel options, its root and its name: {entry}"
    );
    assert_eq!(fs::read_to_string(esp.dir.join("esp/edgenode-b/vmlinuz")).unwrap(), "kernel 2.0.0", "newest kernel");
    assert_eq!(fs::read_to_string(esp.dir.join("esp/edgenode-b/initrd.img")).unwrap(), "initrd 2.0.0");
    assert_eq!(esp.ok(&["get-primary"], None), "B");

    let booted = esp.power_on();
    assert_eq!(booted, "edgenode-2-b+2-1.conf");
    // The health check passed: `rauc status mark-good` and systemd-bless-boot agree.
    esp.ok(&["set-state", "B", "good"], None);
    assert_eq!(esp.entries(), ["edgenode-1-a.conf", "edgenode-2-b.conf"]);
    assert_eq!(esp.ok(&["get-state", "B"], None), "good");
    for _ in 0..3 {
        assert_eq!(esp.power_on(), "edgenode-2-b.conf", "a good slot stays booted, uncounted");
    }
    assert_eq!(esp.ok(&["get-primary"], None), "B");
    assert_eq!(esp.ok(&["get-state", "A"], None), "good", "the old slot stays a fallback");
}

#[test]
fn a_slot_that_never_passes_its_health_check_falls_back_after_three_tries() {
    let esp = Esp::new("bad");
    esp.install("B", "2.0.0");
    let booted = esp.power_on();
    esp.bless(&booted);
    assert_eq!(esp.entries(), ["edgenode-1-a.conf", "edgenode-2-b.conf"]);

    // v3 into slot A, which then fails every health check (no bless).
    esp.install("A", "3.0.0");
    assert_eq!(esp.entries(), ["edgenode-2-b.conf", "edgenode-3-a+3.conf"], "A's old entry is replaced");
    assert_eq!(esp.ok(&["get-primary"], None), "A");
    let tries: Vec<String> = (0..3).map(|_| esp.power_on()).collect();
    assert_eq!(tries, ["edgenode-3-a+2-1.conf", "edgenode-3-a+1-2.conf", "edgenode-3-a+0-3.conf"]);
    assert_eq!(slot_of(&esp.power_on()), "b", "the fourth power-on boots the old slot");
    assert_eq!(esp.ok(&["get-state", "A"], None), "bad");
    assert_eq!(esp.ok(&["get-primary"], None), "B");
    assert_eq!(slot_of(&esp.power_on()), "b", "and stays there");

    // A later install into A starts a fresh trial above everything.
    esp.install("A", "3.0.1");
    assert_eq!(esp.entries(), ["edgenode-2-b.conf", "edgenode-4-a+3.conf"]);
    assert_eq!(esp.power_on(), "edgenode-4-a+2-1.conf");
}

#[test]
fn an_install_cut_short_never_boots_the_half_written_slot() {
    let esp = Esp::new("cut");
    esp.install("B", "2.0.0");
    esp.bless(&esp.power_on());
    // RAUC marks the target bad before it writes; the power goes before set-primary.
    esp.ok(&["set-state", "A", "bad"], None);
    assert_eq!(esp.entries(), ["edgenode-1-a+0.conf", "edgenode-2-b.conf"]);
    for _ in 0..2 {
        assert_eq!(esp.power_on(), "edgenode-2-b.conf");
    }
    // Marking the booted slot good again changes nothing.
    esp.ok(&["set-state", "B", "good"], None);
    assert_eq!(esp.entries(), ["edgenode-1-a+0.conf", "edgenode-2-b.conf"]);
}

#[test]
fn wrong_slots_and_states_are_refused() {
    let esp = Esp::new("refused");
    for args in [&["get-state", "C"][..], &["set-state", "A", "maybe"], &["set-primary"], &["frobnicate"]] {
        let output = esp.run(args, None);
        assert!(!output.status.success(), "rauc-boot {args:?} succeeded");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("rauc-boot: "), "{args:?}");
    }
    let output = esp.run(&["set-state", "B", "good"], None);
    assert!(!output.status.success(), "slot B has no entry to mark good");
    assert_eq!(esp.entries(), ["edgenode-1-a.conf"], "nothing changed");
}
