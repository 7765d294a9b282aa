//! `image-builder build`: a flashable disk image from Debian packages, without loop
//! devices: mmdebstrap makes the root tree, `mkfs.ext4 -d` and `mkfs.vfat` + `mcopy`
//! make each file system as a file, `sfdisk` writes the GPT into the image file and
//! `dd` places the file systems. Partition layout (GPT, fixed UUIDs so builds are
//! reproducible), x86_64:
//!
//! | # | label          | what                                                        |
//! |---|----------------|-------------------------------------------------------------|
//! | 1 | edgenode-boot  | ESP: systemd-boot, each slot's kernel and initrd             |
//! | 2 | edgenode-root-a| root file system, mounted read-only (slot A, booted first)  |
//! | 3 | edgenode-root-b| same size, empty until an update writes it (slot B)         |
//! | 4 | edgenode-data  | /var (ext4): /var/lib/edgenode; grows to fill the disk      |
//!
//! rpi-arm64: the firmware's tryboot A/B switches whole FAT boot partitions, so each
//! slot has its own (`autoboot.txt` numbers them 2 and 3):
//!
//! | # | label              | what                                                    |
//! |---|--------------------|---------------------------------------------------------|
//! | 1 | edgenode-autoboot  | FAT `RASPIFIRM`: autoboot.txt, slot states, edgenode.toml; /boot/firmware |
//! | 2 | edgenode-boot-a    | FAT: slot A's firmware, kernel, initrd, dtbs, config.txt, cmdline.txt |
//! | 3 | edgenode-boot-b    | FAT, empty until an update writes it with root B        |
//! | 4 | edgenode-root-a    | root file system of slot A                              |
//! | 5 | edgenode-root-b    | root file system of slot B                              |
//! | 6 | edgenode-data      | /var, as on x86_64                                      |
//!
//! Updates (see `update`): RAUC writes the slot not booted; the root slots are half as
//! large again as the first build's file system, so later releases fit. On x86_64 the
//! ESP holds one kernel directory and one loader entry per slot,
//! `loader/entries/edgenode-<generation>-<slot>[+<tries>].conf`; systemd-boot boots
//! the highest generation that has tries left (`default edgenode-*`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Debian release the image is made from; the same as the build machine's, so
/// binaries built here link against the same glibc.
pub const SUITE: &str = "bookworm";
/// Timestamps in the image when SOURCE_DATE_EPOCH is not set (2025-01-01T00:00:00Z).
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_735_689_600;
const BOOT_PARTITION_MIB: u64 = 256;
const SECTOR_BYTES: u64 = 512;
const MIB: u64 = 1024 * 1024;
const DISK_GUID: &str = "6E6F6465-0000-4000-8000-000000000000";
const BOOT_UUID: &str = "6E6F6465-0001-4000-8000-000000000001";
const ROOT_A_UUID: &str = "6E6F6465-0002-4000-8000-000000000002";
const ROOT_B_UUID: &str = "6E6F6465-0003-4000-8000-000000000003";
const DATA_UUID: &str = "6E6F6465-0004-4000-8000-000000000004";
/// rpi-arm64: the autoboot partition and the slots' boot partitions.
const PI_AUTOBOOT_UUID: &str = "6E6F6465-0005-4000-8000-000000000005";
const PI_BOOT_A_UUID: &str = "6E6F6465-0006-4000-8000-000000000006";
const PI_BOOT_B_UUID: &str = "6E6F6465-0007-4000-8000-000000000007";
/// Holds two small text files and the provisioning file; FAT32's smallest comfortable size.
const PI_AUTOBOOT_PARTITION_MIB: u64 = 64;
/// autoboot.txt's numbers for the slots' boot partitions (their places in the GPT).
pub const PI_BOOT_PARTITION_A: u32 = 2;
pub const PI_BOOT_PARTITION_B: u32 = 3;
/// A Pi slot's boot partition; a bundle's boot image must fit it.
pub const PI_BOOT_SLOT_BYTES: u64 = BOOT_PARTITION_MIB * MIB;
/// What rauc-boot-pi keeps beside autoboot.txt: each slot's state for `rauc status`.
pub const PI_SLOT_STATES_FILE: &str = "edgenode-slots.txt";
/// A new image: slot A good, slot B empty.
pub const PI_SLOT_STATES_NEW: &str = "A good\nB bad\n";
/// ext4 file system UUIDs (not partition UUIDs), fixed for reproducible builds.
const ROOT_FS_UUID: &str = "6e6f6465-0102-4000-8000-000000000002";
const DATA_FS_UUID: &str = "6e6f6465-0104-4000-8000-000000000004";
const HASH_SEED: &str = "6e6f6465-0999-4000-8000-000000000999";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "rpi-arm64")]
    RpiArm64,
}

