//! System tier (`#[ignore]`d; `--include-ignored` runs it): `image-builder provision`
//! with every label's QR code read back by a decoder we did not write (`zbarimg`,
//! Debian's zbar-tools) and checked against the box's own files; and one box taken
//! through first boot's `provisioning::apply`, whose installed CA is the one whose
//! fingerprint was printed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_builder::label::OnboardingLink;
use image_builder::provisioning::{self, Layout, Provisioning};

const BOXES: usize = 100;

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("image-builder-labels-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn require_zbarimg() {
    let zbarimg = Command::new("zbarimg").arg("--version").output();
    assert!(
        zbarimg.is_ok_and(|output| output.status.success()),
        "zbarimg is missing: apt-get install zbar-tools (the system tier decodes labels with it)"
    );
}

fn inventory(boxes: usize) -> String {
    let mut csv = String::from("name,region,role,wifi_ssid,wifi_psk,wifi_country,claim_code,siblings\n");
    for index in 1..=boxes {
        let next = index % boxes + 1;
        // Every third box gets its claim code from the inventory, the rest generated.
        let claim_code = if index % 3 == 0 { format!("ISP{index:04}-CODE") } else { String::new() };
        csv += &format!(
            "box-{index:04},earth/africa/ng/lagos/street-{},home,\"Street {index}, block A\",pass-{index:04}-word,NG,{claim_code},box-{next:04}\n",
            index % 7
        );
    }
    csv
}

/// Runs `image-builder provision` on `csv` into `out`; returns the table it printed.
fn provision(dir: &Path, csv: &str, out: &Path) -> String {
    let csv_path = dir.join("boxes.csv");
    fs::write(&csv_path, csv).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["provision", "--inventory"])
        .arg(&csv_path)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(output.status.success(), "provision failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The CA fingerprint of each box in the printed table (its last column).
fn printed_fingerprints(table: &str) -> BTreeMap<String, String> {
    table
        .lines()
        .skip(1)
        .map(|line| {
            let name = line.split_whitespace().next().unwrap().to_owned();
            let (_, hex) = line.split_once("SHA-256 ").unwrap_or_else(|| panic!("no fingerprint in {line:?}"));
            (name, format!("SHA-256 {hex}"))
        })
        .collect()
}

/// What zbarimg reads from each label, in order.
fn decode_labels(labels: &[PathBuf]) -> Vec<String> {
    let decoded = Command::new("zbarimg")
        .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
        .args(labels)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "zbarimg failed: {}", String::from_utf8_lossy(&decoded.stderr));
    String::from_utf8(decoded.stdout).unwrap().lines().map(str::to_owned).collect()
}

fn read_provisioning(box_dir: &Path) -> Provisioning {
    Provisioning::parse(&fs::read_to_string(box_dir.join(provisioning::FILE_NAME)).unwrap()).unwrap()
}

/// The `ca fingerprint:` line of a box's label.txt.
fn label_text_fingerprint(box_dir: &Path) -> String {
    let text = fs::read_to_string(box_dir.join("label.txt")).unwrap();
    text.lines().find_map(|line| line.strip_prefix("ca fingerprint: ")).unwrap().to_owned()
}

/// The pin of the identity inside a provisioning file, as the node computes it.
fn pin_of(provisioning: &Provisioning, scratch: &Path) -> String {
    let identity = provisioning.identity.as_ref().expect("provisioner writes an identity");
    fs::create_dir_all(scratch).unwrap();
    fs::write(scratch.join("node.key"), &identity.key_pem).unwrap();
    fs::write(scratch.join("node.crt"), &identity.certificate_pem).unwrap();
    edgenode::identity::Identity::load(scratch).unwrap().pin
}

