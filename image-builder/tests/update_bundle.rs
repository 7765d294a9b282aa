//! System tier (`#[ignore]`d; `--include-ignored` runs it; needs rauc, squashfs-tools,
//! openssl, e2fsprogs, fdisk): `image-builder bundle` makes a bundle that RAUC itself
//! (`rauc info --keyring CA`) accepts, and refuses once one byte of it changed or when
//! another key signed it. No root, no disk: the root file system is a small ext4 image.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgenode::services::update::{check_verity_bundle, VerityParams};
use image_builder::build::Target;
use image_builder::update;

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("image-builder-bundle-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the scratch directory also when an assertion fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn require(tool: &str, package: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
    assert!(found.is_ok_and(|output| output.status.success()), "{tool} is missing: apt-get install {package}");
}

/// A root file system as a build makes one, in miniature: kernel and initrd in /boot,
/// the kernel options and version rauc-boot reads.
fn small_rootfs(dir: &Path, version: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("usr/lib/edgenode")).unwrap();
    // Incompressible, like a kernel: a squashfs of only a few KiB is too small for RAUC.
    fs::write(tree.join("boot/vmlinuz-6.1.0-test"), noise(version.len() as u64, 256 * 1024)).unwrap();
    fs::write(tree.join("boot/initrd.img-6.1.0-test"), noise(7, 256 * 1024)).unwrap();
    fs::write(tree.join("usr/lib/edgenode/kernel-options"), "ro rootwait\n").unwrap();
    fs::write(tree.join("usr/lib/edgenode/version"), format!("{version}\n")).unwrap();
    let image = dir.join(format!("rootfs-{version}.ext4"));
    fs::File::create(&image).unwrap().set_len(8 * 1024 * 1024).unwrap();
    let status = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&tree).arg(&image).status().unwrap();
    assert!(status.success(), "mkfs.ext4 -d failed");
    image
}

/// Bytes that do not compress (xorshift64).
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn image_builder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-builder")).args(args).output().unwrap()
}

