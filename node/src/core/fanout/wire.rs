//! The fan-out messages between nodes: follows routed to the author's home, posts
//! pushed to followers' homes, and pulls with their snapshots. Serde types; the peer
//! transport frames them (its frame cap bounds them, and `FanoutConfig` bounds what a
//! node builds: one entry per push, `snapshot_entries_max` per snapshot).
//!
//! Compatibility: `FANOUT_PROTOCOL_VERSION` goes with every message the transport
//! sends; a change of a message's layout bumps it and keeps a decoder for the
//! previous version, with a test that reads it.

use serde::{Deserialize, Serialize};

use crate::core::model::{NodeId, Post, Version};

pub const FANOUT_PROTOCOL_VERSION: u8 = 1;

/// A user id (`User::user_id`).
pub type UserId = String;

/// What the author's home lets one follower see of the author, decided there (the
/// author's blocks, a locked account's approvals): nothing, public posts only, or
/// followers-only posts too. Ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The author blocks the follower: nothing is sent on their behalf.
    Nothing,
    /// The author's account is locked and has not approved the follow (or the
    /// follower's node cannot keep approvals apart): public posts only.
    Public,
    /// Followers-only posts too.
    Followers,
}

/// A remote user as their node describes them (the answer of its `profile` service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteUser {
    pub user_id: String,
    pub handle: String,
    pub display_name: String,
    pub bio: String,
    pub created_at: u64,
    /// The node that answers for them.
    pub home: NodeId,
    /// Their profile photo's media id; its square derivative is served by their node
    /// at `/api/v1/media/{id}/avatar`. Absent from nodes older than profiles, which
    /// readers take as no avatar (so no protocol version bump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// One post of an author as followers see it, at one version. `post: None` is a
/// removal: the post was deleted, or edited to `Private`; either way it must leave
/// every follower's feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    pub post_id: String,
    /// The version of the post record this entry was made from (LWW per post id).
    pub version: Version,
    /// Creation time of the post (ms), the order of feeds and of eviction.
    pub created_at: u64,
    /// `Public` or `Followers` only, never `Private`.
    pub post: Option<Post>,
}

impl FeedEntry {
    pub fn is_removal(&self) -> bool {
        self.post.is_none()
    }

    /// Feed order: newest first is the reverse of this.
    pub fn age_key(&self) -> (u64, &str) {
        (self.created_at, self.post_id.as_str())
    }
}

/// Why a pull was not answered with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The author's node is answering pulls as fast as it allows; ask again after
    /// this long (plus jitter of the puller's own).
    RateLimited { retry_after_ms: u64 },
    /// The author's node holds no active follower of the author on the puller's node:
    /// the puller resends its follows and then pulls a full snapshot.
    NotSubscribed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Follower → author's home: `follower` (homed at `follower_home`, the sender)
    /// follows `author` (`active`) or stopped (`!active`). LWW on `version` per
    /// (follower, author); resent until acknowledged.
    ///
    /// `follower_handle` (what a locked author's follow requests show) and
    /// `hears_audience` (the sender keeps each follower's `Audience` apart, so it may
    /// be given a locked author's followers-only posts for approved followers only)
    /// are absent from older nodes: no handle, and an older node is sent a locked
    /// author's public posts only. Older nodes ignore both fields.
    Subscribe {
        follower: UserId,
        follower_home: NodeId,
        author: UserId,
        version: Version,
        active: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follower_handle: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hears_audience: bool,
    },
    /// Author's home → follower's home: the subscription at `version` (or a newer one)
    /// is stored durably. `sees`: what that follower may see of the author now; sent
    /// again when it changes (a block, an approval). Absent from older nodes, whose
    /// acknowledged follows count as before.
    SubscribeAck {
        follower: UserId,
        author: UserId,
        version: Version,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sees: Option<Audience>,
    },
    /// Author's home → each node with an active follower of `author`: one change.
    /// Best effort: a lost push is mended by the next pull.
    FeedPush {
        author: UserId,
        entry: FeedEntry,
    },
    /// Follower's home → author's home: "what changed since `since`" (`None`: send a
    /// full snapshot). At most one outstanding per (puller, author), named `pull_id`.
    Pull {
        author: UserId,
        pull_id: u64,
        since: Option<Version>,
        entries_max: u32,
    },
    /// The answer to a pull. `since: Some(s)` (a delta): every entry of the author whose
    /// version is in `(s, as_of]`, removals included, in version order. `since: None`
    /// (full): the newest entries (by creation) the author has as of `as_of`, no
    /// removals; `truncated` when the author has more than were sent.
    Snapshot {
        author: UserId,
        pull_id: u64,
        since: Option<Version>,
        as_of: Version,
        truncated: bool,
        entries: Vec<FeedEntry>,
        /// What each follower on the puller's node may see of the author now (mends a
        /// lost `SubscribeAck`). Absent from older nodes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audience: Vec<(UserId, Audience)>,
    },
    PullRefused {
        author: UserId,
        pull_id: u64,
        refusal: Refusal,
    },
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Subscribe { .. } => "subscribe",
            Message::SubscribeAck { .. } => "subscribe_ack",
            Message::FeedPush { .. } => "feed_push",
            Message::Pull { .. } => "pull",
            Message::Snapshot { .. } => "snapshot",
            Message::PullRefused { .. } => "pull_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of nodes from before audiences decode (the fields are absent), and
    /// the fields added since are plain optional fields, which an older node's serde
    /// skips as unknown (its `Message` has no `deny_unknown_fields`): no version bump.
    #[test]
    fn messages_decode_across_the_audience_fields_both_ways() {
        let old_subscribe = r#"{"Subscribe":{"follower":"f","follower_home":"0000000000000002","author":"a","version":{"at":5,"origin":"0000000000000002"},"active":true}}"#;
        match serde_json::from_str::<Message>(old_subscribe).unwrap() {
            Message::Subscribe { follower_handle, hears_audience, .. } => {
                assert_eq!((follower_handle, hears_audience), (None, false))
            }
            other => panic!("a subscribe, not {other:?}"),
        }
        let old_ack =
            r#"{"SubscribeAck":{"follower":"f","author":"a","version":{"at":5,"origin":"0000000000000002"}}}"#;
        assert!(matches!(serde_json::from_str::<Message>(old_ack).unwrap(), Message::SubscribeAck { sees: None, .. }));

        /// The acknowledgement as a node from before audiences declares it.
        #[derive(Deserialize)]
        enum OldMessage {
            SubscribeAck {
                #[allow(dead_code)]
                follower: UserId,
            },
        }
        let version = Version { at: crate::core::hlc::Timestamp(5), origin: NodeId(2) };
        let new_ack =
            Message::SubscribeAck { follower: "f".into(), author: "a".into(), version, sees: Some(Audience::Nothing) };
        let text = serde_json::to_string(&new_ack).unwrap();
        assert!(text.contains(r#""sees":"nothing""#), "{text}");
        assert!(serde_json::from_str::<OldMessage>(&text).is_ok(), "an older node reads it: {text}");
    }
}
