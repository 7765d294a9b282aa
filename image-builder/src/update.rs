//! Signed A/B updates with RAUC: the update signing keys (`--keys DIR`), RAUC's
//! system.conf in the image, and `image-builder bundle`, a signed RAUC bundle of a
//! build's root file system (which holds its kernel and initrd in /boot).
//!
//! Keys: `DIR/ca.cert.pem` is the keyring the image trusts (/etc/rauc/keyring.pem);
//! `DIR/signing.cert.pem` (issued by that CA) and `DIR/signing.key.pem` sign bundles;
//! `DIR/ca.key.pem` issues new signing certificates. Made once, when DIR lacks them,
//! as a development CA; an ISP puts its own there. Private keys are 0600 and never
//! leave DIR.
//!
//! Boot side (x86_64): RAUC's custom backend `rauc-boot` (systemd/libexec) keeps the
//! slots' states in systemd-boot's entry names with boot counting. rpi-arm64: a slot is
//! a root file system and its own FAT boot partition, written together (`bootfs` slots
//! with `parent=`); `rauc-boot-pi` switches them with the firmware's tryboot A/B.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};

use crate::build::Target;

/// The keyring in the image; RAUC accepts only bundles whose signer chains to it.
pub const KEYRING_PATH: &str = "/etc/rauc/keyring.pem";
pub const CA_CERT: &str = "ca.cert.pem";
pub const CA_KEY: &str = "ca.key.pem";
pub const SIGNING_CERT: &str = "signing.cert.pem";
pub const SIGNING_KEY: &str = "signing.key.pem";
/// RAUC refuses a bundle whose compatible is not the system's: an x86_64 bundle never
/// lands on a Pi.
pub fn compatible(target: Target) -> &'static str {
    match target {
        Target::X86_64 => "edgenode-x86_64",
        Target::RpiArm64 => "edgenode-rpi-arm64",
    }
}

/// The image's /etc/rauc/system.conf. Slots by partition label; RAUC's own state lives
/// on the data partition, the root file system being read-only.
pub fn system_conf(target: Target) -> String {
    let bootloader = match target {
        // systemd-boot's boot counting; RAUC's `efi` backend would switch EFI BootNext/
        // BootOrder entries, which know nothing of systemd-boot's tries.
        Target::X86_64 => "bootloader=custom",
        // The Pi firmware's tryboot A/B (autoboot.txt); bookworm's RAUC (1.8) has no
        // backend for it.
        Target::RpiArm64 => "bootloader=custom",
    };
    let handler = match target {
        Target::X86_64 => "\n[handlers]\nbootloader-custom-backend=/usr/libexec/edgenode/rauc-boot\n",
        Target::RpiArm64 => {
            "\n[handlers]\nbootloader-custom-backend=/usr/libexec/edgenode/rauc-boot-pi\n\
             pre-install=/usr/libexec/edgenode/rauc-boot-pi\n"
        }
    };
    // A slot's boot partition goes with its root: RAUC writes both of the slot not
    // booted, from the bundle's bootfs and rootfs images.
    let boot_slots = match target {
        Target::X86_64 => "",
        Target::RpiArm64 => {
            "\n[slot.bootfs.0]\ndevice=/dev/disk/by-partlabel/edgenode-boot-a\ntype=vfat\nparent=rootfs.0\n\
             \n[slot.bootfs.1]\ndevice=/dev/disk/by-partlabel/edgenode-boot-b\ntype=vfat\nparent=rootfs.1\n"
        }
    };
    format!(
        "# Written by image-builder. Slot A and B are the two root partitions; an update\n\
         # writes the one not booted, and the boot loader tries it before it counts as good.\n\
         [system]\n\
         compatible={compatible}\n\
         {bootloader}\n\
         data-directory=/var/lib/rauc\n\
         # Only dm-verity bundles: every block is checked against the signed hash tree as\n\
         # it is read, not once before install.\n\
         bundle-formats=-plain\n\
         \n\
         [keyring]\n\
         path={KEYRING_PATH}\n\
         {handler}\n\
         [slot.rootfs.0]\n\
         device=/dev/disk/by-partlabel/edgenode-root-a\n\
         type=ext4\n\
         bootname=A\n\
         \n\
         [slot.rootfs.1]\n\
         device=/dev/disk/by-partlabel/edgenode-root-b\n\
         type=ext4\n\
         bootname=B\n\
         {boot_slots}",
        compatible = compatible(target)
    )
}