impl Target {
    fn debian_architecture(self) -> &'static str {
        match self {
            Target::X86_64 => "amd64",
            Target::RpiArm64 => "arm64",
        }
    }

    fn rust_target(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64-unknown-linux-gnu",
            Target::RpiArm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// e_machine in the ELF header of the target's programs.
    fn elf_machine(self) -> u16 {
        match self {
            Target::X86_64 => 0x3e,
            Target::RpiArm64 => 0xb7,
        }
    }

    fn packages(self) -> &'static [&'static str] {
        const COMMON: &[&str] = &[
            "systemd",
            "systemd-sysv",
            "systemd-timesyncd",
            "systemd-resolved",
            "udev",
            "dbus",
            "kmod",
            "iproute2",
            "initramfs-tools",
            "cloud-guest-utils",
            "fdisk",
            "e2fsprogs",
            "wpasupplicant",
            "openssh-server",
            // A/B updates: `rauc install` talks to rauc.service over D-Bus.
            "rauc",
            "rauc-service",
        ];
        match self {
            Target::X86_64 => {
                // systemd-boot: systemd-bless-boot and its generator (boot counting).
                const X86: &[&str] = &["linux-image-amd64", "systemd-boot-efi", "systemd-boot"];
                // Leaked once per build: a static list is what the callers want.
                Box::leak([COMMON, X86].concat().into_boxed_slice())
            }
            Target::RpiArm64 => {
                const PI: &[&str] = &["linux-image-arm64", "raspi-firmware", "firmware-brcm80211"];
                Box::leak([COMMON, PI].concat().into_boxed_slice())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub target: Target,
    pub out: PathBuf,
    pub provision: Option<PathBuf>,
    pub mirror: String,
    pub binaries: Option<PathBuf>,
    pub work_dir: PathBuf,
    /// Keeps downloaded .deb files between builds (same packages, no download).
    pub deb_cache: Option<PathBuf>,
    /// Update keys; the image's RAUC keyring is DIR/ca.cert.pem (`update::signing_keys`).
    pub keys: PathBuf,
    /// Written to /usr/lib/edgenode/version; the boot entries' titles show it.
    pub version: String,
}

/// Progress: one line per phase with the time since the build started.
struct Phases {
    started: Instant,
    current: usize,
    total: usize,
}

impl Phases {
    fn begin(&mut self, what: &str) {
        self.current += 1;
        eprintln!("[{}/{}] {what} ({:.0} s)", self.current, self.total, self.started.elapsed().as_secs_f64());
    }
}

pub fn build(options: &BuildOptions) -> Result<()> {
    let mut phases = Phases { started: Instant::now(), current: 0, total: 7 };
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_SOURCE_DATE_EPOCH);
    let provisioning = match &options.provision {
        Some(path) => {
            let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            crate::provisioning::Provisioning::parse(&text)
                .with_context(|| format!("{} is refused", path.display()))?;
            Some(text)
        }
        None => None,
    };
    // Checked before minutes of mmdebstrap, not after.
    ensure!(
        !options.version.is_empty() && !options.version.contains(char::is_whitespace),
        "version {:?} must not be empty or hold spaces",
        options.version
    );
    let keys = crate::update::signing_keys(&options.keys)?;
    let work = &options.work_dir;
    if work.exists() {
        fs::remove_dir_all(work).with_context(|| format!("cannot clear the work dir {}", work.display()))?;
    }
    fs::create_dir_all(work)?;
    let rootfs = work.join("rootfs");

    phases.begin(&format!("edgenode binaries for {}", options.target.rust_target()));
    let binaries = match &options.binaries {
        Some(dir) => dir.clone(),
        None => build_binaries(options.target)?,
    };
    for binary in ["edgenode", "edgenode-firstboot"] {
        let path = binaries.join(binary);
        ensure!(path.is_file(), "{} is missing in {}", binary, binaries.display());
        let machine = elf_machine(&path)?;
        ensure!(
            machine == options.target.elf_machine(),
            "{} is not a {} program (ELF machine {machine:#x})",
            path.display(),
            options.target.rust_target()
        );
    }

    phases.begin(&format!("Debian {SUITE} root file system with mmdebstrap ({})", options.mirror));
    check_foreign_architecture(options.target)?;
    mmdebstrap(options, &rootfs, source_date_epoch)?;

    phases.begin("edgenode, systemd units and defaults into the root file system");
    customize(options.target, &rootfs, &binaries)?;
    install_updates(options, &rootfs, &keys)?;

    phases.begin("boot partition");
    let boot_tree = work.join("boot");
    fs::create_dir_all(&boot_tree)?;
    populate_boot(options.target, &rootfs, &boot_tree, &options.version)?;
    let boot_image = work.join("boot.img");
    // rpi-arm64: boot.img is slot A's boot partition (and what a bundle carries); the
    // provisioning file goes on the autoboot partition, which every slot mounts.
    let (pi_autoboot_image, pi_empty_boot_image) = (work.join("autoboot.img"), work.join("boot-empty.img"));
    match options.target {
        Target::X86_64 => {
            if let Some(text) = &provisioning {
                fs::write(boot_tree.join(crate::provisioning::FILE_NAME), text)?;
            }
            make_vfat(options.target, &boot_tree, &boot_image, source_date_epoch)?;
        }
        Target::RpiArm64 => {
            make_vfat(options.target, &boot_tree, &boot_image, source_date_epoch)?;
            make_pi_boot_partitions(work, provisioning.as_deref(), source_date_epoch)?;
        }
    }

    phases.begin("root and data file systems (ext4, no loop devices)");
    // /var lives on the data partition: move its content there.
    let var_tree = work.join("var");
    fs::rename(rootfs.join("var"), &var_tree)?;
    fs::create_dir(rootfs.join("var"))?;
    // The image is up to date: without these, units with ConditionNeedsUpdate=
    // (ldconfig, hwdb) would try to write the read-only /etc on first boot.
    let updated = format!(
        "# Written by image-builder like systemd-update-done.\nTIMESTAMP_NSEC={}\n",
        u128::from(source_date_epoch) * 1_000_000_000
    );
    fs::write(rootfs.join("etc/.updated"), &updated)?;
    fs::write(var_tree.join(".updated"), &updated)?;
    touch_tree(&rootfs, source_date_epoch)?;
    touch_tree(&var_tree, source_date_epoch)?;
    let root_bytes = round_up_mib(tree_bytes(&rootfs)? * 5 / 4 + 64 * MIB);
    // Room for releases larger than this one: a bundle's file system must fit the slot.
    let slot_bytes = round_up_mib(root_bytes * 3 / 2);
    let data_bytes = round_up_mib(tree_bytes(&var_tree)? * 5 / 4 + 128 * MIB);
    let root_image = work.join("root.img");
    let data_image = work.join("data.img");
    make_ext4(&rootfs, &root_image, root_bytes, "edgenode-root", ROOT_FS_UUID, source_date_epoch)?;
    make_ext4(&var_tree, &data_image, data_bytes, "edgenode-data", DATA_FS_UUID, source_date_epoch)?;

    phases.begin("disk image (GPT with sfdisk, file systems with dd)");
    let layout = layout(options.target, slot_bytes, data_bytes);
    let images: Vec<(&Path, &str)> = match options.target {
        // Root slot B stays empty until an update writes it.
        Target::X86_64 => {
            vec![(&boot_image, "edgenode-boot"), (&root_image, "edgenode-root-a"), (&data_image, "edgenode-data")]
        }
        Target::RpiArm64 => vec![
            (&pi_autoboot_image, "edgenode-autoboot"),
            (&boot_image, "edgenode-boot-a"),
            (&pi_empty_boot_image, "edgenode-boot-b"),
            (&root_image, "edgenode-root-a"),
            (&data_image, "edgenode-data"),
        ],
    };
    assemble(&options.out, &layout, &images)?;

    phases.begin("done");
    let size = fs::metadata(&options.out)?.len();
    eprintln!(
        "image: {} ({} MiB; boot {}, root slots 2 × {} MiB ({} MiB used), data {} MiB growing on first boot) in {:.0} s",
        options.out.display(),
        size / MIB,
        match options.target {
            Target::X86_64 => format!("{BOOT_PARTITION_MIB} MiB"),
            Target::RpiArm64 => format!("{PI_AUTOBOOT_PARTITION_MIB} MiB autoboot + 2 × {BOOT_PARTITION_MIB} MiB"),
        },
        slot_bytes / MIB,
        root_bytes / MIB,
        data_bytes / MIB,
        phases.started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("image-builder sits in the workspace").to_owned()
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

fn build_binaries(target: Target) -> Result<PathBuf> {
    let root = workspace_root();
    let cargo_args = [
        "build",
        "--release",
        "--locked",
        "-p",
        "edgenode",
        "-p",
        "image-builder",
        "--bin",
        "edgenode",
        "--bin",
        "edgenode-firstboot",
    ];
    // A native build shares target/release with everyone else's release builds.
    let native = target == Target::X86_64 && cfg!(target_arch = "x86_64");
    if native {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        run(cargo.current_dir(&root).args(cargo_args))?;
        return Ok(root.join("target").join("release"));
    }
    let toolchain = cross_toolchain(target, &root)?;
    eprintln!("{}", toolchain.describe(target));
    let mut cargo = Command::new(&toolchain.cargo);
    cargo.current_dir(&root).args(cargo_args).args(["--target", target.rust_target()]);
    cargo.env("RUSTC", &toolchain.rustc).env("CARGO_TARGET_DIR", &toolchain.target_dir);
    // A wrapper set up for the everyday toolchain would not know this rustc.
    cargo.env_remove("RUSTC_WRAPPER").env_remove("RUSTC_WORKSPACE_WRAPPER");
    if target == Target::RpiArm64 {
        // Debian's cross toolchain (gcc-aarch64-linux-gnu) links, and builds ring's C.
        cargo
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", CROSS_GCC_AARCH64)
            .env("CC_aarch64_unknown_linux_gnu", CROSS_GCC_AARCH64)
            .env("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar")
            // jemalloc (the node's allocator) fixes its page size when built and refuses
            // to start on a kernel with larger pages: 64 KiB covers the Pi 5's 16 KiB
            // kernel as well as the Pi 4's 4 KiB one.
            .env("JEMALLOC_SYS_WITH_LG_PAGE", "16");
    }
    let started = Instant::now();
    run(&mut cargo)?;
    eprintln!("cross build for {} took {:.0} s", target.rust_target(), started.elapsed().as_secs_f64());
    Ok(toolchain.target_dir.join(target.rust_target()).join("release"))
}

const CROSS_GCC_AARCH64: &str = "aarch64-linux-gnu-gcc";
/// Debian's packaged Rust (rustc-web, cargo-web; bookworm-security carries current
/// releases), whose std for another architecture comes as a multiarch package.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_CROSS_PACKAGES: &str = "dpkg --add-architecture arm64 && apt-get update && \
     apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu";

/// The compiler, cargo and target directory of a cross build.
#[derive(Debug)]
struct Toolchain {
    rustc: PathBuf,
    version: String,
    cargo: PathBuf,
    target_dir: PathBuf,
    std_dir: PathBuf,
}

impl Toolchain {
    fn describe(&self, target: Target) -> String {
        format!(
            "cross toolchain: {} ({}), std for {} from {}, cargo {}, linker {CROSS_GCC_AARCH64}, target dir {}",
            self.rustc.display(),
            self.version,
            target.rust_target(),
            self.std_dir.display(),
            self.cargo.display(),
            self.target_dir.display()
        )
    }
}

/// The everyday toolchain when it has the target's std (rustup target add), else
/// Debian's packaged Rust with the target's std from the multiarch package, built in
/// its own target dir (target/aarch64-debian) so it never invalidates the everyday
/// toolchain's artifacts. Fails naming the packages to install.
fn cross_toolchain(target: Target, root: &Path) -> Result<Toolchain> {
    let triple = target.rust_target();
    let wanted = env!("CARGO_PKG_RUST_VERSION");
    let everyday_rustc = std::env::var_os("RUSTC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("rustc"));
    let everyday_cargo = std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"));
    let mut candidates = vec![(everyday_rustc, everyday_cargo, root.join("target"))];
    if Path::new(DEBIAN_RUSTC).is_file() && Path::new(DEBIAN_CARGO).is_file() {
        candidates.push((DEBIAN_RUSTC.into(), DEBIAN_CARGO.into(), root.join("target").join("aarch64-debian")));
    }
    let mut tried = Vec::new();
    let mut found = None;
    for (rustc, cargo, target_dir) in candidates {
        let Some(version) = command_output(Command::new(&rustc).arg("--version")) else {
            tried.push(format!("{}: does not run", rustc.display()));
            continue;
        };
        let Some(std_dir) = command_output(Command::new(&rustc).args(["--print", "target-libdir", "--target", triple]))
            .map(PathBuf::from)
        else {
            tried.push(format!("{} ({version}): does not know {triple}", rustc.display()));
            continue;
        };
        if !has_std(&std_dir) {
            tried.push(format!("{} ({version}): no std for {triple} in {}", rustc.display(), std_dir.display()));
            continue;
        }
        if !version_at_least(&version, wanted) {
            tried.push(format!("{} ({version}): older than the workspace's rust-version {wanted}", rustc.display()));
            continue;
        }
        found = Some(Toolchain { rustc, version, cargo, target_dir, std_dir });
        break;
    }
    let Some(toolchain) = found else {
        bail!(
            "no Rust toolchain with the standard library for {triple} (rust >= {wanted}):\n  {}\n\
             install Debian's packaged Rust and the {} cross toolchain:\n  {DEBIAN_CROSS_PACKAGES}\n\
             (or `rustup target add {triple}` where rustup can download)",
            tried.join("\n  "),
            target.debian_architecture()
        );
    };
    ensure!(
        target != Target::RpiArm64 || command_output(Command::new(CROSS_GCC_AARCH64).arg("--version")).is_some(),
        "{CROSS_GCC_AARCH64} is missing: it links the {triple} binaries and compiles ring's C \
         (apt-get install gcc-aarch64-linux-gnu)"
    );
    Ok(toolchain)
}

/// e_machine of an ELF file (little-endian, as both targets are).
fn elf_machine(path: &Path) -> Result<u16> {
    use std::io::Read as _;
    let mut header = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(header.starts_with(b"\x7fELF"), "{} is not an ELF program", path.display());
    Ok(u16::from_le_bytes([header[18], header[19]]))
}

/// The first line a command prints, when it runs and succeeds.
fn command_output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (output.status.success() && !line.is_empty()).then_some(line)
}

fn has_std(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|entry| entry.ok()).any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
    })
}