#[test]
#[ignore = "system tier: zbarimg (zbar-tools)"]
fn hundred_boxes_get_configs_and_labels_that_zbarimg_reads_back() {
    require_zbarimg();
    let dir = scratch_dir("hundred");
    let out = dir.join("out");
    let table = provision(&dir, &inventory(BOXES), &out);
    assert_eq!(table.lines().count(), BOXES + 1, "one table row per box plus the header");
    let fingerprints = printed_fingerprints(&table);

    let mut box_dirs: Vec<PathBuf> =
        fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().path()).filter(|path| path.is_dir()).collect();
    box_dirs.sort();
    assert_eq!(box_dirs.len(), BOXES, "one directory per box and no leftovers");

    let labels: Vec<PathBuf> = box_dirs.iter().map(|dir| dir.join("label.png")).collect();
    let payloads = decode_labels(&labels);
    assert_eq!(payloads.len(), BOXES, "zbarimg found one QR code per label");

    for (index, (box_dir, payload)) in box_dirs.iter().zip(&payloads).enumerate() {
        let number = index + 1;
        let name = format!("box-{number:04}");
        assert_eq!(box_dir.file_name().unwrap().to_string_lossy(), name);
        let provisioning = read_provisioning(box_dir);
        assert_eq!(provisioning.name, name);
        assert_eq!(provisioning.wifi.as_ref().unwrap().ssid, format!("Street {number}, block A"));
        let claim_code = provisioning.claim_code.clone().unwrap();
        if number % 3 == 0 {
            assert_eq!(claim_code, format!("ISP{number:04}-CODE"));
        }
        assert_eq!(payload, &format!("http://{name}.local/?claim={claim_code}"), "{name}: the onboarding link");
        assert_eq!(OnboardingLink::parse(payload), Some(OnboardingLink { name: name.clone(), claim_code }));
        assert!(provisioning.ca.is_some(), "{name}: the provisioner makes the box's CA");
        assert_eq!(label_text_fingerprint(box_dir), fingerprints[&name], "{name}: label.txt and the table agree");
        // The previous box lists this one as its sibling, with its true pin.
        let pin = pin_of(&provisioning, &dir.join("pins").join(&name));
        let previous = if number == 1 { BOXES } else { number - 1 };
        let previous = read_provisioning(&out.join(format!("box-{previous:04}")));
        assert_eq!(previous.siblings[0].address, format!("{name}.local:8443"));
        assert_eq!(previous.siblings[0].pin, pin);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "system tier: zbarimg (zbar-tools)"]
fn a_box_label_opens_onboarding_and_first_boot_installs_the_ca_whose_fingerprint_was_printed() {
    use edgenode::tls::ca::{CaNames, NodeCa};
    require_zbarimg();
    let dir = scratch_dir("first-boot");
    let out = dir.join("out");
    let table = provision(&dir, "name,region\nkitchen-box,earth/eu\n", &out);
    let printed = printed_fingerprints(&table)["kitchen-box"].clone();
    let box_dir = out.join("kitchen-box");

    // The label opens the onboarding page with the box's claim code.
    let claim_code = read_provisioning(&box_dir).claim_code.unwrap();
    let payloads = decode_labels(&[box_dir.join("label.png")]);
    assert_eq!(payloads, [format!("http://kitchen-box.local/?claim={claim_code}")]);

    // First boot installs the provisioning file, then the node loads that CA.
    let layout = Layout {
        boot_dir: dir.join("boot"),
        config_dir: dir.join("config"),
        state_dir: dir.join("state"),
        node_owner: None,
        fallback_name: "edgenode".into(),
    };
    fs::create_dir_all(&layout.boot_dir).unwrap();
    fs::copy(box_dir.join(provisioning::FILE_NAME), layout.boot_dir.join(provisioning::FILE_NAME)).unwrap();
    let applied = provisioning::apply(&layout).unwrap();
    assert!(applied.ca, "the CA came from the file");
    let pin = edgenode::identity::Identity::load(&layout.state_dir).unwrap().pin;
    let node_id = edgenode::core::model::NodeId::from_pin(&pin).to_string();
    let host_label = edgenode::discovery::rules::host_label("kitchen-box");
    let expected_names = CaNames::for_node(&host_label, &node_id, &[]);
    let ca = NodeCa::load_or_create(&layout.state_dir, &host_label, expected_names.clone()).unwrap();
    assert_eq!(ca.fingerprint(), printed, "the node's CA is the one whose fingerprint was printed");
    assert_eq!(label_text_fingerprint(&box_dir), printed);
    assert_eq!(ca.names, expected_names, "made for the names (and node id) the box has");

    use std::os::unix::fs::PermissionsExt as _;
    for file in ["ca.key", "ca.crt", "ca-names"] {
        let mode = fs::metadata(layout.state_dir.join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let left_on_boot = fs::read_to_string(layout.boot_dir.join(provisioning::APPLIED_FILE_NAME)).unwrap();
    assert!(!left_on_boot.contains("PRIVATE KEY"), "the keys left the boot partition");
    assert!(!layout.boot_dir.join(provisioning::FILE_NAME).exists());
    fs::remove_dir_all(&dir).unwrap();
}