#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub ca_cert: PathBuf,
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
}

/// The keys in DIR; a development CA and signing key are made when DIR has none.
pub fn signing_keys(dir: &Path) -> Result<SigningKeys> {
    let keys = SigningKeys {
        ca_cert: dir.join(CA_CERT),
        signing_cert: dir.join(SIGNING_CERT),
        signing_key: dir.join(SIGNING_KEY),
    };
    let present = [&keys.ca_cert, &keys.signing_cert, &keys.signing_key].map(|path| path.is_file());
    if present.iter().all(|&present| present) {
        return Ok(keys);
    }
    ensure!(
        present.iter().all(|&present| !present),
        "{} holds only some of {CA_CERT}, {SIGNING_CERT}, {SIGNING_KEY}: put all three there, or none \
         to have development keys made",
        dir.display()
    );
    make_development_keys(dir)?;
    Ok(keys)
}

fn make_development_keys(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    // The private keys exist as 0600 files before openssl writes into them.
    for key in [CA_KEY, SIGNING_KEY] {
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join(key))?;
    }
    let extensions = dir.join("extensions.cnf");
    fs::write(
        &extensions,
        "[signing]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )?;
    let openssl = |args: &[&str]| -> Result<()> {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .context("cannot run openssl (apt-get install openssl)")?;
        ensure!(output.status.success(), "openssl {} failed: {}", args[0], String::from_utf8_lossy(&output.stderr));
        Ok(())
    };
    let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"];
    let ca = [
        "-keyout",
        CA_KEY,
        "-out",
        CA_CERT,
        "-days",
        "36500",
        "-subj",
        "/O=Edgenode development/CN=Edgenode update CA (development)",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(&[&["req", "-x509"][..], &ec_key, &ca].concat())?;
    let signing_request = [
        "-keyout",
        SIGNING_KEY,
        "-out",
        "signing.csr",
        "-subj",
        "/O=Edgenode development/CN=Edgenode update signing (development)",
    ];
    openssl(&[&["req"][..], &ec_key, &signing_request].concat())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "signing.csr",
        "-CA",
        CA_CERT,
        "-CAkey",
        CA_KEY,
        "-set_serial",
        "2",
        "-days",
        "36500",
        "-extfile",
        "extensions.cnf",
        "-extensions",
        "signing",
        "-out",
        SIGNING_CERT,
    ])?;
    for scratch in ["signing.csr", "extensions.cnf"] {
        fs::remove_file(dir.join(scratch))?;
    }
    for key in [CA_KEY, SIGNING_KEY] {
        fs::set_permissions(dir.join(key), fs::Permissions::from_mode(0o600))?;
    }
    eprintln!(
        "update keys: made a development CA and signing key in {} (an ISP replaces them with its own; \
         keep {CA_KEY} and {SIGNING_KEY} private)",
        dir.display()
    );
    Ok(())
}

