//! The composition root's adapters: the API's ports (`api::ports`) implemented by the
//! services, and what search needs of the link taken from replication (which owns
//! the link). The one module besides `node` that knows both the API and the services;
//! neither of them imports the other's types.

use std::sync::Arc;

use serde_json::Value;

use crate::api::ports;
use crate::core::fanout::{FeedEntry, RemoteUser};
use crate::core::model::{NodeId, Version};
use crate::core::operator;
use crate::core::region::Region;
use crate::services::fanout::{Fanout, FanoutServiceError};
use crate::services::replication::Siblings;
use crate::services::search::{SearchError, SearchLinks, SearchService};
use crate::store::fanout::{RemoteFollowRequest, RemoteProfile};
use crate::store::{BlobKind, MediaInfo, StoreError};

impl ports::Replication for Siblings {
    fn sibling_list(&self) -> Vec<operator::SiblingAddress> {
        Siblings::sibling_list(self)
    }

    fn peers(&self) -> Vec<operator::Peer> {
        Siblings::peers(self)
    }

    fn status(&self) -> Result<operator::ReplicationStatus, StoreError> {
        Siblings::status(self)
    }

    fn start_pairing(&self) -> Result<operator::PairingCode, ports::PairingFailed> {
        Siblings::start_pairing(self).map_err(|error| ports::PairingFailed(error.to_string()))
    }

    fn join(&self, address: &str, code: &str) -> Result<ports::Sibling, ports::PairingFailed> {
        let info = Siblings::join(self, address, code).map_err(|error| ports::PairingFailed(format!("{error:#}")))?;
        Ok(ports::Sibling { node_id: info.node_id, address: info.address, pin: info.pin })
    }

    fn replicas_of(&self, user_id: &str, home: Option<NodeId>) -> Vec<ports::Replica> {
        Siblings::replicas_of(self, user_id, home)
            .into_iter()
            .map(|(node_id, peer_address, this_node)| ports::Replica { node_id, peer_address, this_node })
            .collect()
    }

    fn retire(&self, node_id: NodeId, force: bool) -> Result<operator::PeerRetired, ports::RetireRefused> {
        use crate::services::replication::ReplicationError;
        Siblings::retire(self, node_id, force).map_err(|error| {
            let reason = match error {
                ReplicationError::RetireOwnNode { .. } => ports::RetireRefusal::OwnNode,
                ReplicationError::NotASibling { .. } => ports::RetireRefusal::NotASibling,
                ReplicationError::SiblingConnected { .. } => ports::RetireRefusal::Connected,
                _ => ports::RetireRefusal::Failed,
            };
            ports::RetireRefused { reason, message: error.to_string() }
        })
    }
}

impl ports::Fanout for Fanout {
    fn post_changed(&self, author_id: &str, post_id: &str) {
        Fanout::post_changed(self, author_id, post_id);
    }

    fn resolve(&self, handle: &str, node: NodeId) -> Result<Option<RemoteUser>, ports::RemoteError> {
        Ok(Fanout::resolve(self, handle, node)?)
    }

    fn known_profile(&self, handle: &str, node: NodeId) -> Option<RemoteProfile> {
        Fanout::known_profile(self, handle, node)
    }

    fn profile(&self, user_id: &str) -> Option<RemoteProfile> {
        Fanout::profile(self, user_id)
    }

    fn follows(&self, follower: &str, author: &str) -> bool {
        Fanout::follows(self, follower, author)
    }

    fn follow_remote(
        &self,
        follower: &str,
        author: &RemoteUser,
        version: Version,
        active: bool,
    ) -> Result<(), ports::RemoteError> {
        Ok(Fanout::follow_remote(self, follower, author, version, active)?)
    }

    fn feed_for(&self, user: &str, limit: usize) -> Vec<FeedEntry> {
        Fanout::feed_for(self, user, limit)
    }

    fn posts_of(&self, author: &str, viewer: Option<&str>, limit: usize) -> Vec<FeedEntry> {
        Fanout::posts_of(self, author, viewer, limit)
    }

    fn cached_media_info(&self, media_id: &str) -> Option<MediaInfo> {
        Fanout::cached_media_info(self, media_id)
    }

    fn remote_media(
        &self,
        viewer: Option<&str>,
        media_id: &str,
        kind: BlobKind,
    ) -> Result<Option<(MediaInfo, Vec<u8>)>, ports::RemoteError> {
        Ok(Fanout::remote_media(self, viewer, media_id, kind)?)
    }

    fn remote_avatar(&self, media_id: &str, node: NodeId) -> Result<Option<Vec<u8>>, ports::RemoteError> {
        Ok(Fanout::remote_avatar(self, media_id, node)?)
    }

    fn follow_requests(&self, followee: &str) -> Result<Vec<RemoteFollowRequest>, ports::RemoteError> {
        Ok(Fanout::follow_requests(self, followee)?)
    }

    fn answer_follow(
        &self,
        followee: &str,
        handle: &str,
        node: NodeId,
        approved: bool,
    ) -> Result<Option<RemoteFollowRequest>, ports::RemoteError> {
        Ok(Fanout::answer_follow(self, followee, handle, node, approved)?)
    }

    fn audience_changed(&self, author: &str) {
        Fanout::audience_changed(self, author)
    }

    fn lock_changed(&self, author: &str) {
        Fanout::lock_changed(self, author)
    }

    fn remember_profile(&self, user: &RemoteUser) -> Result<(), ports::RemoteError> {
        Ok(Fanout::remember_profile(self, user)?)
    }
}

