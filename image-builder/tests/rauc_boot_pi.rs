//! RAUC's custom boot backend on the Raspberry Pi (`systemd/libexec/rauc-boot-pi`)
//! against a model of the firmware's documented tryboot A/B, on directories that stand
//! for the FAT partitions (no disk, no root, no Pi): an update is tried once and becomes
//! permanent only when it passes; a trial that fails, hangs or loses power gives way
//! to the old slot; a cut install never boots the half-written slot.
//!
//! The model is what Raspberry Pi documents ("autoboot.txt", "Fail-safe OS updates
//! (TRYBOOT)"): the bootloader reads autoboot.txt on the first partition; `[all]`
//! applies always, `[tryboot]` only when the one-shot tryboot flag is set, and the flag
//! is cleared before the firmware starts, so every later reset, power cut or watchdog
//! reset boots `[all]`'s partition. With `tryboot_a_b=1` the tried partition's own
//! config.txt is read. A partition without start4.elf is not bootable. The flag is set
//! by the kernel when the reboot argument holds " tryboot" (Raspberry Pi's kernel;
//! Debian's does not: hardware.md). The autoboot.txt and slot states of a new image are
//! the builder's own (`image_builder::build`).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image_builder::build::{pi_autoboot_txt, PI_BOOT_PARTITION_A, PI_SLOT_STATES_FILE, PI_SLOT_STATES_NEW};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/libexec/rauc-boot-pi")
}

const CONSOLE: &str = "ro rootwait console=tty1 console=ttyS1,115200 panic=10";

/// A Pi: the autoboot partition, the two slots' boot partitions, what the running
/// kernel was booted with, and the reboot requests the backend made.
struct Pi {
    dir: PathBuf,
    /// The slot the firmware booted last ("A" or "B"); None when nothing booted.
    booted: Option<String>,
}

impl Drop for Pi {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Pi {
    /// A new image, powered on once: slot A boots.
    fn new(test: &str) -> Pi {
        let dir = std::env::temp_dir().join(format!("image-builder-rauc-boot-pi-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["autoboot", "boot-2", "boot-3", "kernel"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("autoboot/autoboot.txt"), pi_autoboot_txt(PI_BOOT_PARTITION_A, PI_BOOT_PARTITION_A))
            .unwrap();
        fs::write(dir.join("autoboot").join(PI_SLOT_STATES_FILE), PI_SLOT_STATES_NEW).unwrap();
        write_boot_files(&dir.join("boot-2"), "1.0.0", &format!("root=PARTUUID=uuid-a {CONSOLE} rauc.slot=A"));
        // Stands in for systemctl: records each call's arguments, one call a line.
        let systemctl = dir.join("systemctl");
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\nfor arg; do printf '[%s]' \"$arg\"; done >> {}\necho >> {0}\n",
                dir.join("calls").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
        let mut pi = Pi { dir, booted: None };
        pi.power_on(false);
        assert_eq!(pi.booted.as_deref(), Some("A"));
        pi
    }

    fn autoboot(&self) -> String {
        fs::read_to_string(self.dir.join("autoboot/autoboot.txt")).unwrap()
    }

    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut command = Command::new("sh");
        command
            .arg(script())
            .args(args)
            .env("EDGENODE_AUTOBOOT", self.dir.join("autoboot"))
            .env("EDGENODE_CMDLINE", self.dir.join("kernel/cmdline"))
            .env("EDGENODE_SYSTEMCTL", self.dir.join("systemctl"))
            .env("EDGENODE_BOOTLOADER_DT", self.dir.join("kernel/bootloader"))
            .env("EDGENODE_KALLSYMS", self.dir.join("kernel/kallsyms"));
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[])
    }

