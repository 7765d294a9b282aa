//! What a phone needs of this node's siblings, learnt over the link: each sibling's
//! certificate authority, so that the CA bundle a phone installs here (`/ca.pem`,
//! `/ca.mobileconfig`) also opens the siblings (failover needs no second trust
//! step), and its name and HTTPS port, so that a user's profile can say where else
//! the user's data is served (the web app offers those addresses when home is down).
//!
//! Each node answers the call `web-card` with its card (`tls::SiblingCard`: CA, name,
//! HTTPS port) and asks its siblings for theirs at start and every
//! `EXCHANGE_INTERVAL_MS`, kept in `<data_dir>/sibling-web/` (cards of nodes that
//! are no longer siblings are removed). A card is kept only if its CA is
//! name-constrained the way a node's CA is (`tls::ca::is_node_ca_pem`): a compromised
//! sibling cannot slip an authority for other sites into the bundle phones install.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::replication::Siblings;
use crate::core::model::NodeId;
use crate::link::neighbours::{NeighbourHandler, NeighbourLink, Refusal};
use crate::tls::{SiblingCard, SIBLING_WEB_DIR};

pub const SERVICE_WEB_CARD: &str = "web-card";
/// Between rounds once every sibling's card is here; until then (a sibling just
/// paired, or not reachable yet) every `RETRY_INTERVAL_MS`.
const EXCHANGE_INTERVAL_MS: u64 = 300_000;
const RETRY_INTERVAL_MS: u64 = 5_000;
const CALL_TIMEOUT_MS: u64 = 5_000;

struct CardHandler(Vec<u8>);

impl NeighbourHandler for CardHandler {
    fn handle(&self, _from: NodeId, _body: &[u8]) -> Result<Vec<u8>, Refusal> {
        Ok(self.0.clone())
    }
}

/// Registers `web-card` and exchanges cards with the siblings until `stop` turns true.
pub fn start(
    siblings: &Arc<Siblings>,
    own_card: &SiblingCard,
    data_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    siblings.neighbour_services().register(SERVICE_WEB_CARD, Arc::new(CardHandler(own_card.to_json())));
    let link = siblings.neighbour_link().clone();
    let siblings = siblings.clone();
    tokio::spawn(async move {
        let mut delay = RETRY_INTERVAL_MS;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let ids = {
                let siblings = siblings.clone();
                match tokio::task::spawn_blocking(move || siblings.sibling_ids()).await {
                    Ok(ids) => ids,
                    Err(_) => continue,
                }
            };
            let complete = exchange(&link, &ids, &data_dir.join(SIBLING_WEB_DIR)).await;
            delay = if complete { EXCHANGE_INTERVAL_MS } else { RETRY_INTERVAL_MS };
        }
    });
}

/// One round; whether every sibling's card is now stored.
async fn exchange(link: &NeighbourLink, siblings: &[NodeId], dir: &std::path::Path) -> bool {
    let mut complete = true;
    for &node in siblings {
        let answer = match link.call(node, SERVICE_WEB_CARD, b"", Duration::from_millis(CALL_TIMEOUT_MS)).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%node, %error, "no web card from this sibling this round");
                complete &= SiblingCard::read(dir, node).is_some();
                continue;
            }
        };
        let Some(card) = SiblingCard::from_json(&answer) else {
            // Asked again only at the slow pace: a refusal is not going to change soon.
            tracing::warn!(%node, "a sibling's card is malformed, or its CA is not limited to a node's own names; it is not offered to phones");
            continue;
        };
        if SiblingCard::read(dir, node).as_ref() == Some(&card) {
            continue;
        }
        match card.write(dir, node) {
            Ok(()) => tracing::info!(%node, name = %card.name, "stored a sibling's CA and address for phones"),
            Err(error) => {
                tracing::warn!(%node, %error, "cannot store a sibling's card");
                complete = false;
            }
        }
    }
    SiblingCard::retain(dir, siblings);
    complete
}