fn bundle(source_flag: &str, source: &Path, version: &str, keys: &Path, out: &Path) {
    let output = image_builder(&[
        "bundle",
        "--target",
        "x86_64",
        source_flag,
        source.to_str().unwrap(),
        "--version",
        version,
        "--keys",
        keys.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "image-builder bundle failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn rauc_info(keyring: &Path, bundle: &Path) -> Output {
    Command::new("rauc")
        .arg(format!("--keyring={}", keyring.display()))
        .args(["info", "--output-format=shell"])
        .arg(bundle)
        .output()
        .unwrap()
}

fn rauc_extract(keyring: &Path, bundle: &Path, to: &Path) -> Output {
    Command::new("rauc")
        .arg(format!("--keyring={}", keyring.display()))
        .arg("extract")
        .arg(bundle)
        .arg(to)
        .output()
        .unwrap()
}

fn flip_byte(from: &Path, to: &Path, at: usize) {
    let mut bytes = fs::read(from).unwrap();
    bytes[at] ^= 0x01;
    fs::write(to, bytes).unwrap();
}

#[test]
#[ignore = "system tier: rauc, squashfs-tools, openssl, e2fsprogs"]
fn rauc_accepts_the_bundle_and_refuses_a_changed_byte_or_another_key() {
    for (tool, package) in [("rauc", "rauc"), ("mksquashfs", "squashfs-tools"), ("openssl", "openssl")] {
        require(tool, package);
    }
    let dir = scratch_dir("signed");
    let _scratch = Scratch(dir.clone());
    let keys = dir.join("keys");
    let rootfs = small_rootfs(&dir, "2.0.0-test");
    let good = dir.join("good.raucb");
    bundle("--rootfs", &rootfs, "2.0.0-test", &keys, &good);

    // Development keys were made: private halves 0600, in a 0700 directory.
    for key in ["ca.key.pem", "signing.key.pem"] {
        let mode = fs::metadata(keys.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key} is {mode:o}");
    }
    assert_eq!(fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
    let ca = keys.join("ca.cert.pem");

    let info = rauc_info(&ca, &good);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "rauc info refused the bundle: {}", String::from_utf8_lossy(&info.stderr));
    assert!(text.contains("RAUC_MF_COMPATIBLE='edgenode-x86_64'"), "{text}");
    assert!(text.contains("RAUC_MF_VERSION='2.0.0-test'"), "{text}");
    assert!(text.contains("RAUC_IMAGE_NAME_0='rootfs.ext4'"), "{text}");

    let human =
        Command::new("rauc").arg(format!("--keyring={}", ca.display())).arg("info").arg(&good).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("Bundle Format: \tverity"), "not a verity bundle");

    // One byte changed, anywhere: `rauc info` checks the signature over the manifest,
    // which holds the dm-verity root hash of the payload; the payload itself is checked
    // as it is read (install mounts it through dm-verity; `rauc extract` reads it all).
    let length = fs::metadata(&good).unwrap().len() as usize;
    let extracted = rauc_extract(&ca, &good, &dir.join("extracted-good"));
    assert!(
        extracted.status.success(),
        "rauc extract refused the bundle: {}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    // What the node checks before `rauc install` (which would find a changed byte only
    // mid-write): the whole payload and hash tree against the signed root hash.
    let params = VerityParams::from_rauc_info(&String::from_utf8_lossy(&human.stdout)).unwrap().expect("verity");
    check_verity_bundle(&good, &params).expect("the node's check accepts the bundle RAUC accepts");
    for (what, at) in
        [("start", 100), ("payload", length / 3), ("hash tree", length - 5000), ("signature", length - 200)]
    {
        let tampered = dir.join("tampered.raucb");
        flip_byte(&good, &tampered, at);
        let extracted = rauc_extract(&ca, &tampered, &dir.join("extracted-tampered"));
        assert!(
            !extracted.status.success(),
            "rauc extract accepted a bundle with one byte changed in its {what} (at {at})"
        );
        let _ = fs::remove_dir_all(dir.join("extracted-tampered"));
        if what != "signature" {
            let refused = check_verity_bundle(&tampered, &params).expect_err(what);
            assert!(refused.to_string().contains("changed"), "{what}: {refused}");
        }
    }
    let tampered = dir.join("tampered.raucb");
    flip_byte(&good, &tampered, length - 200);
    assert!(!rauc_info(&ca, &tampered).status.success(), "rauc info accepted a changed signature");

    // Signed by another key: refused by this keyring, accepted by its own.
    let other_keys = dir.join("other-keys");
    let other = dir.join("other.raucb");
    bundle("--rootfs", &rootfs, "2.0.0-test", &other_keys, &other);
    let info = rauc_info(&ca, &other);
    assert!(!info.status.success(), "rauc info accepted a bundle signed by another CA's key");
    let own = rauc_info(&other_keys.join("ca.cert.pem"), &other);
    assert!(
        own.status.success(),
        "the other bundle is refused by its own keyring: {}",
        String::from_utf8_lossy(&own.stderr)
    );

    // The image's system.conf, as RAUC reads it (keyring and data directory moved here).
    for target in [Target::X86_64, Target::RpiArm64] {
        let conf = update::system_conf(target)
            .replace(update::KEYRING_PATH, ca.to_str().unwrap())
            .replace("/var/lib/rauc", dir.join("rauc-data").to_str().unwrap());
        let conf_path = dir.join("system.conf");
        fs::write(&conf_path, conf).unwrap();
        let info = Command::new("rauc")
            .arg(format!("--conf={}", conf_path.display()))
            .arg("info")
            .arg(&good)
            .output()
            .unwrap();
        assert!(
            info.status.success(),
            "RAUC refuses the {target:?} system.conf: {}",
            String::from_utf8_lossy(&info.stderr)
        );
    }

    // Keys already in the directory are used as they are, not replaced.
    let ca_before = fs::read(&ca).unwrap();
    bundle("--rootfs", &rootfs, "2.0.1-test", &keys, &dir.join("again.raucb"));
    assert_eq!(fs::read(&ca).unwrap(), ca_before, "the CA was replaced");
}

#[test]
#[ignore = "system tier: rauc, squashfs-tools, openssl, e2fsprogs, fdisk"]
fn bundle_from_a_disk_image_holds_slot_a_file_system_only() {
    for (tool, package) in [("rauc", "rauc"), ("mksquashfs", "squashfs-tools"), ("sfdisk", "fdisk")] {
        require(tool, package);
    }
    let dir = scratch_dir("image");
    let _scratch = Scratch(dir.clone());
    let rootfs = small_rootfs(&dir, "3.0.0-test");
    // A disk laid out like a build's: boot, root-a (larger than its file system), root-b, data.
    let disk = dir.join("disk.img");
    fs::File::create(&disk).unwrap().set_len(64 * 1024 * 1024).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        sfdisk.stdin.as_mut().unwrap(),
        b"label: gpt\nunit: sectors\n\nstart=2048, size=8192, name=\"edgenode-boot\"\n\
          start=10240, size=32768, name=\"edgenode-root-a\"\nstart=43008, size=32768, name=\"edgenode-root-b\"\n\
          start=75776, size=20480, name=\"edgenode-data\"\n",
    )
    .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let filesystem = fs::read(&rootfs).unwrap();
    let mut bytes = fs::read(&disk).unwrap();
    bytes[10240 * 512..10240 * 512 + filesystem.len()].copy_from_slice(&filesystem);
    // Junk after the file system inside the partition must not reach the bundle.
    bytes[10240 * 512 + filesystem.len()] = 0xAA;
    fs::write(&disk, bytes).unwrap();

    let keys = dir.join("keys");
    let out = dir.join("from-image.raucb");
    bundle("--image", &disk, "3.0.0-test", &keys, &out);
    let info = rauc_info(&keys.join("ca.cert.pem"), &out);
    assert!(info.status.success(), "rauc info refused it: {}", String::from_utf8_lossy(&info.stderr));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&format!("RAUC_IMAGE_SIZE_0={}\n", filesystem.len())), "{text}");

    // The bundle's file system is the one in slot A, byte for byte.
    let extracted = dir.join("extracted");
    let output = rauc_extract(&keys.join("ca.cert.pem"), &out, &extracted);
    assert!(output.status.success(), "rauc extract failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(
        fs::read(extracted.join("rootfs.ext4")).unwrap() == filesystem,
        "slot A's file system changed in the bundle"
    );

    let refused = image_builder(&[
        "bundle",
        "--target",
        "x86_64",
        "--image",
        rootfs.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--out",
        dir.join("refused.raucb").to_str().unwrap(),
    ]);
    assert!(!refused.status.success(), "a file without partitions was bundled");
}
