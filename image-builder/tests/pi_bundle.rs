//! System tier (`#[ignore]`d; `--include-ignored` runs it; needs rauc, squashfs-tools,
//! openssl, e2fsprogs, dosfstools, mtools, fdisk): an rpi-arm64 bundle carries the
//! slot's root file system and its boot partition, RAUC reads both images and the
//! Pi's system.conf (boot slots as children of the root slots), and bundles without a
//! usable boot image are refused before RAUC runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image_builder::build::Target;
use image_builder::update;

/// Removes the scratch directory also when an assertion fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> (PathBuf, Scratch) {
    let dir = std::env::temp_dir().join(format!("image-builder-pi-bundle-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    (dir.clone(), Scratch(dir))
}

fn require_tools() {
    for (tool, package) in [
        ("rauc", "rauc"),
        ("mksquashfs", "squashfs-tools"),
        ("openssl", "openssl"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("sfdisk", "fdisk"),
    ] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        assert!(found.is_ok_and(|output| output.status.success()), "{tool} is missing: apt-get install {package}");
    }
}

/// Bytes that do not compress (xorshift64): a squashfs of a few KiB is too small for RAUC.
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

fn small_rootfs(dir: &Path) -> PathBuf {
    let tree = dir.join("root-tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/vmlinuz-6.1.0-test"), noise(3, 256 * 1024)).unwrap();
    let image = dir.join("root.img");
    fs::File::create(&image).unwrap().set_len(8 * 1024 * 1024).unwrap();
    let status = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&tree).arg(&image).status().unwrap();
    assert!(status.success(), "mkfs.ext4 -d failed");
    image
}

/// A slot's boot partition as a build makes it (WORK/boot.img), in miniature: 32 MiB.
fn small_bootfs(dir: &Path) -> PathBuf {
    let image = dir.join("boot.img");
    let status = Command::new("mkfs.vfat").args(["-n", "EDGEBOOT", "-C"]).arg(&image).arg("32768").status().unwrap();
    assert!(status.success(), "mkfs.vfat failed");
    for (name, content) in [
        (
            "cmdline.txt",
            "root=PARTUUID=6e6f6465-0002-4000-8000-000000000002 ro panic=10 rauc.slot=A\n".as_bytes().to_vec(),
        ),
        ("config.txt", b"kernel=vmlinuz\n".to_vec()),
        ("start4.elf", noise(5, 64 * 1024)),
    ] {
        fs::write(dir.join(name), content).unwrap();
        let status = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&image)
            .arg(dir.join(name))
            .arg("::")
            .status()
            .unwrap();
        assert!(status.success(), "mcopy {name} failed");
    }
    image
}

fn image_builder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-builder")).args(args).env_remove("RUST_BACKTRACE").output().unwrap()
}