/// Whether `rustc --version` output ("rustc 1.96.0 (…)") is at least `wanted` ("1.90").
fn version_at_least(version_output: &str, wanted: &str) -> bool {
    let parse = |text: &str| -> Option<Vec<u64>> {
        let number = text.split(['-', '+']).next()?;
        number.split('.').map(|part| part.parse().ok()).collect()
    };
    let Some(have) = version_output.split_whitespace().nth(1).and_then(parse) else { return false };
    let Some(want) = parse(wanted) else { return true };
    let pad = |mut v: Vec<u64>| {
        v.resize(3, 0);
        v
    };
    pad(have) >= pad(want)
}

/// Package scripts of a foreign architecture run under qemu-user through binfmt_misc.
fn check_foreign_architecture(target: Target) -> Result<()> {
    let native = match target {
        Target::X86_64 => cfg!(target_arch = "x86_64"),
        Target::RpiArm64 => cfg!(target_arch = "aarch64"),
    };
    if native {
        return Ok(());
    }
    let name = match target {
        Target::X86_64 => "qemu-x86_64",
        Target::RpiArm64 => "qemu-aarch64",
    };
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(name);
    let enabled = fs::read_to_string(&entry).is_ok_and(|text| text.lines().next() == Some("enabled"));
    ensure!(
        enabled,
        "{} is not enabled: mmdebstrap runs {} package scripts under qemu-user. \
         apt-get install qemu-user-static binfmt-support; if /proc/sys/fs/binfmt_misc is empty, \
         mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; then update-binfmts --enable {name}",
        entry.display(),
        target.debian_architecture()
    );
    eprintln!("{} package scripts run under qemu-user ({} enabled)", target.debian_architecture(), entry.display());
    Ok(())
}