impl From<FanoutServiceError> for ports::RemoteError {
    fn from(error: FanoutServiceError) -> ports::RemoteError {
        match error {
            error if error.is_unknown_node() => ports::RemoteError::UnknownNode(error.to_string()),
            FanoutServiceError::Fanout(error) => ports::RemoteError::Refused(error.to_string()),
            FanoutServiceError::Store(error) => ports::RemoteError::Store(error),
            error => ports::RemoteError::Failed(error.to_string()),
        }
    }
}

impl ports::Search for SearchService {
    fn search_region(&self, query: &str, prefix: &Region, limit: usize) -> Result<Value, ports::SearchError> {
        SearchService::search_region(self, query, prefix, limit).map_err(|error| match error {
            SearchError::NoAggregator { .. } => ports::SearchError::NoAggregator(error.to_string()),
            SearchError::Store(error) => ports::SearchError::Store(error),
            SearchError::Config(_) => ports::SearchError::Unavailable(error.to_string()),
        })
    }

    fn search_siblings(&self, query: &str, limit: usize) -> (Vec<Value>, Vec<String>) {
        SearchService::search_siblings(self, query, limit)
    }

    fn this_node(&self) -> Value {
        SearchService::this_node(self)
    }
}

/// Search calls over replication's link, answers on its services, and asks the
/// siblings of the moment: `SearchService::start(&config, store, &siblings)`.
impl From<&Arc<Siblings>> for SearchLinks {
    fn from(siblings: &Arc<Siblings>) -> SearchLinks {
        let source = siblings.clone();
        SearchLinks {
            link: siblings.neighbour_link().clone(),
            services: siblings.neighbour_services().clone(),
            sibling_ids: Box::new(move || source.sibling_ids()),
        }
    }
}

impl ports::Updates for crate::services::update::UpdateService {
    fn status(&self) -> Value {
        crate::services::update::UpdateService::status(self)
    }

    fn check_now(&self) -> Result<Value, ports::UpdateRefused> {
        crate::services::update::UpdateService::check_now(self).map_err(ports::UpdateRefused::from)
    }

    fn install(&self, source: &str) -> Result<Value, ports::UpdateRefused> {
        self.install_one(source).map_err(ports::UpdateRefused::from)
    }
}

impl From<crate::services::update::UpdateError> for ports::UpdateRefused {
    fn from(error: crate::services::update::UpdateError) -> Self {
        use crate::services::update::UpdateError;
        let message = error.to_string();
        match error {
            UpdateError::NotAvailable => ports::UpdateRefused::NotAvailable(message),
            UpdateError::NotConfigured => ports::UpdateRefused::NotConfigured(message),
            UpdateError::Busy => ports::UpdateRefused::Busy(message),
            UpdateError::Failed(_) => ports::UpdateRefused::Failed(message),
        }
    }
}

/// The update answers are built by the update service, which may not import the
/// API's shapes, and the CLI (not the black-box client) reads most of them: here
/// the values the service serializes are checked against what `/openapi.json` says.
#[cfg(test)]
mod answer_shapes {
    use serde_json::{json, Value};

    use crate::api::shapes;
    use crate::services::update::{summarize_rauc_status, CheckRecord, FailedBundle, InstallOutcome, InstallRecord};

    fn check<T: schemars::JsonSchema>(value: &Value) {
        let schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> = validator.iter_errors(value).map(|error| error.to_string()).collect();
        assert!(errors.is_empty(), "{value} is not a {}: {errors:?}", std::any::type_name::<T>());
    }

    fn install_record(outcome: InstallOutcome, finished_at_unix: Option<u64>) -> InstallRecord {
        InstallRecord {
            version: Some("1.2.3".to_owned()),
            sha256: None,
            source: "/tmp/bundle.raucb".to_owned(),
            from_version: "1.2.2".to_owned(),
            started_at_unix: 1_700_000_000,
            finished_at_unix,
            outcome,
            message: String::new(),
            boot_id: "boot".to_owned(),
        }
    }

    #[test]
    fn update_answers_match_their_shapes() {
        for outcome in [
            InstallOutcome::Installing,
            InstallOutcome::AwaitingReboot,
            InstallOutcome::Booted,
            InstallOutcome::BootFailed,
            InstallOutcome::Failed,
        ] {
            let record = install_record(outcome, Some(1_700_000_100));
            check::<shapes::UpdateInstalled>(&json!({"installed": record}));
        }
        check::<shapes::UpdateInstallRecord>(&json!(install_record(InstallOutcome::Installing, None)));
        let check_record =
            CheckRecord { at_unix: 1, outcome: "failed".to_owned(), version: None, error: Some("refused".to_owned()) };
        check::<shapes::UpdateCheckRecord>(&json!(check_record));
        let failed = FailedBundle { version: None, sha256: "ab".repeat(32), at_unix: 1 };
        check::<shapes::FailedBundle>(&json!(failed));
        let rauc = json!({
            "compatible": "edgenode-pi",
            "booted": "A",
            "boot_primary": "rootfs.0",
            "slots": [{"rootfs.0": {"class": "rootfs", "bootname": "A", "device": "/dev/mmcblk0p2", "state": "booted",
                "boot_status": "good", "slot_status": {"bundle": {"version": "1.2.3"}, "installation": {"timestamp": "t"}, "status": "ok"}}},
                {"rootfs.1": {"class": "rootfs"}}],
        });
        let summary = summarize_rauc_status(&rauc);
        for slot in summary["slots"].as_array().expect("slots") {
            check::<shapes::RaucSlot>(slot);
        }
    }

    #[test]
    fn a_wrong_value_is_caught() {
        let result =
            std::panic::catch_unwind(|| check::<shapes::UpdateInstalled>(&json!({"installed": {"outcome": "nope"}})));
        assert!(result.is_err());
    }
}