    fn ok_with(&self, args: &[&str], env: &[(&str, &Path)]) -> String {
        let output = self.run(args, env);
        assert!(output.status.success(), "rauc-boot-pi {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn state(&self, slot: &str) -> String {
        self.ok(&["get-state", slot])
    }

    /// The firmware at power-on or reset: which partition, then the kernel with that
    /// partition's cmdline.txt; the early boot unit runs (edgenode-tryboot-check).
    fn power_on(&mut self, tryboot_flag: bool) {
        let text = self.autoboot();
        assert!(text.len() <= 512, "the firmware reads at most 512 bytes of autoboot.txt");
        let (mut all, mut tryboot, mut tryboot_a_b) = (None, None, false);
        let mut section = "all";
        for line in text.lines().map(str::trim) {
            match line {
                "[all]" => section = "all",
                "[tryboot]" => section = "tryboot",
                _ if line.starts_with('[') => section = "other",
                _ => {
                    let Some((key, value)) = line.split_once('=') else { continue };
                    let applies = section == "all" || (section == "tryboot" && tryboot_flag);
                    match key {
                        "boot_partition" if section == "all" => all = Some(value.parse::<u32>().unwrap()),
                        "boot_partition" if applies => tryboot = Some(value.parse::<u32>().unwrap()),
                        "tryboot_a_b" if applies => tryboot_a_b = value == "1",
                        _ => {}
                    }
                }
            }
        }
        let partition = tryboot.unwrap_or_else(|| all.expect("autoboot.txt names a boot partition"));
        let boot = self.dir.join(format!("boot-{partition}"));
        if tryboot_flag {
            assert!(tryboot_a_b, "without tryboot_a_b=1 the firmware would look for tryboot.txt");
        }
        // Not bootable (no firmware) or no kernel command line: nothing runs; the next
        // reset comes without the flag.
        let Ok(cmdline) = fs::read_to_string(boot.join("cmdline.txt")) else {
            self.booted = None;
            return;
        };
        if !boot.join("start4.elf").is_file() || !boot.join("config.txt").is_file() {
            self.booted = None;
            return;
        }
        let slot = cmdline.split_whitespace().find_map(|word| word.strip_prefix("rauc.slot=")).unwrap().to_owned();
        let root = cmdline.split_whitespace().find_map(|word| word.strip_prefix("root=PARTUUID=")).unwrap();
        assert_eq!(root, format!("uuid-{}", slot.to_lowercase()), "slot {slot} must boot its own root: {cmdline}");
        fs::write(self.dir.join("kernel/cmdline"), &cmdline).unwrap();
        self.booted = Some(slot);
        self.ok(&["boot-check"]);
    }

    /// The reboots the backend asked systemctl for since the last call.
    fn take_reboots(&self) -> Vec<String> {
        let calls = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        let _ = fs::remove_file(self.dir.join("calls"));
        calls.lines().map(str::to_owned).collect()
    }

    /// Carries out one requested reboot: the kernel sets the firmware's tryboot flag
    /// when the argument holds " tryboot" (Raspberry Pi's reboot notifier).
    fn reboot_as_requested(&mut self) {
        let reboots = self.take_reboots();
        assert_eq!(reboots.len(), 1, "one reboot: {reboots:?}");
        let tryboot = reboots[0].starts_with("[reboot][") && reboots[0].contains(" tryboot]");
        self.power_on(tryboot);
    }

    /// edgenode-reboot.service after the node asked for its update's reboot.
    fn reboot_into_update(&mut self) {
        self.ok(&["reboot"]);
        self.reboot_as_requested();
    }

    /// The health check passed: boot-complete.target, then edgenode-tryboot-bless.
    fn health_passes(&self) {
        self.ok(&["bless"]);
    }

    /// The health check failed: its OnFailure= unit.
    fn health_fails(&mut self) {
        self.ok(&["trial-failed"]);
        if !self.take_reboots().is_empty() {
            self.power_on(false);
        }
    }

    /// What RAUC does to install into SLOT: mark it bad, write its boot partition and
    /// root (here: the boot files; the bundle's cmdline.txt names slot A, as built),
    /// make it primary.
    fn install(&self, slot: &str, version: &str) {
        self.ok(&["set-state", slot, "bad"]);
        let boot = self.boot_dir(slot);
        let _ = fs::remove_dir_all(&boot);
        write_boot_files(&boot, version, &format!("root=PARTUUID=uuid-a {CONSOLE} rauc.slot=A"));
        let partuuid = PathBuf::from(format!("uuid-{}", slot.to_lowercase()));
        self.ok_with(
            &["set-primary", slot],
            &[("EDGENODE_SLOT_BOOT_DIR", &boot), ("EDGENODE_SLOT_PARTUUID", &partuuid)],
        );
    }

    fn boot_dir(&self, slot: &str) -> PathBuf {
        self.dir.join(match slot {
            "A" => "boot-2",
            "B" => "boot-3",
            _ => unreachable!(),
        })
    }

    fn version_booted(&self) -> String {
        let slot = self.booted.as_deref().expect("a slot booted");
        fs::read_to_string(self.boot_dir(slot).join("version")).unwrap()
    }
}

/// A slot's boot partition as a bundle's boot image fills it.
fn write_boot_files(boot: &Path, version: &str, cmdline: &str) {
    fs::create_dir_all(boot).unwrap();
    for (name, content) in [
        ("start4.elf", "firmware"),
        ("config.txt", "arm_64bit=1\nkernel=vmlinuz\n"),
        ("vmlinuz", "kernel"),
        ("version", version),
    ] {
        fs::write(boot.join(name), content).unwrap();
    }
    fs::write(boot.join("cmdline.txt"), format!("{cmdline}\n")).unwrap();
}

#[test]
fn an_update_is_tried_once_made_permanent_when_good_and_stays() {
    let mut pi = Pi::new("good");
    assert_eq!(pi.ok(&["get-current"]), "A");
    assert_eq!(pi.ok(&["get-primary"]), "A");
    assert_eq!((pi.state("A"), pi.state("B")), ("good".into(), "bad".into()), "slot B is empty in a new image");

    pi.install("B", "2.0.0");
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 3), "armed: [tryboot] names B, [all] still A");
    let cmdline = fs::read_to_string(pi.boot_dir("B").join("cmdline.txt")).unwrap();
    assert_eq!(cmdline, format!("root=PARTUUID=uuid-b {CONSOLE} rauc.slot=B\n"), "B's own root and name");
    assert_eq!(pi.ok(&["get-primary"]), "B");
    assert_eq!(pi.state("B"), "good");

