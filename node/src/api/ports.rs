//! What the API needs of the services: replication, fan-out and search, as the API's
//! own traits with plain data in their signatures. The API holds `Arc<dyn …>` of
//! these and never a service's type; the composition root implements them with the
//! services (`wiring.rs`, beside `node.rs`).

use serde_json::Value;

use crate::core::fanout::{FeedEntry, RemoteUser};
use crate::core::model::{NodeId, Version};
use crate::core::operator::{PairingCode, Peer, PeerRetired, ReplicationStatus, SiblingAddress};
use crate::core::region::Region;
use crate::store::fanout::{RemoteFollowRequest, RemoteProfile};
use crate::store::{BlobKind, MediaInfo, StoreError};

/// Sibling replication: its state for admins, pairing, and where a
/// user's replicas are. Called from blocking threads.
pub trait Replication: Send + Sync {
    /// The siblings this node replicates with: `[{id, peer_address}]` (public).
    fn sibling_list(&self) -> Vec<SiblingAddress>;
    /// Every sibling with its connection state and counters.
    fn peers(&self) -> Vec<Peer>;
    /// Replication figures for operators and tests.
    fn status(&self) -> Result<ReplicationStatus, StoreError>;
    /// A one-time pairing code for the other node, with how to reach this one.
    fn start_pairing(&self) -> Result<PairingCode, PairingFailed>;
    /// Joins the node at `address` with the code it showed.
    fn join(&self, address: &str, code: &str) -> Result<Sibling, PairingFailed>;
    /// The replicas of a user, `home` first.
    fn replicas_of(&self, user_id: &str, home: Option<NodeId>) -> Vec<Replica>;
    /// Retires the dead sibling `node_id`: never waited for, placed on or admitted
    /// again; a connected one only with `force`.
    fn retire(&self, node_id: NodeId, force: bool) -> Result<PeerRetired, RetireRefused>;
}

/// Why a sibling was not retired; the message is for people, sent as it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RetireRefused {
    pub reason: RetireRefusal,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireRefusal {
    /// The id is this node's own.
    OwnNode,
    NotASibling,
    /// Connected now and `force` not given.
    Connected,
    /// The node could not do it (files, shutting down).
    Failed,
}

/// Why pairing could not start or a join failed: a message for people, which the API
/// sends as it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PairingFailed(pub String);

/// A sibling this node just paired with.
#[derive(Debug, Clone)]
pub struct Sibling {
    pub node_id: NodeId,
    pub address: String,
    pub pin: String,
}

/// A node holding a replica of a user.
#[derive(Debug, Clone)]
pub struct Replica {
    pub node_id: NodeId,
    /// Where siblings reach it, if known.
    pub peer_address: Option<String>,
    pub this_node: bool,
}