fn bundle(target: &str, source: &[&str], keys: &Path, out: &Path) -> Output {
    let mut args = vec!["bundle", "--target", target];
    args.extend_from_slice(source);
    args.extend_from_slice(&[
        "--version",
        "2.0.0-test",
        "--keys",
        keys.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    image_builder(&args)
}

fn rauc(args: &[&str]) -> Output {
    Command::new("rauc").args(args).output().unwrap()
}

#[test]
#[ignore = "system tier: rauc, squashfs-tools, openssl, e2fsprogs, dosfstools, mtools"]
fn a_pi_bundle_carries_root_and_boot_and_rauc_reads_the_pis_slots() {
    require_tools();
    let (dir, _scratch) = scratch("pair");
    let (rootfs, bootfs, keys) = (small_rootfs(&dir), small_bootfs(&dir), dir.join("keys"));
    let out = dir.join("pi.raucb");
    let made =
        bundle("rpi-arm64", &["--rootfs", rootfs.to_str().unwrap(), "--bootfs", bootfs.to_str().unwrap()], &keys, &out);
    assert!(made.status.success(), "bundle failed: {}", String::from_utf8_lossy(&made.stderr));

    let keyring = format!("--keyring={}", keys.join("ca.cert.pem").display());
    let info = rauc(&[&keyring, "info", "--output-format=shell", out.to_str().unwrap()]);
    assert!(info.status.success(), "rauc info refused it: {}", String::from_utf8_lossy(&info.stderr));
    let text = String::from_utf8_lossy(&info.stdout);
    for line in [
        "RAUC_MF_COMPATIBLE='edgenode-rpi-arm64'",
        "RAUC_IMAGE_CLASS_0='rootfs'",
        "RAUC_IMAGE_NAME_1='bootfs.vfat'",
        "RAUC_IMAGE_CLASS_1='bootfs'",
    ] {
        assert!(text.lines().any(|have| have == line), "{line} missing in:\n{text}");
    }
    assert!(text.contains(&format!("RAUC_IMAGE_SIZE_1={}\n", fs::metadata(&bootfs).unwrap().len())), "{text}");

    // The image's system.conf, as RAUC itself reads it (keyring and state moved here).
    let conf = update::system_conf(Target::RpiArm64)
        .replace(update::KEYRING_PATH, keys.join("ca.cert.pem").to_str().unwrap())
        .replace("/var/lib/rauc", dir.join("rauc-state").to_str().unwrap());
    fs::write(dir.join("system.conf"), &conf).unwrap();
    let read = rauc(&[&format!("--conf={}", dir.join("system.conf").display()), "info", out.to_str().unwrap()]);
    assert!(read.status.success(), "rauc refuses the Pi's system.conf: {}", String::from_utf8_lossy(&read.stderr));
    // RAUC does check the boot slots' parents: a wrong one is an error.
    fs::write(dir.join("broken.conf"), conf.replace("parent=rootfs.1", "parent=rootfs.9")).unwrap();
    let broken = rauc(&[&format!("--conf={}", dir.join("broken.conf").display()), "info", out.to_str().unwrap()]);
    assert!(!broken.status.success());
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("rootfs.9"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );

    // The boot image in the bundle is the build's, byte for byte.
    let extracted = dir.join("extracted");
    let output = rauc(&[&keyring, "extract", out.to_str().unwrap(), extracted.to_str().unwrap()]);
    assert!(output.status.success(), "rauc extract failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(fs::read(extracted.join("bootfs.vfat")).unwrap() == fs::read(&bootfs).unwrap(), "boot image changed");
}

#[test]
#[ignore = "system tier: rauc, squashfs-tools, openssl, e2fsprogs, dosfstools, mtools, fdisk"]
fn a_pi_bundle_from_an_image_takes_slot_as_boot_partition_whole() {
    require_tools();
    let (dir, _scratch) = scratch("image");
    let (rootfs, bootfs, keys) = (small_rootfs(&dir), small_bootfs(&dir), dir.join("keys"));
    // The Pi layout in miniature: autoboot, boot-a, boot-b, root-a, root-b, data.
    let disk = dir.join("disk.img");
    fs::File::create(&disk).unwrap().set_len(128 * 1024 * 1024).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        sfdisk.stdin.as_mut().unwrap(),
        b"label: gpt\nunit: sectors\n\nstart=2048, size=8192, name=\"edgenode-autoboot\"\n\
          start=10240, size=65536, name=\"edgenode-boot-a\"\nstart=75776, size=65536, name=\"edgenode-boot-b\"\n\
          start=141312, size=32768, name=\"edgenode-root-a\"\nstart=174080, size=32768, name=\"edgenode-root-b\"\n\
          start=206848, size=20480, name=\"edgenode-data\"\n",
    )
    .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let mut bytes = fs::read(&disk).unwrap();
    for (image, start_sector) in [(&bootfs, 10240usize), (&rootfs, 141312)] {
        let content = fs::read(image).unwrap();
        bytes[start_sector * 512..start_sector * 512 + content.len()].copy_from_slice(&content);
    }
    fs::write(&disk, bytes).unwrap();

    let out = dir.join("from-image.raucb");
    let made = bundle("rpi-arm64", &["--image", disk.to_str().unwrap()], &keys, &out);
    assert!(made.status.success(), "bundle failed: {}", String::from_utf8_lossy(&made.stderr));
    let extracted = dir.join("extracted");
    let keyring = format!("--keyring={}", keys.join("ca.cert.pem").display());
    let output = rauc(&[&keyring, "extract", out.to_str().unwrap(), extracted.to_str().unwrap()]);
    assert!(output.status.success(), "rauc extract failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(fs::read(extracted.join("bootfs.vfat")).unwrap() == fs::read(&bootfs).unwrap(), "not boot-a whole");
    assert!(fs::read(extracted.join("rootfs.ext4")).unwrap() == fs::read(&rootfs).unwrap(), "not root-a's file system");
}

#[test]
#[ignore = "system tier: openssl, e2fsprogs, dosfstools, mtools"]
fn bundles_without_a_usable_boot_image_are_refused() {
    require_tools();
    let (dir, _scratch) = scratch("refused");
    let (rootfs, bootfs, keys) = (small_rootfs(&dir), small_bootfs(&dir), dir.join("keys"));
    let refused = |target: &str, source: &[&str], expected: &str| {
        let out = dir.join("refused.raucb");
        let output = bundle(target, source, &keys, &out);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{source:?} was bundled");
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
        assert!(!out.exists(), "a refused bundle was left behind");
    };
    let rootfs = rootfs.to_str().unwrap();
    refused("rpi-arm64", &["--rootfs", rootfs], "give --bootfs");
    refused("rpi-arm64", &["--rootfs", rootfs, "--bootfs", rootfs], "is not a FAT file system");
    let large = dir.join("large.img");
    fs::File::create(&large).unwrap().set_len(image_builder::build::PI_BOOT_SLOT_BYTES + 512).unwrap();
    refused("rpi-arm64", &["--rootfs", rootfs, "--bootfs", large.to_str().unwrap()], "larger than a boot slot");
    refused(
        "x86_64",
        &["--rootfs", rootfs, "--bootfs", bootfs.to_str().unwrap()],
        "x86_64 bundles carry no boot partition",
    );
}