    pi.reboot_into_update();
    assert_eq!(pi.booted.as_deref(), Some("B"), "the trial boot");
    assert_eq!(pi.version_booted(), "2.0.0");
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 3), "on trial: nothing committed yet");
    pi.health_passes();
    assert_eq!(pi.autoboot(), pi_autoboot_txt(3, 3), "committed: [all] names B");
    for _ in 0..3 {
        pi.power_on(false);
        assert_eq!(pi.booted.as_deref(), Some("B"), "a reset or power cut keeps the new slot");
        pi.health_passes();
    }
    pi.reboot_into_update();
    assert_eq!(pi.booted.as_deref(), Some("B"), "nothing armed: a plain reboot");
    assert_eq!(pi.ok(&["get-primary"]), "B");
    assert_eq!(pi.state("A"), "good", "the old slot stays a fallback");

    // The next release goes into A the same way.
    pi.install("A", "3.0.0");
    pi.reboot_into_update();
    assert_eq!((pi.booted.as_deref(), pi.version_booted().as_str()), (Some("A"), "3.0.0"));
    pi.health_passes();
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2));
}

#[test]
fn a_failed_trial_comes_back_on_the_old_slot_and_is_not_tried_again() {
    let mut pi = Pi::new("failed");
    pi.install("B", "2.0.0");
    pi.reboot_into_update();
    assert_eq!(pi.booted.as_deref(), Some("B"));
    // edgenode never serves: the health check fails, its OnFailure= unit reboots.
    pi.health_fails();
    assert_eq!(pi.booted.as_deref(), Some("A"), "the tryboot flag was spent: the old slot boots");
    assert_eq!(pi.version_booted(), "1.0.0");
    assert_eq!(pi.state("B"), "bad");
    assert_eq!(pi.ok(&["get-primary"]), "A");
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2), "disarmed");
    // A later reboot of any kind stays on A.
    pi.reboot_into_update();
    assert_eq!(pi.booted.as_deref(), Some("A"));
    pi.power_on(true);
    assert_eq!(pi.booted.as_deref(), Some("A"), "even a stray tryboot flag boots A now");

    // A trial that hangs: the watchdog's reset comes without the flag.
    pi.install("B", "2.0.1");
    pi.reboot_into_update();
    assert_eq!(pi.booted.as_deref(), Some("B"));
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"), "a reset during the trial boots the old slot");
    assert_eq!((pi.state("B"), pi.ok(&["get-primary"])), ("bad".into(), "A".into()));

    // A trial whose boot partition does not even start (no firmware file).
    pi.install("B", "2.0.2");
    fs::remove_file(pi.boot_dir("B").join("start4.elf")).unwrap();
    pi.reboot_into_update();
    assert_eq!(pi.booted, None, "the firmware finds nothing to boot on partition 3");
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"));
    assert_eq!(pi.state("B"), "bad");
}

