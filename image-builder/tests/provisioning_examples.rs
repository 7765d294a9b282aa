//! The examples in `provisioning/` are what people copy: each must be accepted by the
//! same code that reads the real thing (first boot's parser, the inventory tool).

use std::fs;
use std::path::PathBuf;

use image_builder::provision;
use image_builder::provisioning::Provisioning;

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../provisioning").join(name);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn the_provisioning_file_template_is_a_valid_provisioning_file() {
    let provisioning = Provisioning::parse(&example("edgenode.toml.example")).expect("the template parses");
    provisioning.validate().expect("the template validates");
    assert_eq!(provisioning.name, "box-0001");
    let node_toml = provisioning.node_config_toml("/var/lib/edgenode").expect("a node config is made from it");
    assert!(node_toml.contains("box-0001"), "{node_toml}");
}

#[test]
fn the_example_inventory_provisions_three_boxes_that_name_each_other() {
    let rows = provision::parse_inventory(&example("inventory.example.csv")).expect("the example inventory parses");
    assert_eq!(rows.len(), 3);
    let out = std::env::temp_dir().join(format!("image-builder-example-inventory-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let boxes = provision::provision(&rows, &out, &mut |_, _, _| {}).expect("the example inventory provisions");
    assert_eq!(boxes.len(), 3);
    for name in ["box-0001", "box-0002", "box-0003"] {
        let text = fs::read_to_string(out.join(name).join("edgenode.toml")).unwrap();
        let provisioning = Provisioning::parse(&text).expect("a written file parses");
        provisioning.validate().expect("a written file validates");
        assert_eq!(provisioning.siblings.len(), 2, "{name} replicates with the other two");
    }
    fs::remove_dir_all(&out).unwrap();
}