/// Fan-out across the neighbourhood: users of other nodes, follows of them, their
/// cached posts and photos. Called from blocking threads.
pub trait Fanout: Send + Sync {
    /// A post was created, edited or deleted through the API.
    fn post_changed(&self, author_id: &str, post_id: &str);
    /// Asks `node` for the user with `handle` (`None`: no such user there).
    fn resolve(&self, handle: &str, node: NodeId) -> Result<Option<RemoteUser>, RemoteError>;
    /// A remote user known here by `handle`, homed at or resolved through `node`.
    fn known_profile(&self, handle: &str, node: NodeId) -> Option<RemoteProfile>;
    /// The remote user a local user follows, as last resolved.
    fn profile(&self, user_id: &str) -> Option<RemoteProfile>;
    fn follows(&self, follower: &str, author: &str) -> bool;
    /// A local user follows (or stops following) a remote user; durable on return.
    fn follow_remote(
        &self,
        follower: &str,
        author: &RemoteUser,
        version: Version,
        active: bool,
    ) -> Result<(), RemoteError>;
    /// Remote posts for `user`'s feed, newest first.
    fn feed_for(&self, user: &str, limit: usize) -> Vec<FeedEntry>;
    /// Cached posts of a remote author that `viewer` may see, newest first.
    fn posts_of(&self, author: &str, viewer: Option<&str>, limit: usize) -> Vec<FeedEntry>;
    /// What the photo cache knows of a remote photo.
    fn cached_media_info(&self, media_id: &str) -> Option<MediaInfo>;
    /// A variant of a photo of a remote post `viewer` may see (`None`: no cached
    /// post that `viewer` may see carries it).
    fn remote_media(
        &self,
        viewer: Option<&str>,
        media_id: &str,
        kind: BlobKind,
    ) -> Result<Option<(MediaInfo, Vec<u8>)>, RemoteError>;
    /// The avatar derivative of `media_id` as `node` serves it, cached here (`None`:
    /// not an avatar there).
    fn remote_avatar(&self, media_id: &str, node: NodeId) -> Result<Option<Vec<u8>>, RemoteError>;
    /// Follows of `followee` (a locked user of this node) by users of other nodes
    /// that wait for an answer.
    fn follow_requests(&self, followee: &str) -> Result<Vec<RemoteFollowRequest>, RemoteError>;
    /// `followee` answers the follow of `handle` (or user id) of `node`; `None`: no
    /// such follower.
    fn answer_follow(
        &self,
        followee: &str,
        handle: &str,
        node: NodeId,
        approved: bool,
    ) -> Result<Option<RemoteFollowRequest>, RemoteError>;
    /// `author` blocked or unblocked someone: what their followers on other nodes may
    /// see is decided again.
    fn audience_changed(&self, author: &str);
    /// `author` locked or unlocked their account: followers on other nodes with no
    /// answer yet are approved (as local ones are), then all are judged again.
    fn lock_changed(&self, author: &str);
    /// Keeps how to show a remote user (handle, home, avatar), durable on return.
    fn remember_profile(&self, user: &RemoteUser) -> Result<(), RemoteError>;
}

/// Why fan-out could not do what the API asked, as the API tells the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The node asked for is neither a sibling nor a configured neighbour.
    #[error("{0}")]
    UnknownNode(String),
    /// The fan-out rules refuse it.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(StoreError),
    /// The other node did not answer, or answered badly.
    #[error("{0}")]
    Failed(String),
}

/// Searches wider than this node. Called from blocking threads.
pub trait Search: Send + Sync {
    /// An aggregator's answer over `prefix`: `{scope, answered_by, users, posts}`.
    fn search_region(&self, query: &str, prefix: &Region, limit: usize) -> Result<Value, SearchError>;
    /// Each sibling's public answer, asked at once: (answers, unreachable node ids).
    fn search_siblings(&self, query: &str, limit: usize) -> (Vec<Value>, Vec<String>);
    /// `{id, region}` of this node, for items the API answers from its own store.
    fn this_node(&self) -> Value;
}

/// Why a search over a region has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// No aggregator covering the region answered.
    #[error("{0}")]
    NoAggregator(String),
    #[error(transparent)]
    Store(StoreError),
    /// The search service cannot answer (e.g. its configuration).
    #[error("{0}")]
    Unavailable(String),
}

/// Updates of this box (RAUC, the fleet poller): what `/api/v1/node` shows admins and
/// what `edgenode update check|install` asks for. Called from blocking threads.
pub trait Updates: Send + Sync {
    /// `{available, running_version, state, booted_slot, slots, last_check, last_install, …}`.
    fn status(&self) -> Value;
    /// Asks the update server now: `{outcome, version, …}`.
    fn check_now(&self) -> Result<Value, UpdateRefused>;
    /// Installs one bundle (a file the node can read, or an `https://` URL).
    fn install(&self, source: &str) -> Result<Value, UpdateRefused>;
}

/// Why an update was not checked or installed, as the API tells the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum UpdateRefused {
    /// No `rauc` on this system.
    #[error("{0}")]
    NotAvailable(String),
    /// No `[update] url`.
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    Busy(String),
    /// The server, the download or RAUC failed; nothing changed.
    #[error("{0}")]
    Failed(String),
}