#[test]
fn an_install_cut_short_never_boots_the_half_written_slot() {
    let mut pi = Pi::new("cut");
    // RAUC marks the target bad, then the power goes while it writes B's partitions.
    pi.ok(&["set-state", "B", "bad"]);
    fs::write(pi.boot_dir("B").join("vmlinuz"), "half a kern").unwrap();
    for _ in 0..2 {
        pi.power_on(false);
        assert_eq!(pi.booted.as_deref(), Some("A"));
    }
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2), "never armed");

    // Installed, armed, and the power goes before the reboot: no trial without the
    // flag, and the armed slot is dropped at the next boot.
    pi.install("B", "2.0.0");
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"));
    assert_eq!((pi.state("B"), pi.autoboot()), ("bad".into(), pi_autoboot_txt(2, 2)));

    // A new install of B while B is armed disarms it first, before a byte is written.
    pi.install("B", "2.0.0");
    pi.ok(&["set-state", "B", "bad"]);
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2));
    // A leftover temporary file from a cut write is ignored; the file is whole.
    fs::write(pi.dir.join("autoboot/autoboot.txt.tmp"), "[all]\nboot_par").unwrap();
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"));
}

#[test]
fn marking_good_never_switches_to_an_untried_slot() {
    let mut pi = Pi::new("untried");
    pi.install("B", "2.0.0");
    // `rauc status mark-good other` while A runs: B is recorded good, A still boots.
    pi.ok(&["set-state", "B", "good"]);
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 3), "still only armed");
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"));
    // The booted slot marked bad: [all] is left as it is (there is nothing tried to go to).
    pi.ok(&["set-state", "A", "bad"]);
    pi.power_on(false);
    assert_eq!(pi.booted.as_deref(), Some("A"));
    // Making the booted slot primary again disarms.
    pi.install("B", "2.0.0");
    pi.ok(&["set-primary", "A"]);
    assert_eq!((pi.autoboot(), pi.state("A")), (pi_autoboot_txt(2, 2), "good".into()));
}

#[test]
fn installs_are_refused_before_writing_where_no_trial_can_happen() {
    let pi = Pi::new("refused");
    let bootloader = pi.dir.join("kernel/bootloader");
    let refusal = |expected: &str| {
        let output = pi.run(&[], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "pre-install passed; wanted a refusal with {expected:?}");
        assert!(stderr.starts_with("rauc-boot-pi: ") && stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("nothing was written"), "{stderr}");
    };
    refusal("not booted by the Raspberry Pi bootloader");
    fs::create_dir_all(&bootloader).unwrap();
    // /chosen/bootloader/capabilities: a big-endian cell; bit 2 tryboot_a_b, bit 3 tryboot.
    fs::write(bootloader.join("capabilities"), 0b0_0011u32.to_be_bytes()).unwrap();
    refusal("cannot do tryboot A/B (capabilities 3)");
    fs::write(bootloader.join("capabilities"), 0xffu32.to_be_bytes()).unwrap();
    fs::write(pi.dir.join("kernel/kallsyms"), "0000000000000000 t rpi_firmware_property\n").unwrap();
    refusal("this kernel cannot ask the firmware for a trial boot");
    fs::write(
        pi.dir.join("kernel/kallsyms"),
        "0000000000000000 t rpi_firmware_property\n0000000000000000 t rpi_firmware_notify_reboot\n",
    )
    .unwrap();
    pi.ok(&[]);
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2), "the check writes nothing");

    for args in [&["get-state", "C"][..], &["set-state", "A", "maybe"], &["set-primary"], &["frobnicate"]] {
        let output = pi.run(args, &[]);
        assert!(!output.status.success(), "rauc-boot-pi {args:?} succeeded");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("rauc-boot-pi: "), "{args:?}");
    }
    // set-primary refuses a boot partition the firmware would not start, and arms nothing.
    let empty = pi.dir.join("empty-boot");
    fs::create_dir_all(&empty).unwrap();
    let output = pi.run(
        &["set-primary", "B"],
        &[("EDGENODE_SLOT_BOOT_DIR", &empty), ("EDGENODE_SLOT_PARTUUID", Path::new("uuid-b"))],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no cmdline.txt"));
    assert_eq!(pi.autoboot(), pi_autoboot_txt(2, 2));
}