fn mmdebstrap(options: &BuildOptions, rootfs: &Path, source_date_epoch: u64) -> Result<()> {
    let components = match options.target {
        Target::X86_64 => "main",
        Target::RpiArm64 => "main,non-free-firmware",
    };
    let mut command = Command::new("mmdebstrap");
    command
        .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        .arg("--variant=minbase")
        .arg(format!("--architectures={}", options.target.debian_architecture()))
        .arg(format!("--components={components}"))
        .arg(format!("--include={}", options.target.packages().join(",")))
        // Lean root: no docs, man pages or translations.
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--aptopt=Acquire::Retries \"3\"",
            // A Pi firmware hook wants /boot/firmware to exist while the kernel installs.
            "--setup-hook=mkdir -p \"$1/boot/firmware\"",
        ]);
    if options.target == Target::RpiArm64 {
        let config = write_pi_initramfs_config(&options.work_dir)?;
        command.arg(DEFER_UPDATE_INITRAMFS).args([
            format!("--customize-hook=sync-in {} /etc/initramfs-tools", config.display()),
            ONE_INITRAMFS.to_owned(),
        ]);
    }
    if let Some(cache) = &options.deb_cache {
        let cache =
            fs::canonicalize(cache).or_else(|_| fs::create_dir_all(cache).and_then(|()| fs::canonicalize(cache)))?;
        let cache = cache.display();
        // mmdebstrap's documented cache recipe: packages in before download, out before cleanup.
        command
            .arg("--skip=essential/unlink")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
            .arg(format!("--setup-hook=sync-in {cache} /var/cache/apt/archives/"))
            .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {cache}"));
    }
    // After the cache hook: drop apt's package lists and caches from the image.
    command
        .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/*.bin \"$1\"/var/lib/apt/lists/*_Packages")
        .arg(SUITE)
        .arg(rootfs)
        .arg(&options.mirror);
    run(&mut command)
}

// rpi-arm64: one initramfs, made once. Package scripts of a foreign architecture run
// under qemu-user, where every process start is slow: with Debian's MODULES=most (about a
// thousand modules, several processes each) one update-initramfs took 20–25 minutes, and
// installing the packages ran it twice (the kernel's postinst hook creates it, then
// initramfs-tools' trigger, activated by udev, kmod, e2fsprogs and others, updates it).
// So update-initramfs is diverted to a stub while the packages install, and put back by
// a customize hook that makes exactly one initramfs per kernel, with the short driver
// list of PI_INITRAMFS_HOOK (MODULES=list). raspi-firmware's post-update hook runs then,
// once, and fills /boot/firmware (device trees, kernel, initrd) as it would have.

/// Essential hook: before initramfs-tools is unpacked, its update-initramfs is diverted
/// aside and a stub that only says so takes its place.
const DEFER_UPDATE_INITRAMFS: &str = "--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename \
     --divert /usr/sbin/update-initramfs.edgenode-deferred --add /usr/sbin/update-initramfs && \
     printf '#!/bin/sh\\necho \"update-initramfs $*: deferred by image-builder (one initramfs once the packages are in)\" >&2\\n' \
     > \"$1/usr/sbin/update-initramfs\" && chmod 755 \"$1/usr/sbin/update-initramfs\"";

/// Customize hook: the real update-initramfs back, then one initramfs per kernel.
const ONE_INITRAMFS: &str = "--customize-hook=rm -f \"$1/usr/sbin/update-initramfs\" && \
     chroot \"$1\" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs && \
     for version in $(ls \"$1/lib/modules\"); do started=$(date +%s); \
     chroot \"$1\" update-initramfs -c -k \"$version\" || exit 1; \
     echo \"I: initramfs for $version made in $(( $(date +%s) - started )) s\"; done";

/// /etc/initramfs-tools/conf.d/edgenode: only the modules the hook below names.
const PI_INITRAMFS_CONF: &str = "# Written by image-builder (rpi-arm64): the initramfs holds the drivers that\n\
     # hooks/edgenode names, not Debian's MODULES=most (about a thousand modules, 20+\n\
     # minutes to pack under qemu-user when the image is built on another architecture).\n\
     MODULES=list\n";

/// /etc/initramfs-tools/hooks/edgenode: what finds and mounts the root file system on a
/// Raspberry Pi 4 (SD card, USB mass storage) and on qemu's virt board (virtio). What
/// Debian's arm64 kernel builds in is not listed: mmc_block, the Pi's PCIe (pcie-brcmstb),
/// pinctrl, GPIO expander, firmware mailbox, clocks and power domains, DMA, virtio core.
const PI_INITRAMFS_HOOK: &str = r#"#!/bin/sh
# Written by image-builder (rpi-arm64), with conf.d/edgenode (MODULES=list).
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
# SD/eMMC host controllers (Pi 4: sdhci-iproc on emmc2, bcm2835 sdhost) and the
# regulators the card's supplies hang on (Pi 4: gpio-regulator for 1.8 V signalling).
copy_modules_dir kernel/drivers/mmc
copy_modules_dir kernel/drivers/regulator
# USB boot: host controllers (Pi 4: the VL805 xHCI behind PCIe, whose firmware is
# loaded through reset-raspberrypi; dwc2 on the USB-C port), mass storage, UAS, disks.
copy_modules_dir kernel/drivers/usb/host
copy_modules_dir kernel/drivers/usb/dwc2
copy_modules_dir kernel/drivers/usb/storage
copy_modules_dir kernel/drivers/reset
manual_add_modules sd_mod uas usbhid hid-generic nvme
# qemu -M virt: virtio over PCI and MMIO, disks.
manual_add_modules virtio_pci virtio_mmio virtio_blk virtio_scsi
# File systems: root slots and data (ext4), RASPIFIRM (vfat).
manual_add_modules ext4 crc32c_generic vfat nls_cp437 nls_ascii nls_iso8859-1
"#;

/// Writes conf.d/edgenode and hooks/edgenode under WORK/initramfs-tools, for sync-in.
fn write_pi_initramfs_config(work: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = work.join("initramfs-tools");
    fs::create_dir_all(dir.join("conf.d"))?;
    fs::create_dir_all(dir.join("hooks"))?;
    fs::write(dir.join("conf.d/edgenode"), PI_INITRAMFS_CONF)?;
    let hook = dir.join("hooks/edgenode");
    fs::write(&hook, PI_INITRAMFS_HOOK)?;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))?;
    for sub in ["", "conf.d", "hooks"] {
        fs::set_permissions(dir.join(sub), fs::Permissions::from_mode(0o755))?;
    }
    fs::set_permissions(dir.join("conf.d/edgenode"), fs::Permissions::from_mode(0o644))?;
    Ok(dir)
}

/// Installs the node, our units and defaults, and prepares a read-only root.
fn customize(target: Target, rootfs: &Path, binaries: &Path) -> Result<()> {
    let systemd_dir = workspace_root().join("systemd");
    let install = |from: &Path, to: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let to = rootfs.join(to.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("absolute path"))?;
        fs::copy(from, &to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let write = |to: &str, text: &str| -> Result<()> {
        let to = rootfs.join(to.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("absolute path"))?;
        fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))
    };
    let symlink = |target: &str, link: &str| -> Result<()> {
        let link = rootfs.join(link.trim_start_matches('/'));
        fs::create_dir_all(link.parent().expect("absolute path"))?;
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).with_context(|| format!("cannot link {}", link.display()))
    };
    install(&binaries.join("edgenode"), "/usr/bin/edgenode", 0o755)?;
    install(&binaries.join("edgenode-firstboot"), "/usr/libexec/edgenode/edgenode-firstboot", 0o755)?;
    for script in ["grow-data", "console-issue", "health-check", "rauc-boot", "rauc-boot-pi"] {
        install(&systemd_dir.join("libexec").join(script), &format!("/usr/libexec/edgenode/{script}"), 0o755)?;
    }
    copy_tree(&systemd_dir.join("system"), &rootfs.join("usr/lib/systemd/system"))?;
    if target == Target::RpiArm64 {
        // The tryboot A/B units (rauc-boot-pi) and the hardware watchdog, Pi only.
        copy_tree(&systemd_dir.join("rpi-arm64/system"), &rootfs.join("usr/lib/systemd/system"))?;
        copy_tree(&systemd_dir.join("rpi-arm64/system.conf.d"), &rootfs.join("usr/lib/systemd/system.conf.d"))?;
    }
    for (dir, to) in [
        ("journald.conf.d", "usr/lib/systemd/journald.conf.d"),
        ("timesyncd.conf.d", "usr/lib/systemd/timesyncd.conf.d"),
        ("resolved.conf.d", "usr/lib/systemd/resolved.conf.d"),
        ("network", "usr/lib/systemd/network"),
        ("sysusers.d", "usr/lib/sysusers.d"),
        ("tmpfiles.d", "usr/lib/tmpfiles.d"),
        ("sysctl.d", "usr/lib/sysctl.d"),
    ] {
        copy_tree(&systemd_dir.join(dir), &rootfs.join(to))?;
    }
    let workspace = workspace_root();
    for document in ["README.md", "hardware.md", "provisioning/provisioning.md"] {
        let name = Path::new(document).file_name().expect("file").to_string_lossy().into_owned();
        install(&workspace.join(document), &format!("/usr/share/doc/edgenode/{name}"), 0o644)?;
    }

    // /etc is read-only on the box: whatever first boot writes lives on /var.
    symlink("/var/lib/edgenode-config/node.toml", "/etc/edgenode/node.toml")?;
    symlink("/var/lib/edgenode-config/wpa_supplicant-wlan0.conf", "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")?;
    symlink("/run/edgenode/console.issue", "/etc/issue.d/50-edgenode.issue")?;
    symlink("../run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf")?;
    write("/etc/hostname", "edgenode\n")?;
    write("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 edgenode\n::1 localhost ip6-localhost ip6-loopback\n")?;
    // Empty: systemd makes a transient machine id at each boot on a read-only root,
    // and it is not a "first boot" (that would try to write presets to /etc).
    write("/etc/machine-id", "")?;
    let _ = fs::remove_file(rootfs.join("var/lib/dbus/machine-id"));
    let boot_mount = "/boot/firmware";
    // rpi-arm64: the autoboot partition (autoboot.txt, edgenode.toml), which both slots
    // share; a slot's own boot partition is written only by RAUC and rauc-boot-pi.
    let boot_partition = match target {
        Target::X86_64 => "edgenode-boot",
        Target::RpiArm64 => "edgenode-autoboot",
    };
    write(
        "/etc/fstab",
        &format!(
            "# Root is mounted read-only from the kernel command line (slot A or B).\n\
             PARTLABEL=edgenode-data  /var  ext4  defaults,noatime,commit=60  0  2\n\
             PARTLABEL={boot_partition}  {boot_mount}  vfat  umask=0077,noatime,flush  0  2\n\
             tmpfs  /tmp  tmpfs  mode=1777,nosuid,nodev,size=25%  0  0\n"
        ),
    )?;
    // SSH: installed but off unless provisioning enabled it with keys; keys only.
    write(
        "/etc/ssh/sshd_config.d/edgenode.conf",
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         AuthorizedKeysFile /var/lib/edgenode-config/authorized_keys\n\
         HostKey /var/lib/edgenode-config/ssh/ssh_host_ed25519_key\n",
    )?;
    write(
        "/etc/systemd/system/ssh.service.d/edgenode.conf",
        "[Unit]\nConditionPathExists=/var/lib/edgenode-config/ssh-enabled\n\n[Service]\n\
         ExecStartPre=\nExecStartPre=/bin/sh -c 'mkdir -p /var/lib/edgenode-config/ssh && test -e /var/lib/edgenode-config/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N \"\" -f /var/lib/edgenode-config/ssh/ssh_host_ed25519_key'\n\
         ExecStartPre=/usr/sbin/sshd -t\n",
    )?;
    // Wi-Fi starts only when the device appears and first boot wrote its config.
    write(
        "/etc/systemd/system/wpa_supplicant@wlan0.service.d/edgenode.conf",
        "[Unit]\nConditionPathExists=/var/lib/edgenode-config/wpa_supplicant-wlan0.conf\n",
    )?;
    symlink(
        "/lib/systemd/system/wpa_supplicant@.service",
        "/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service",
    )?;

    // Host keys made at package install would be shared by every box: SSH makes its
    // own on the box when provisioning enables it.
    for entry in fs::read_dir(rootfs.join("etc/ssh"))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("ssh_host_")) {
            fs::remove_file(&path)?;
        }
    }
    write(
        "/etc/systemd/system/systemd-networkd-wait-online.service.d/edgenode.conf",
        "# One link up is enough; do not hold the node back for long without a network.\n\
         [Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n",
    )?;
    run(Command::new("systemd-sysusers").arg(format!("--root={}", rootfs.display())))?;
    // What tmpfiles would make at boot, made now: /etc cannot be written on the box.
    let tmpfiles = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", rootfs.display()))
        .args([
            "--create",
            "--exclude-prefix=/dev",
            "--exclude-prefix=/proc",
            "--exclude-prefix=/sys",
            "--exclude-prefix=/run",
            "--exclude-prefix=/tmp",
        ])
        .status()?;
    if !tmpfiles.success() {
        eprintln!("warning: systemd-tmpfiles --create in the image reported problems ({tmpfiles})");
    }
    let mut enable = Command::new("systemctl");
    enable.arg(format!("--root={}", rootfs.display())).arg("enable").args([
        "edgenode.service",
        "edgenode-firstboot.service",
        "edgenode-grow-data.service",
        "edgenode-console.timer",
        "edgenode-health.service",
        "edgenode-reboot.path",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "systemd-timesyncd.service",
    ]);
    run(&mut enable)?;
    // Off by default; provisioning turns it on through the condition above.
    run(Command::new("systemctl").arg(format!("--root={}", rootfs.display())).args(["enable", "ssh.service"]))?;
    if target == Target::RpiArm64 {
        run(Command::new("systemctl").arg(format!("--root={}", rootfs.display())).args([
            "enable",
            "edgenode-tryboot-check.service",
            "edgenode-tryboot-bless.service",
        ]))?;
    }
    if target == Target::X86_64 {
        run(Command::new("systemctl")
            .arg(format!("--root={}", rootfs.display()))
            .args(["enable", "serial-getty@ttyS0.service"]))?;
    }
    Ok(())
}

/// RAUC's configuration and keyring, the slot's kernel options and version (which
/// rauc-boot reads from the slot an update wrote), and boot counting's ESP location.
fn install_updates(options: &BuildOptions, rootfs: &Path, keys: &crate::update::SigningKeys) -> Result<()> {
    let write = |to: &str, text: &str| -> Result<()> {
        let to = rootfs.join(to.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("absolute path"))?;
        fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))
    };
    write("/etc/rauc/system.conf", &crate::update::system_conf(options.target))?;
    let keyring = fs::read_to_string(&keys.ca_cert)
        .with_context(|| format!("cannot read the update CA {}", keys.ca_cert.display()))?;
    ensure!(keyring.contains("-----BEGIN CERTIFICATE-----"), "{} is not a PEM certificate", keys.ca_cert.display());
    write(crate::update::KEYRING_PATH, &keyring)?;
    write("/usr/lib/edgenode/kernel-options", &(kernel_options(options.target) + "\n"))?;
    write("/usr/lib/edgenode/version", &format!("{}\n", options.version))?;
    write(
        "/usr/lib/tmpfiles.d/edgenode-rauc.conf",
        "# RAUC's slot status and data (data-directory in /etc/rauc/system.conf).\nd /var/lib/rauc 0700 root root -\n",
    )?;
    fs::create_dir_all(rootfs.join("var/lib/rauc"))?;
    if options.target == Target::X86_64 {
        // systemd looks for the ESP at /efi, /boot or /boot/efi; the image mounts it
        // at /boot/firmware, like the Pi's boot partition.
        for unit in ["systemd-bless-boot.service", "systemd-boot-system-token.service"] {
            write(
                &format!("/etc/systemd/system/{unit}.d/edgenode.conf"),
                "[Service]\nEnvironment=SYSTEMD_ESP_PATH=/boot/firmware\n",
            )?;
        }
    }
    Ok(())
}

fn kernel_and_initrd(rootfs: &Path) -> Result<(PathBuf, PathBuf)> {
    let boot = rootfs.join("boot");
    let mut kernels: Vec<PathBuf> = fs::read_dir(&boot)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    kernels.sort();
    let Some(kernel) = kernels.pop() else { bail!("no kernel in {}", boot.display()) };
    let version = kernel.file_name().expect("file").to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
    let initrd = boot.join(format!("initrd.img-{version}"));
    ensure!(initrd.is_file(), "no initrd for kernel {version}");
    Ok((kernel, initrd))
}

fn kernel_command_line(target: Target) -> String {
    format!("root=PARTUUID={} {} rauc.slot=A", ROOT_A_UUID.to_lowercase(), kernel_options(target))
}

/// The kernel options besides the root slot. The image keeps them in
/// /usr/lib/edgenode/kernel-options: an update's boot entry takes them from the slot it
/// boots, so each release decides its own.
fn kernel_options(target: Target) -> String {
    let console = match target {
        Target::X86_64 => "console=tty0 console=ttyS0,115200",
        // Debian's kernel with the upstream device tree names the Pi 3/4 serial
        // console on GPIO 14/15 (the mini UART) ttyS1, as raspi-firmware's own
        // cmdline.txt does; `serial0` is a Raspberry Pi OS alias it does not know.
        Target::RpiArm64 => "console=tty1 console=ttyS1,115200",
    };
    let options = format!("ro rootwait {console} systemd.show_status=auto systemd.gpt_auto=0");
    match target {
        Target::X86_64 => options,
        // A panic resets the board after 10 s, which ends a trial boot (tryboot is
        // one-shot: the reset boots the old slot).
        Target::RpiArm64 => options + " panic=10",
    }
}

/// autoboot.txt on the Pi's first partition (the firmware's tryboot A/B): `[all]` names
/// the boot partition that boots, `[tryboot]` the one a `reboot "0 tryboot"` boots once;
/// the same one when nothing is on trial. rauc-boot-pi writes the same text.
pub fn pi_autoboot_txt(boot_partition: u32, tryboot_partition: u32) -> String {
    format!("[all]\ntryboot_a_b=1\nboot_partition={boot_partition}\n[tryboot]\nboot_partition={tryboot_partition}\n")
}

/// A Pi slot's config.txt: the firmware (start4.elf) reads it from the slot's own boot
/// partition (tryboot_a_b=1: never tryboot.txt).
const PI_CONFIG_TXT: &str =
    "# Edgenode on Raspberry Pi 4 (Debian's kernel and raspi-firmware); one per slot's boot partition\n\
     arm_64bit=1\nenable_uart=1\nupstream_kernel=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n\
     disable_overscan=1\n[pi4]\nmax_framebuffers=2\n";

fn populate_boot(target: Target, rootfs: &Path, boot_tree: &Path, version: &str) -> Result<()> {
    let (kernel, initrd) = kernel_and_initrd(rootfs)?;
    match target {
        Target::X86_64 => {
            fs::create_dir_all(boot_tree.join("EFI/BOOT"))?;
            fs::create_dir_all(boot_tree.join("loader/entries"))?;
            fs::create_dir_all(boot_tree.join("edgenode-a"))?;
            fs::copy(
                rootfs.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
                boot_tree.join("EFI/BOOT/BOOTX64.EFI"),
            )?;
            fs::copy(&kernel, boot_tree.join("edgenode-a/vmlinuz"))?;
            fs::copy(&initrd, boot_tree.join("edgenode-a/initrd.img"))?;
            // The highest generation with tries left boots (rauc-boot writes the entries).
            fs::write(boot_tree.join("loader/loader.conf"), "default edgenode-*\ntimeout 0\n")?;
            fs::write(
                boot_tree.join("loader/entries/edgenode-1-a.conf"),
                format!(
                    "title Edgenode {version} (slot A)\nversion {version}\nlinux /edgenode-a/vmlinuz\n\
                     initrd /edgenode-a/initrd.img\noptions {}\n",
                    kernel_command_line(target)
                ),
            )?;
        }
        Target::RpiArm64 => {
            // raspi-firmware's hooks filled /boot/firmware during the kernel install.
            copy_tree(&rootfs.join("boot/firmware"), boot_tree)?;
            // Its versioned copies of the kernel and initrd: config.txt boots the
            // unversioned ones below, so these would only take room twice.
            for entry in fs::read_dir(boot_tree)? {
                let path = entry?.path();
                let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
                if name.starts_with("vmlinuz-") || name.starts_with("initrd.img-") {
                    fs::remove_file(&path)?;
                }
            }
            fs::copy(&kernel, boot_tree.join("vmlinuz"))?;
            fs::copy(&initrd, boot_tree.join("initrd.img"))?;
            fs::write(boot_tree.join("cmdline.txt"), kernel_command_line(target) + "\n")?;
            fs::write(boot_tree.join("config.txt"), PI_CONFIG_TXT)?;
            // What the firmware looks for to call a FAT partition bootable (Pi 4).
            ensure!(boot_tree.join("start4.elf").is_file(), "raspi-firmware put no start4.elf in /boot/firmware");
        }
    }
    Ok(())
}

/// A FAT file system of the image: label, volume id (fixed, for reproducible builds), size.
#[derive(Debug, Clone, Copy)]
struct Fat {
    label: &'static str,
    volume_id: &'static str,
    mib: u64,
}

const X86_ESP_FAT: Fat = Fat { label: "EDGEBOOT", volume_id: "6e6f6465", mib: BOOT_PARTITION_MIB };
/// A slot's boot partition; the same image goes to either slot, so it names neither.
const PI_BOOT_FAT: Fat = Fat { label: "EDGEBOOT", volume_id: "6e6f6465", mib: BOOT_PARTITION_MIB };
/// RASPIFIRM, the name provisioning.md tells owners to put edgenode.toml on.
const PI_AUTOBOOT_FAT: Fat = Fat { label: "RASPIFIRM", volume_id: "6e6f6401", mib: PI_AUTOBOOT_PARTITION_MIB };

/// rpi-arm64: WORK/autoboot.img (autoboot.txt with nothing on trial, the slots' states,
/// the provisioning file) and WORK/boot-empty.img, slot B's boot partition until an
/// update writes it.
fn make_pi_boot_partitions(work: &Path, provisioning: Option<&str>, source_date_epoch: u64) -> Result<()> {
    let autoboot_tree = work.join("autoboot");
    fs::create_dir_all(&autoboot_tree)?;
    fs::write(autoboot_tree.join("autoboot.txt"), pi_autoboot_txt(PI_BOOT_PARTITION_A, PI_BOOT_PARTITION_A))?;
    fs::write(autoboot_tree.join(PI_SLOT_STATES_FILE), PI_SLOT_STATES_NEW)?;
    if let Some(text) = provisioning {
        fs::write(autoboot_tree.join(crate::provisioning::FILE_NAME), text)?;
    }
    make_vfat_sized(&autoboot_tree, &work.join("autoboot.img"), PI_AUTOBOOT_FAT, source_date_epoch)?;
    let empty_tree = work.join("boot-empty");
    fs::create_dir_all(&empty_tree)?;
    make_vfat_sized(&empty_tree, &work.join("boot-empty.img"), PI_BOOT_FAT, source_date_epoch)
}

/// The boot partition's file system (rpi-arm64: slot A's boot partition).
fn make_vfat(target: Target, tree: &Path, image: &Path, source_date_epoch: u64) -> Result<()> {
    let fat = match target {
        Target::X86_64 => X86_ESP_FAT,
        Target::RpiArm64 => PI_BOOT_FAT,
    };
    make_vfat_sized(tree, image, fat, source_date_epoch)
}

fn make_vfat_sized(tree: &Path, image: &Path, fat: Fat, source_date_epoch: u64) -> Result<()> {
    touch_tree(tree, source_date_epoch)?;
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", fat.label, "-i", fat.volume_id, "--invariant", "-C"])
        .arg(image)
        .arg((fat.mib * 1024).to_string()))?;
    let mut entries: Vec<PathBuf> =
        fs::read_dir(tree)?.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    entries.sort();
    if !entries.is_empty() {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
            .args(["-s", "-p", "-m", "-i"])
            .arg(image)
            .args(&entries)
            .arg("::"))?;
    }
    Ok(())
}

fn make_ext4(tree: &Path, image: &Path, bytes: u64, label: &str, uuid: &str, source_date_epoch: u64) -> Result<()> {
    let file = fs::File::create(image)?;
    file.set_len(bytes)?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        .env("E2FSPROGS_FAKE_TIME", source_date_epoch.to_string())
        .args(["-q", "-F", "-L", label, "-U", uuid, "-E"])
        .arg(format!("hash_seed={HASH_SEED},lazy_itable_init=0,root_owner=0:0"))
        .args(["-O", "^metadata_csum_seed", "-d"])
        .arg(tree)
        .arg(image))
}

/// Where each partition starts and how big it is, in bytes; the disk's total size.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    partitions: Vec<Partition>,
    total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Partition {
    name: &'static str,
    start_bytes: u64,
    size_bytes: u64,
    type_guid: &'static str,
    uuid: &'static str,
}

fn layout(target: Target, root_bytes: u64, data_bytes: u64) -> Layout {
    // ESP type on x86_64; the Pi firmware reads FAT partitions of either type.
    let esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    let basic_data = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
    let linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let mut start_bytes = MIB;
    let mut partitions = Vec::new();
    let table = match target {
        Target::X86_64 => vec![
            ("edgenode-boot", BOOT_PARTITION_MIB * MIB, esp, BOOT_UUID),
            ("edgenode-root-a", root_bytes, linux, ROOT_A_UUID),
            ("edgenode-root-b", root_bytes, linux, ROOT_B_UUID),
            ("edgenode-data", data_bytes, linux, DATA_UUID),
        ],
        // autoboot.txt names the boot partitions by number: 2 and 3 (PI_BOOT_PARTITION_*).
        Target::RpiArm64 => vec![
            ("edgenode-autoboot", PI_AUTOBOOT_PARTITION_MIB * MIB, esp, PI_AUTOBOOT_UUID),
            ("edgenode-boot-a", BOOT_PARTITION_MIB * MIB, basic_data, PI_BOOT_A_UUID),
            ("edgenode-boot-b", BOOT_PARTITION_MIB * MIB, basic_data, PI_BOOT_B_UUID),
            ("edgenode-root-a", root_bytes, linux, ROOT_A_UUID),
            ("edgenode-root-b", root_bytes, linux, ROOT_B_UUID),
            ("edgenode-data", data_bytes, linux, DATA_UUID),
        ],
    };
    for (name, size_bytes, type_guid, uuid) in table {
        partitions.push(Partition { name, start_bytes, size_bytes, type_guid, uuid });
        start_bytes += size_bytes;
    }
    // One MiB at the end for the backup GPT.
    Layout { partitions, total_bytes: start_bytes + MIB }
}

fn sfdisk_script(layout: &Layout) -> String {
    let mut script = format!("label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nsector-size: 512\n\n");
    for partition in &layout.partitions {
        let _ = writeln!(
            script,
            "start={}, size={}, type={}, uuid={}, name=\"{}\"",
            partition.start_bytes / SECTOR_BYTES,
            partition.size_bytes / SECTOR_BYTES,
            partition.type_guid,
            partition.uuid,
            partition.name
        );
    }
    script
}

/// The disk image: the GPT of LAYOUT, and each (file system image, partition name).
fn assemble(out: &Path, layout: &Layout, images: &[(&Path, &str)]) -> Result<()> {
    let _ = fs::remove_file(out);
    fs::File::create(out)?.set_len(layout.total_bytes)?;
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run sfdisk (apt-get install fdisk)")?;
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("piped"), sfdisk_script(layout).as_bytes())?;
    let status = sfdisk.wait()?;
    ensure!(status.success(), "sfdisk failed: {status}");
    for (image, name) in images {
        let partition =
            layout.partitions.iter().find(|partition| partition.name == *name).expect("a partition of the layout");
        let image_bytes = fs::metadata(image).with_context(|| format!("cannot read {}", image.display()))?.len();
        ensure!(
            image_bytes <= partition.size_bytes,
            "{} ({image_bytes} bytes) does not fit partition {name}",
            image.display()
        );
        run(Command::new("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", partition.start_bytes / MIB)))?;
    }
    Ok(())
}

fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

fn tree_bytes(tree: &Path) -> Result<u64> {
    let output = Command::new("du").args(["-s", "-B1", "--apparent-size"]).arg(tree).output()?;
    ensure!(output.status.success(), "du failed on {}", tree.display());
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().and_then(|bytes| bytes.parse().ok()).context("du printed no size")
}

/// Every file's times set to SOURCE_DATE_EPOCH, for reproducible file systems.
fn touch_tree(tree: &Path, source_date_epoch: u64) -> Result<()> {
    run(Command::new("find")
        .arg(tree)
        .args(["-newermt", &format!("@{source_date_epoch}"), "-exec", "touch", "--no-dereference", "-d"])
        .arg(format!("@{source_date_epoch}"))
        .args(["{}", "+"]))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    run(Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_mib_aligned_in_order_with_equal_root_slots() {
        let layout = layout(Target::X86_64, 885 * MIB, 137 * MIB);
        let names: Vec<&str> = layout.partitions.iter().map(|partition| partition.name).collect();
        assert_eq!(names, ["edgenode-boot", "edgenode-root-a", "edgenode-root-b", "edgenode-data"]);
        for pair in layout.partitions.windows(2) {
            assert_eq!(pair[0].start_bytes + pair[0].size_bytes, pair[1].start_bytes, "no gaps, no overlap");
        }
        assert!(layout.partitions.iter().all(|partition| partition.start_bytes % MIB == 0));
        assert_eq!(layout.partitions[1].size_bytes, layout.partitions[2].size_bytes);
        let data = layout.partitions.last().unwrap();
        assert_eq!(layout.total_bytes, data.start_bytes + data.size_bytes + MIB, "room for the backup GPT");
        let script = sfdisk_script(&layout);
        assert!(script.contains("start=2048, size=524288, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
    }

    #[test]
    fn pi_layout_has_an_autoboot_partition_and_a_boot_partition_per_slot() {
        let layout = layout(Target::RpiArm64, 885 * MIB, 137 * MIB);
        let names: Vec<&str> = layout.partitions.iter().map(|partition| partition.name).collect();
        assert_eq!(
            names,
            [
                "edgenode-autoboot",
                "edgenode-boot-a",
                "edgenode-boot-b",
                "edgenode-root-a",
                "edgenode-root-b",
                "edgenode-data"
            ]
        );
        // autoboot.txt's boot_partition numbers are places in this table, counted from 1.
        assert_eq!(layout.partitions[PI_BOOT_PARTITION_A as usize - 1].name, "edgenode-boot-a");
        assert_eq!(layout.partitions[PI_BOOT_PARTITION_B as usize - 1].name, "edgenode-boot-b");
        for pair in layout.partitions.windows(2) {
            assert_eq!(pair[0].start_bytes + pair[0].size_bytes, pair[1].start_bytes, "no gaps, no overlap");
        }
        assert!(layout.partitions.iter().all(|partition| partition.start_bytes % MIB == 0));
        assert_eq!(layout.partitions[1].size_bytes, layout.partitions[2].size_bytes, "equal boot slots");
        assert_eq!(layout.partitions[3].size_bytes, layout.partitions[4].size_bytes, "equal root slots");
        let uuids: std::collections::BTreeSet<&str> =
            layout.partitions.iter().map(|partition| partition.uuid).collect();
        assert_eq!(uuids.len(), 6, "every partition has its own UUID");
        let script = sfdisk_script(&layout);
        assert!(script.contains("start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{script}");
        assert!(script.contains("name=\"edgenode-boot-b\""));
        // x86_64 keeps its four partitions.
        assert_eq!(
            layout_names(Target::X86_64),
            ["edgenode-boot", "edgenode-root-a", "edgenode-root-b", "edgenode-data"]
        );
    }

    fn layout_names(target: Target) -> Vec<&'static str> {
        layout(target, 885 * MIB, 137 * MIB).partitions.iter().map(|partition| partition.name).collect()
    }

    #[test]
    fn pi_autoboot_txt_is_the_firmwares_tryboot_a_b_form() {
        assert_eq!(
            pi_autoboot_txt(PI_BOOT_PARTITION_A, PI_BOOT_PARTITION_B),
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
        );
        // A new image: nothing on trial.
        assert_eq!(
            pi_autoboot_txt(PI_BOOT_PARTITION_A, PI_BOOT_PARTITION_A),
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n"
        );
        assert!(pi_autoboot_txt(2, 2).len() <= 512, "the firmware reads at most 512 bytes of autoboot.txt");
        assert_eq!(PI_SLOT_STATES_NEW, "A good\nB bad\n");
        assert!(PI_CONFIG_TXT.lines().any(|line| line == "kernel=vmlinuz"));
        assert!(!PI_CONFIG_TXT.contains("tryboot"), "tryboot_a_b=1: the slot's own config.txt, no tryboot.txt");
    }

    /// A miniature rpi-arm64 disk made by the build's own steps (boot files from a
    /// stand-in root, FAT and ext4 images, the GPT, dd), read back as the firmware
    /// would find it: partition numbers, autoboot.txt, slot A's cmdline.txt.
    #[test]
    #[ignore = "system tier: needs dosfstools, mtools, fdisk, e2fsprogs (seconds, no root)"]
    fn pi_disk_holds_autoboot_and_slot_a_as_the_firmware_reads_them() {
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = fs::remove_dir_all(&self.0);
            }
        }
        let work = std::env::temp_dir().join(format!("image-builder-pi-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let _cleanup = Cleanup(work.clone());
        let epoch = DEFAULT_SOURCE_DATE_EPOCH;
        // What mmdebstrap and raspi-firmware leave in the root: kernel, initrd, firmware.
        let rootfs = work.join("rootfs");
        fs::create_dir_all(rootfs.join("boot/firmware")).unwrap();
        fs::write(rootfs.join("boot/vmlinuz-6.1.0-28-arm64"), "kernel").unwrap();
        fs::write(rootfs.join("boot/initrd.img-6.1.0-28-arm64"), "initrd").unwrap();
        for file in ["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "vmlinuz-6.1.0-28-arm64"] {
            fs::write(rootfs.join("boot/firmware").join(file), file).unwrap();
        }
        let boot_tree = work.join("boot");
        populate_boot(Target::RpiArm64, &rootfs, &boot_tree, "1.0.0").unwrap();
        make_vfat(Target::RpiArm64, &boot_tree, &work.join("boot.img"), epoch).unwrap();
        make_pi_boot_partitions(&work, Some("[identity]\nname = \"pi-box\"\n"), epoch).unwrap();
        for (name, label, uuid) in [("root", "edgenode-root", ROOT_FS_UUID), ("data", "edgenode-data", DATA_FS_UUID)] {
            let tree = work.join(format!("{name}-tree"));
            fs::create_dir_all(&tree).unwrap();
            fs::write(tree.join("marker"), name).unwrap();
            make_ext4(&tree, &work.join(format!("{name}.img")), 8 * MIB, label, uuid, epoch).unwrap();
        }
        let layout = layout(Target::RpiArm64, 16 * MIB, 8 * MIB);
        let disk = work.join("disk.img");
        let (autoboot, boot_a, boot_b, root, data) = (
            work.join("autoboot.img"),
            work.join("boot.img"),
            work.join("boot-empty.img"),
            work.join("root.img"),
            work.join("data.img"),
        );
        let images: Vec<(&Path, &str)> = vec![
            (&autoboot, "edgenode-autoboot"),
            (&boot_a, "edgenode-boot-a"),
            (&boot_b, "edgenode-boot-b"),
            (&root, "edgenode-root-a"),
            (&data, "edgenode-data"),
        ];
        assemble(&disk, &layout, &images).unwrap();

        // The GPT as the bootloader numbers it: "disk.imgN : start=…, uuid=…, name=…".
        let dump = Command::new("sfdisk").arg("--dump").arg(&disk).output().unwrap();
        let dump = String::from_utf8(dump.stdout).unwrap();
        let mut numbered: Vec<(u32, String, String, u64)> = dump
            .lines()
            .filter_map(|line| line.split_once(" : "))
            .map(|(device, fields)| {
                let digits = device.len() - device.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                let number: u32 = device[device.len() - digits..].parse().unwrap();
                let field = |key: &str| -> String {
                    fields
                        .split(',')
                        .find_map(|part| part.trim().strip_prefix(key))
                        .unwrap_or_default()
                        .trim()
                        .trim_matches('"')
                        .to_owned()
                };
                let start: u64 = field("start=").parse().unwrap();
                (number, field("name="), field("uuid="), start * SECTOR_BYTES)
            })
            .collect();
        numbered.sort();
        let names: Vec<(u32, &str)> = numbered.iter().map(|(number, name, _, _)| (*number, name.as_str())).collect();
        assert_eq!(
            names,
            [
                (1, "edgenode-autoboot"),
                (2, "edgenode-boot-a"),
                (3, "edgenode-boot-b"),
                (4, "edgenode-root-a"),
                (5, "edgenode-root-b"),
                (6, "edgenode-data")
            ],
            "{dump}"
        );
        let offset = |number: u32| numbered[number as usize - 1].3;
        let fat = |number: u32| format!("{}@@{}", disk.display(), offset(number));
        let mtools = |program: &str, args: &[&str]| -> String {
            let output = Command::new(program).env("MTOOLS_SKIP_CHECK", "1").args(args).output().unwrap();
            assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        assert_eq!(
            mtools("mtype", &["-i", &fat(1), "::autoboot.txt"]),
            pi_autoboot_txt(PI_BOOT_PARTITION_A, PI_BOOT_PARTITION_A)
        );
        assert_eq!(mtools("mtype", &["-i", &fat(1), &format!("::{PI_SLOT_STATES_FILE}")]), PI_SLOT_STATES_NEW);
        assert!(
            mtools("mtype", &["-i", &fat(1), "::edgenode.toml"]).contains("pi-box"),
            "provisioning on the autoboot partition"
        );
        assert!(mtools("mlabel", &["-s", "-i", &fat(1), "::"]).contains("RASPIFIRM"));
        // Slot A's boot partition names slot A's root by the GPT's own partition UUID.
        let cmdline = mtools("mtype", &["-i", &fat(2), "::cmdline.txt"]);
        let root_a_uuid = numbered[3].2.to_lowercase();
        assert!(cmdline.starts_with(&format!("root=PARTUUID={root_a_uuid} ro ")), "{cmdline}");
        assert!(cmdline.trim_end().ends_with(" rauc.slot=A"), "{cmdline}");
        let files = mtools("mdir", &["-b", "-i", &fat(2), "::"]);
        for file in ["start4.elf", "config.txt", "cmdline.txt", "vmlinuz", "initrd.img", "bcm2711-rpi-4-b.dtb"] {
            assert!(files.lines().any(|line| line.ends_with(&format!("/{file}"))), "{file} missing on boot-a: {files}");
        }
        assert!(!files.contains("vmlinuz-"), "versioned kernel copies are dropped: {files}");
        assert_eq!(mtools("mdir", &["-b", "-i", &fat(3), "::"]).trim(), "", "boot-b: empty FAT until an update");
    }

    #[test]
    fn kernel_boots_slot_a_read_only() {
        let command_line = kernel_command_line(Target::X86_64);
        assert!(command_line.starts_with("root=PARTUUID=6e6f6465-0002-4000-8000-000000000002 ro "));
        assert!(command_line.contains("console=ttyS0"));
    }

    #[test]
    fn pi_boots_slot_a_with_debians_serial_console() {
        let command_line = kernel_command_line(Target::RpiArm64);
        assert!(command_line.starts_with("root=PARTUUID=6e6f6465-0002-4000-8000-000000000002 ro "));
        assert!(command_line.contains("console=ttyS1,115200"));
        assert!(!command_line.contains("serial0"));
        assert!(command_line.ends_with(" panic=10 rauc.slot=A"), "a panic resets, which ends a trial: {command_line}");
        assert!(!kernel_command_line(Target::X86_64).contains("panic="), "x86_64 unchanged");
    }

    #[test]
    fn pi_initramfs_is_made_once_with_the_boot_drivers() {
        assert!(DEFER_UPDATE_INITRAMFS.starts_with("--essential-hook="));
        assert!(ONE_INITRAMFS.starts_with("--customize-hook="));
        for hook in [DEFER_UPDATE_INITRAMFS, ONE_INITRAMFS] {
            let (_, script) = hook.split_once('=').expect("--hook=script");
            let status = Command::new("sh").args(["-n", "-c", script]).status().expect("sh runs");
            assert!(status.success(), "not valid sh: {script}");
        }
        assert!(PI_INITRAMFS_CONF.lines().any(|line| line == "MODULES=list"));
        let status = Command::new("sh").args(["-n", "-c", PI_INITRAMFS_HOOK]).status().expect("sh runs");
        assert!(status.success(), "the initramfs hook is not valid sh");
        for drivers in
            ["kernel/drivers/mmc", "kernel/drivers/regulator", "kernel/drivers/usb/storage", "kernel/drivers/reset"]
        {
            assert!(PI_INITRAMFS_HOOK.contains(&format!("copy_modules_dir {drivers}\n")), "{drivers}");
        }
        for module in ["virtio_blk", "virtio_pci", "ext4", "vfat", "sd_mod", "uas"] {
            assert!(PI_INITRAMFS_HOOK.contains(&format!(" {module}")), "{module}");
        }
    }

    #[test]
    fn rustc_versions_compare_with_the_workspace_minimum() {
        assert!(version_at_least("rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)", "1.90"));
        assert!(version_at_least("rustc 1.90.0 (1159e78c4 2025-09-14)", "1.90"));
        assert!(version_at_least("rustc 1.91.0-nightly (abc 2025-09-01)", "1.90"));
        assert!(!version_at_least("rustc 1.85.0 (4d91de4e4 2025-02-17)", "1.90"));
        assert!(!version_at_least("rustc 1.63.0", "1.90"));
        assert!(!version_at_least("garbage", "1.90"));
    }
}