/// Where the bundle's root file system comes from.
#[derive(Debug, Clone)]
pub enum RootSource {
    /// A disk image made by `image-builder build`: its slot A file system.
    Image(PathBuf),
    /// An ext4 file system image, such as a build's `WORK/root.img`.
    Rootfs(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub target: Target,
    pub source: RootSource,
    /// rpi-arm64: the slot's boot partition as a FAT image (a build's `WORK/boot.img`);
    /// taken from the image's edgenode-boot-a when the source is an image.
    pub bootfs: Option<PathBuf>,
    pub version: String,
    pub keys: PathBuf,
    pub out: PathBuf,
}

pub fn bundle(options: &BundleOptions) -> Result<()> {
    let started = Instant::now();
    ensure!(
        !options.version.is_empty() && options.version.chars().all(|c| c.is_ascii_graphic() && c != '"'),
        "version {:?} must be printable ASCII without spaces or quotes",
        options.version
    );
    let keys = signing_keys(&options.keys)?;
    let work = options.out.with_extension("bundle-work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    let content = work.join("content");
    fs::create_dir_all(&content)?;
    let result = (|| -> Result<()> {
        let rootfs = content.join("rootfs.ext4");
        match &options.source {
            RootSource::Rootfs(path) => {
                ext4_bytes(&mut fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?, 0)
                    .with_context(|| format!("{} is not an ext4 file system", path.display()))?;
                if fs::hard_link(path, &rootfs).is_err() {
                    fs::copy(path, &rootfs)?;
                }
            }
            RootSource::Image(image) => extract_slot_a(image, &rootfs)?,
        }
        let boot_image = match options.target {
            Target::X86_64 => {
                ensure!(
                    options.bootfs.is_none(),
                    "x86_64 bundles carry no boot partition: the kernel is in the root file system"
                );
                ""
            }
            Target::RpiArm64 => {
                let bootfs = content.join("bootfs.vfat");
                match (&options.bootfs, &options.source) {
                    (Some(path), _) => {
                        check_pi_bootfs(path)?;
                        if fs::hard_link(path, &bootfs).is_err() {
                            fs::copy(path, &bootfs)?;
                        }
                    }
                    (None, RootSource::Image(image)) => extract_partition(image, "edgenode-boot-a", &bootfs)?,
                    (None, RootSource::Rootfs(_)) => bail!(
                        "an rpi-arm64 bundle carries the slot's boot partition too: give --bootfs \
                         (the build's WORK/boot.img), or --image"
                    ),
                }
                "\n[image.bootfs]\nfilename=bootfs.vfat\n"
            }
        };
        fs::write(
            content.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={}\nversion={}\ndescription=Edgenode {} for {}\n\n\
                 [bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.ext4\n{boot_image}",
                compatible(options.target),
                options.version,
                options.version,
                compatible(options.target)
            ),
        )?;
        let _ = fs::remove_file(&options.out);
        let output = Command::new("rauc")
            .arg(format!("--cert={}", keys.signing_cert.display()))
            .arg(format!("--key={}", keys.signing_key.display()))
            .arg(format!("--keyring={}", keys.ca_cert.display()))
            .arg("bundle")
            // zstd at level 3: as small as mksquashfs's default gzip -9 for a root file
            // system, and about 50 times faster to make (Debian's kernel reads it).
            .arg("--mksquashfs-args=-comp zstd -Xcompression-level 3")
            .arg(&content)
            .arg(&options.out)
            .output()
            .context("cannot run rauc (apt-get install rauc squashfs-tools)")?;
        ensure!(
            output.status.success(),
            "rauc bundle failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result?;
    let bytes = fs::metadata(&options.out)?.len();
    eprintln!(
        "bundle: {} ({} MiB, {} {}, verity, signed by {}) in {:.0} s",
        options.out.display(),
        bytes / (1024 * 1024),
        compatible(options.target),
        options.version,
        keys.signing_cert.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies slot A's ext4 file system (not the empty rest of the partition) out of a
/// disk image.
fn extract_slot_a(image: &Path, to: &Path) -> Result<()> {
    let output = Command::new("sfdisk").arg("--dump").arg(image).output().context("cannot run sfdisk")?;
    ensure!(
        output.status.success(),
        "sfdisk --dump {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let dump = String::from_utf8_lossy(&output.stdout);
    let Some(start_bytes) = partition_start_bytes(&dump, "edgenode-root-a") else {
        bail!("{} has no partition edgenode-root-a: not an Edgenode image", image.display())
    };
    let mut disk = fs::File::open(image)?;
    let bytes = ext4_bytes(&mut disk, start_bytes)
        .with_context(|| format!("slot A of {} holds no ext4 file system", image.display()))?;
    disk.seek(SeekFrom::Start(start_bytes))?;
    let mut out = fs::File::create(to)?;
    let copied = std::io::copy(&mut disk.take(bytes), &mut out)?;
    ensure!(copied == bytes, "{} ends inside slot A", image.display());
    out.sync_all()?;
    Ok(())
}

/// Copies the whole partition NAME of a disk image (a Pi slot's FAT boot partition).
fn extract_partition(image: &Path, name: &str, to: &Path) -> Result<()> {
    let output = Command::new("sfdisk").arg("--dump").arg(image).output().context("cannot run sfdisk")?;
    ensure!(
        output.status.success(),
        "sfdisk --dump {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let dump = String::from_utf8_lossy(&output.stdout);
    let (Some(start_bytes), Some(size_bytes)) = (partition_start_bytes(&dump, name), partition_size_bytes(&dump, name))
    else {
        bail!("{} has no partition {name}: not an Edgenode rpi-arm64 image", image.display())
    };
    let mut disk = fs::File::open(image)?;
    disk.seek(SeekFrom::Start(start_bytes))?;
    let mut out = fs::File::create(to)?;
    let copied = std::io::copy(&mut disk.take(size_bytes), &mut out)?;
    ensure!(copied == size_bytes, "{} ends inside {name}", image.display());
    out.sync_all()?;
    drop(out);
    check_pi_bootfs(to)
}

/// A Pi slot's boot partition image: a FAT file system that fits the image's boot slots.
fn check_pi_bootfs(path: &Path) -> Result<()> {
    let bytes = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    ensure!(
        bytes <= crate::build::PI_BOOT_SLOT_BYTES,
        "{} ({bytes} bytes) is larger than a boot slot ({} bytes)",
        path.display(),
        crate::build::PI_BOOT_SLOT_BYTES
    );
    let mut boot_sector = [0u8; 512];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut boot_sector))
        .with_context(|| format!("{} is too short for a FAT file system", path.display()))?;
    ensure!(is_fat(&boot_sector), "{} is not a FAT file system", path.display());
    Ok(())
}

fn is_fat(boot_sector: &[u8; 512]) -> bool {
    boot_sector[510..512] == [0x55, 0xAA] && (&boot_sector[82..87] == b"FAT32" || &boot_sector[54..57] == b"FAT")
}

/// The size of the partition named NAME in `sfdisk --dump` output, in bytes.
fn partition_size_bytes(dump: &str, name: &str) -> Option<u64> {
    partition_field_bytes(dump, name, "size=")
}

/// The start of the partition named NAME in `sfdisk --dump` output, in bytes.
fn partition_start_bytes(dump: &str, name: &str) -> Option<u64> {
    partition_field_bytes(dump, name, "start=")
}

/// A field counted in sectors (`start=`, `size=`) of the partition named NAME in
/// `sfdisk --dump` output, in bytes.
fn partition_field_bytes(dump: &str, name: &str, field: &str) -> Option<u64> {
    let sector_bytes = dump
        .lines()
        .find_map(|line| line.strip_prefix("sector-size:"))
        .and_then(|size| size.trim().parse().ok())
        .unwrap_or(512u64);
    dump.lines().filter(|line| line.contains(&format!("name=\"{name}\""))).find_map(|line| {
        let fields = line.split_once(':')?.1;
        let sectors = fields.split(',').find_map(|part| part.trim().strip_prefix(field))?;
        Some(sectors.trim().parse::<u64>().ok()? * sector_bytes)
    })
}

/// The size of the ext4 file system at OFFSET, from its superblock.
fn ext4_bytes(file: &mut fs::File, offset: u64) -> Result<u64> {
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(offset + 1024))?;
    file.read_exact(&mut superblock)?;
    ext4_superblock_bytes(&superblock)
}

fn ext4_superblock_bytes(superblock: &[u8; 1024]) -> Result<u64> {
    let u32_at = |at: usize| u32::from_le_bytes(superblock[at..at + 4].try_into().expect("4 bytes"));
    let magic = u16::from_le_bytes([superblock[0x38], superblock[0x39]]);
    ensure!(magic == 0xEF53, "no ext4 magic (found {magic:#06x})");
    let log_block_size = u32_at(0x18);
    ensure!(log_block_size <= 6, "block size 2^(10+{log_block_size}) is not ext4's");
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let blocks_high = if incompat_64bit { u64::from(u32_at(0x150)) } else { 0 };
    let blocks = (blocks_high << 32) | u64::from(u32_at(0x4));
    Ok(blocks * (1024 << log_block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_conf_names_both_slots_and_the_custom_backend() {
        let conf = system_conf(Target::X86_64);
        assert!(conf.contains("compatible=edgenode-x86_64\n"));
        assert!(conf.contains("bootloader=custom\n"));
        assert!(conf.contains("bootloader-custom-backend=/usr/libexec/edgenode/rauc-boot\n"));
        assert!(conf.contains("device=/dev/disk/by-partlabel/edgenode-root-a\ntype=ext4\nbootname=A\n"));
        assert!(conf.contains("device=/dev/disk/by-partlabel/edgenode-root-b\ntype=ext4\nbootname=B\n"));
        assert!(!conf.contains("bootfs"), "x86_64: the kernel is in the root slot");
        let pi = system_conf(Target::RpiArm64);
        assert!(pi.contains("compatible=edgenode-rpi-arm64\n"));
        assert!(pi.contains("bootloader-custom-backend=/usr/libexec/edgenode/rauc-boot-pi\n"));
        assert!(pi.contains("pre-install=/usr/libexec/edgenode/rauc-boot-pi\n"));
        // Each boot partition is the child of its root slot: written with it, named by it.
        for (index, letter) in [(0, 'a'), (1, 'b')] {
            let section = format!(
                "[slot.bootfs.{index}]\ndevice=/dev/disk/by-partlabel/edgenode-boot-{letter}\ntype=vfat\nparent=rootfs.{index}\n"
            );
            assert!(pi.contains(&section), "{section} missing in:\n{pi}");
        }
        assert_eq!(pi.matches("bootname=").count(), 2, "only the parents have boot names");
    }

    #[test]
    fn pi_partitions_are_found_whole_in_sfdisk_output() {
        let dump = "label: gpt\nunit: sectors\nsector-size: 512\n\n\
                    d.img2 : start=      133120, size=      524288, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"edgenode-boot-a\"\n";
        assert_eq!(partition_start_bytes(dump, "edgenode-boot-a"), Some(133_120 * 512));
        assert_eq!(partition_size_bytes(dump, "edgenode-boot-a"), Some(256 * 1024 * 1024));
        assert_eq!(partition_size_bytes(dump, "edgenode-boot-b"), None);
        let mut sector = [0u8; 512];
        assert!(!is_fat(&sector));
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector[82..87].copy_from_slice(b"FAT32");
        assert!(is_fat(&sector));
    }

    #[test]
    fn slot_a_is_found_in_sfdisk_output() {
        let dump = "label: gpt\nunit: sectors\nsector-size: 512\n\n\
                    d.img1 : start=        2048, size=      524288, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"edgenode-boot\"\n\
                    d.img2 : start=      526336, size=     1812480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"edgenode-root-a\"\n";
        assert_eq!(partition_start_bytes(dump, "edgenode-root-a"), Some(526_336 * 512));
        assert_eq!(partition_start_bytes(dump, "edgenode-root-b"), None);
    }

    #[test]
    fn ext4_size_comes_from_the_superblock() {
        let mut superblock = [0u8; 1024];
        superblock[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        superblock[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        superblock[0x4..0x8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(ext4_superblock_bytes(&superblock).unwrap(), 4_096_000);
        superblock[0x38] = 0;
        assert!(ext4_superblock_bytes(&superblock).is_err());
    }
}
