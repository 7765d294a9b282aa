//! A sibling's card: what phones need of it (its CA, its name, its HTTPS port), as
//! exchanged over the link (`services/sibling_web.rs`) and kept in
//! `<data_dir>/sibling-web/<node id>.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::model::NodeId;
use crate::identity::{write_private_file, IdentityError};

pub const SIBLING_WEB_DIR: &str = "sibling-web";
/// A card is a CA certificate (under 1 KiB) and a few words.
const CARD_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingCard {
    /// The sibling's CA certificate, PEM.
    pub ca_pem: String,
    /// Its name (`<name>.local` is where phones on its network find it).
    pub name: String,
    /// Where it serves HTTPS and HTTP/3.
    pub https_port: u16,
}

impl SiblingCard {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a card serializes")
    }

    /// A card from a sibling: `None` unless well formed, its name a plain host name,
    /// and its CA name-constrained the way a node's CA is.
    pub fn from_json(bytes: &[u8]) -> Option<SiblingCard> {
        if bytes.len() > CARD_BYTES_MAX {
            return None;
        }
        let card: SiblingCard = serde_json::from_slice(bytes).ok()?;
        let plain_name = !card.name.is_empty()
            && card.name.len() <= 63
            && card.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        (plain_name && card.https_port != 0 && super::ca::is_node_ca_pem(card.ca_pem.as_bytes())).then_some(card)
    }

    pub fn read(dir: &Path, node: NodeId) -> Option<SiblingCard> {
        SiblingCard::from_json(&std::fs::read(dir.join(file_name(node))).ok()?)
    }

    pub fn write(&self, dir: &Path, node: NodeId) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|source| IdentityError::Write { path: dir.to_owned(), source })?;
        write_private_file(dir, &file_name(node), &self.to_json())
    }

    /// Every stored card, in file-name order.
    pub fn all(dir: &Path) -> Vec<SiblingCard> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut paths: Vec<std::path::PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
            .collect();
        paths.sort();
        paths.iter().filter_map(|path| SiblingCard::from_json(&std::fs::read(path).ok()?)).collect()
    }

    /// Removes the cards of nodes not in `siblings`.
    pub fn retain(dir: &Path, siblings: &[NodeId]) {
        let keep: Vec<String> = siblings.iter().map(|node| file_name(*node)).collect();
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !keep.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn file_name(node: NodeId) -> String {
    format!("{node}.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{CaNames, NodeCa};

    #[test]
    fn cards_are_checked_stored_and_pruned() {
        let (_, files) = NodeCa::create("kitchen", CaNames::for_node("kitchen", "0000000000000002", &[])).unwrap();
        let card = SiblingCard { ca_pem: files.certificate_pem, name: "kitchen".into(), https_port: 8443 };
        assert_eq!(SiblingCard::from_json(&card.to_json()), Some(card.clone()));
        let odd_name = SiblingCard { name: "<script>".into(), ..card.clone() };
        assert_eq!(SiblingCard::from_json(&odd_name.to_json()), None);
        let not_a_node_ca = SiblingCard { ca_pem: "-----BEGIN CERTIFICATE-----".into(), ..card.clone() };
        assert_eq!(SiblingCard::from_json(&not_a_node_ca.to_json()), None);

        let suffix: String = crate::os::random_bytes::<6>().iter().map(|byte| format!("{byte:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("edgenode-cards-{suffix}"));
        card.write(&dir, NodeId(2)).unwrap();
        card.write(&dir, NodeId(3)).unwrap();
        assert_eq!(SiblingCard::read(&dir, NodeId(2)), Some(card.clone()));
        assert_eq!(SiblingCard::all(&dir).len(), 2);
        SiblingCard::retain(&dir, &[NodeId(3)]);
        assert_eq!(SiblingCard::read(&dir, NodeId(2)), None);
        assert_eq!(SiblingCard::all(&dir), vec![card]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
