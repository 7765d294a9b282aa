//! System tier (`#[ignore]`d; `--include-ignored` runs it): `image-builder provision`
//! on a 100-box inventory, with every label's QR code read back by a decoder we did
//! not write (`zbarimg`, Debian's zbar-tools) and checked against the box's own files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_builder::label::LabelContent;
use image_builder::provisioning::Provisioning;

const BOXES: usize = 100;

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("image-builder-labels-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
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
    let zbarimg = Command::new("zbarimg").arg("--version").output();
    assert!(
        zbarimg.is_ok_and(|output| output.status.success()),
        "zbarimg is missing: apt-get install zbar-tools (the system tier decodes labels with it)"
    );
    let dir = scratch_dir();
    let csv_path = dir.join("boxes.csv");
    fs::write(&csv_path, inventory(BOXES)).unwrap();
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["provision", "--inventory"])
        .arg(&csv_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "provision failed: {}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(table.lines().count(), BOXES + 1, "one table row per box plus the header");

    let mut box_dirs: Vec<PathBuf> =
        fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().path()).filter(|path| path.is_dir()).collect();
    box_dirs.sort();
    assert_eq!(box_dirs.len(), BOXES, "one directory per box and no leftovers");

    let labels: Vec<PathBuf> = box_dirs.iter().map(|dir| dir.join("label.png")).collect();
    let decoded = Command::new("zbarimg")
        .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
        .args(&labels)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "zbarimg failed: {}", String::from_utf8_lossy(&decoded.stderr));
    let payloads: Vec<String> = String::from_utf8(decoded.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(payloads.len(), BOXES, "zbarimg found one QR code per label");

    for (index, (box_dir, payload)) in box_dirs.iter().zip(&payloads).enumerate() {
        let number = index + 1;
        let name = format!("box-{number:04}");
        assert_eq!(box_dir.file_name().unwrap().to_string_lossy(), name);
        let provisioning = Provisioning::parse(&fs::read_to_string(box_dir.join("edgenode.toml")).unwrap()).unwrap();
        assert_eq!(provisioning.name, name);
        assert_eq!(provisioning.wifi.as_ref().unwrap().ssid, format!("Street {number}, block A"));
        let claim_code = provisioning.claim_code.clone().unwrap();
        if number % 3 == 0 {
            assert_eq!(claim_code, format!("ISP{number:04}-CODE"));
        }
        let pin = pin_of(&provisioning, &dir.join("pins").join(&name));
        let label = LabelContent::from_payload(payload).unwrap_or_else(|| panic!("{name}: payload {payload:?}"));
        assert_eq!(
            label,
            LabelContent { url: format!("https://{name}.local:8443/"), pin: pin.clone(), claim_code },
            "{name}: the QR code holds the box's URL, true pin and claim code"
        );
        // The previous box lists this one as its sibling, with the same pin.
        let previous = if number == 1 { BOXES } else { number - 1 };
        let previous_file = out.join(format!("box-{previous:04}")).join("edgenode.toml");
        let previous = Provisioning::parse(&fs::read_to_string(previous_file).unwrap()).unwrap();
        assert_eq!(previous.siblings[0].address, format!("{name}.local:8443"));
        assert_eq!(previous.siblings[0].pin, pin);
    }
    fs::remove_dir_all(&dir).unwrap();
}
