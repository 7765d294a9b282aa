//! The data model: every record a user authors, versioned so that replicas can ship
//! and merge records as they are (last writer wins on the version).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::hlc::Timestamp;

/// A node's identity in versions and placement; shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id a node takes when its database is created: derived from its key's pin,
    /// so whoever knows a sibling's pin (an ISP's inventory, a `[peers]` entry)
    /// knows its id too. Databases created before this keep their random id.
    pub fn from_pin(pin: &str) -> NodeId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new().chain_update(b"edgenode/node-id\0").chain_update(pin.as_bytes()).finalize();
        NodeId(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")))
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<NodeId, Self::Err> {
        u64::from_str_radix(text, 16).map(NodeId)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// When and where a record was last written. Totally ordered: the timestamp decides,
/// the origin breaks ties, so every replica picks the same winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub at: Timestamp,
    pub origin: NodeId,
}

/// Wire and storage format of records; bump with a migration and a test that reads
/// the previous format.
pub const RECORD_FORMAT: u32 = 1;

/// A versioned record; `body: None` is a tombstone (the record was deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<T> {
    pub format: u32,
    pub version: Version,
    pub body: Option<T>,
}

impl<T> Record<T> {
    pub fn live(version: Version, body: T) -> Record<T> {
        Record { format: RECORD_FORMAT, version, body: Some(body) }
    }

    pub fn tombstone(version: Version) -> Record<T> {
        Record { format: RECORD_FORMAT, version, body: None }
    }

    /// Last-writer-wins merge: commutative, associative and idempotent, because the
    /// version order is total.
    pub fn merge(self, other: Record<T>) -> Record<T> {
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Followers,
    Private,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub handle: String,
    pub display_name: String,
    pub bio: String,
    pub admin: bool,
    pub created_at: u64,
    /// The node the account was created on: listed first among the user's replicas
    /// (clients try it first). Absent in records written before homes were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<NodeId>,
    /// The profile photo: the id (SHA-256 hex) of a photo the user uploaded. Absent
    /// in records written before profiles could be edited, and when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// A locked account approves its followers: until it does, a follower sees only
    /// its public posts (`follow_counts`). Absent (false) in records written before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
}

/// Longest display name, in characters after trimming (at least one).
pub const DISPLAY_NAME_CHARS_MAX: usize = 50;
/// Longest bio, in characters.
pub const BIO_CHARS_MAX: usize = 300;

/// Why a profile edit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProfile {
    #[error("a display name is 1 to {DISPLAY_NAME_CHARS_MAX} characters (spaces at either end do not count)")]
    DisplayNameLength,
    #[error("a display name cannot hold control characters (line breaks, tabs, …)")]
    DisplayNameControl,
    #[error("a bio is at most {BIO_CHARS_MAX} characters")]
    BioLength,
}

/// The display name as stored: trimmed, checked against the limits.
pub fn checked_display_name(name: &str) -> Result<String, InvalidProfile> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > DISPLAY_NAME_CHARS_MAX {
        return Err(InvalidProfile::DisplayNameLength);
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidProfile::DisplayNameControl);
    }
    Ok(name.to_owned())
}

/// The bio as stored: line breaks allowed (a bio is a paragraph), length checked.
pub fn checked_bio(bio: &str) -> Result<String, InvalidProfile> {
    let bio = bio.trim_end();
    if bio.chars().count() > BIO_CHARS_MAX {
        return Err(InvalidProfile::BioLength);
    }
    Ok(bio.to_owned())
}

/// Replicates with the user so a replica can log them in when the home node is down.
/// Everything that decides who may act as the user lives here, in one record, so it
/// holds on every replica: the password, whether an admin disabled the account, the
/// session epoch (sessions started under an older one are signed out everywhere), a
/// pending reset code and the personal access tokens. Fields added after the first
/// format default when absent, so records written before them still decode; one
/// record means concurrent changes on two replicas resolve by last writer wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// Argon2id in PHC string format.
    pub password_hash: String,
    /// Set by an admin: no sign-in, session or token acts as the user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Bumped to sign out every session of the user on every node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_code: Option<ResetCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_tokens: Vec<AccessToken>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Credential {
    pub fn new(password_hash: String) -> Credential {
        Credential { password_hash, disabled: false, session_epoch: 0, reset_code: None, access_tokens: Vec::new() }
    }
}

/// A one-time password-reset code an admin issued; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetCode {
    /// SHA-256 (hex) of the code in its normalised form.
    pub code_sha256: String,
    pub expires_at_ms: u64,
}

/// What a personal access token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// `GET` and `HEAD` only.
    Read,
    /// Everything the user may do, except managing their credentials.
    Write,
}

/// A personal access token for scripts and apps; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    pub token_id: String,
    pub name: String,
    pub scope: TokenScope,
    /// SHA-256 (hex) of the whole token.
    pub token_sha256: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub post_id: String,
    pub author_id: String,
    pub caption: String,
    /// Media ids (SHA-256 hex of the uploaded bytes).
    pub media: Vec<String>,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    pub created_at: u64,
}

/// `follower` follows `followee`; keyed by the pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Follow {
    pub since: u64,
}

/// A locked account's answer to a follow request; keyed by (followee, follower), in
/// the followee's shard: the follower writes the follow in theirs, the followee
/// answers in their own, so each record has one writer. An answer is about the
/// follows made up to `at` (ms): unfollowing and following again asks again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowDecision {
    pub approved: bool,
    pub at: u64,
}

/// Whether the follow (made at `follow_since` ms) has been answered by `decision`.
fn decided(follow_since: u64, decision: Option<&FollowDecision>) -> Option<bool> {
    decision.filter(|decision| decision.at >= follow_since).map(|decision| decision.approved)
}

/// Whether a live follow lets the follower see the followee's followers posts: always
/// when the followee is not locked, else only once approved.
pub fn follow_counts(follow_since: u64, followee_locked: bool, decision: Option<&FollowDecision>) -> bool {
    !followee_locked || decided(follow_since, decision) == Some(true)
}

/// Whether a live follow waits for the (locked) followee's answer.
pub fn follow_pending(follow_since: u64, followee_locked: bool, decision: Option<&FollowDecision>) -> bool {
    followee_locked && decided(follow_since, decision).is_none()
}

/// Whether a live follow has no answer yet, locked or not (what unlocking approves).
pub fn follow_unanswered(follow_since: u64, decision: Option<&FollowDecision>) -> bool {
    decided(follow_since, decision).is_none()
}

/// `blocker` blocks `blocked`; keyed by (blocker, blocked), in the blocker's shard,
/// so it holds on every replica of the blocker, where their posts are and where a
/// blocked user's follow, like or comment of them is checked. Unblocking writes a
/// tombstone (last writer wins, like a follow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub since: u64,
}

/// Longest reason a report may give, in characters.
pub const REPORT_REASON_CHARS_MAX: usize = 500;

/// A user reports a post to the node's admins; keyed by (report id, reporter), in the
/// reporter's shard (the reporter writes it; an admin resolving it writes it again,
/// last writer wins). `post_author_id` is kept so a report still says whose post it
/// was after the post is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub report_id: String,
    pub post_id: String,
    pub post_author_id: String,
    pub reporter_id: String,
    pub reason: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ReportResolution>,
}

/// Who closed a report, and when (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResolution {
    pub by: String,
    pub at: u64,
}

/// An admin's decision on a post: hidden from everyone but its author and admins.
/// Keyed by (author, post), in the author's shard, so it replicates wherever the
/// post does; written by an admin of any node holding that shard (siblings accept it
/// as they accept an admin disabling an account). Unhiding writes `hidden: false`,
/// so the record keeps who decided last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostModeration {
    pub hidden: bool,
    pub by: String,
    pub at: u64,
}

/// Whether moderation lets `viewer` see a post that `may_view` allows: a hidden post
/// only its author and admins; nobody the posts of an author they block.
pub fn moderation_allows(
    hidden: bool,
    viewer_is_author: bool,
    viewer_is_admin: bool,
    viewer_blocks_author: bool,
) -> bool {
    (!hidden || viewer_is_author || viewer_is_admin) && !viewer_blocks_author
}

/// A user likes a post; keyed by (post, user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Like {
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub comment_id: String,
    pub post_id: String,
    pub author_id: String,
    pub text: String,
    pub created_at: u64,
}

/// A user owns a media item they uploaded; keyed by (media, user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaOwner {
    pub since: u64,
}

/// How far a user has read their notifications: those at or before `up_to_ms` are
/// read. One record per user, in their shard, so every replica counts the same unread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationsRead {
    pub up_to_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    pub code: String,
    pub created_by: String,
    pub created_at: u64,
    pub used_by: Option<String>,
}

/// An id that sorts by creation time across the neighbourhood: timestamp then origin.
pub fn time_ordered_id(version: Version) -> String {
    format!("{:016x}{}", version.at.0, version.origin)
}

/// Who may read a post: the rules every read path applies.
pub fn may_view(post: &Post, viewer: Option<&str>, viewer_follows_author: bool) -> bool {
    let is_author = viewer == Some(post.author_id.as_str());
    match post.visibility {
        Visibility::Public => true,
        Visibility::Followers => is_author || viewer_follows_author,
        Visibility::Private => is_author,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(at: u64, origin: u64) -> Version {
        Version { at: Timestamp(at), origin: NodeId(origin) }
    }

    #[test]
    fn merge_is_last_writer_wins_in_either_order() {
        let older = Record::live(version(1, 9), "old");
        let newer = Record::tombstone(version(2, 1));
        assert_eq!(older.clone().merge(newer.clone()), newer);
        assert_eq!(newer.clone().merge(older.clone()), newer);
        assert_eq!(newer.clone().merge(newer.clone()), newer);
    }

    #[test]
    fn origin_breaks_ties_between_equal_timestamps() {
        let a = Record::live(version(5, 1), "a");
        let b = Record::live(version(5, 2), "b");
        assert_eq!(a.clone().merge(b.clone()).body, Some("b"));
        assert_eq!(b.merge(a).body, Some("b"));
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = Record::live(version(7, 0xabc), Follow { since: 3 });
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"origin\":\"0000000000000abc\""));
        assert_eq!(serde_json::from_str::<Record<Follow>>(&json).unwrap(), record);
    }

    #[test]
    fn credentials_written_before_account_care_still_decode() {
        let before = r#"{"password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"}"#;
        let credential: Credential = serde_json::from_str(before).unwrap();
        assert_eq!(credential, Credential::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()));
        assert_eq!(serde_json::to_string(&credential).unwrap(), before, "unchanged fields add no bytes");
        let disabled = Credential { disabled: true, session_epoch: 2, ..credential };
        let json = serde_json::to_string(&disabled).unwrap();
        assert_eq!(serde_json::from_str::<Credential>(&json).unwrap(), disabled);
    }

    #[test]
    fn users_written_before_avatars_still_decode_and_encode_the_same() {
        let before = r#"{"user_id":"u1","handle":"ada","display_name":"ada","bio":"","admin":false,"created_at":7}"#;
        let user: User = serde_json::from_str(before).unwrap();
        assert_eq!(user.avatar, None);
        assert_eq!(serde_json::to_string(&user).unwrap(), before, "no avatar adds no bytes");
        let with_avatar = User { avatar: Some("a".repeat(64)), ..user };
        let json = serde_json::to_string(&with_avatar).unwrap();
        assert_eq!(serde_json::from_str::<User>(&json).unwrap(), with_avatar);
    }

    #[test]
    fn profile_limits() {
        assert_eq!(checked_display_name("  Ada L.  ").unwrap(), "Ada L.");
        assert_eq!(checked_display_name(&"é".repeat(DISPLAY_NAME_CHARS_MAX)).unwrap().chars().count(), 50);
        assert_eq!(
            checked_display_name(&"x".repeat(DISPLAY_NAME_CHARS_MAX + 1)),
            Err(InvalidProfile::DisplayNameLength)
        );
        assert_eq!(checked_display_name("   "), Err(InvalidProfile::DisplayNameLength));
        assert_eq!(checked_display_name("Ada\nAdmin"), Err(InvalidProfile::DisplayNameControl));
        assert_eq!(checked_display_name("Ada\u{7}"), Err(InvalidProfile::DisplayNameControl));
        assert_eq!(checked_bio("line one\nline two\n").unwrap(), "line one\nline two");
        assert_eq!(checked_bio(&"x".repeat(BIO_CHARS_MAX)).unwrap().len(), BIO_CHARS_MAX);
        assert_eq!(checked_bio(&"x".repeat(BIO_CHARS_MAX + 1)), Err(InvalidProfile::BioLength));
    }

    #[test]
    fn a_locked_account_counts_only_follows_it_approved_since_they_were_made() {
        let approved_at = |at| FollowDecision { approved: true, at };
        let rejected_at = |at| FollowDecision { approved: false, at };
        assert!(follow_counts(10, false, None), "an unlocked account needs no answer");
        assert!(!follow_counts(10, true, None));
        assert!(follow_pending(10, true, None));
        assert!(follow_counts(10, true, Some(&approved_at(10))));
        assert!(!follow_pending(10, true, Some(&approved_at(10))));
        assert!(!follow_counts(10, true, Some(&rejected_at(12))));
        assert!(!follow_pending(10, true, Some(&rejected_at(12))), "a rejected request is no longer pending");
        // Following again after an answer asks again.
        assert!(!follow_counts(20, true, Some(&approved_at(12))));
        assert!(follow_pending(20, true, Some(&rejected_at(12))));
        assert!(follow_unanswered(20, Some(&rejected_at(12))));
        assert!(!follow_unanswered(10, Some(&rejected_at(12))));
        assert!(!follow_pending(10, false, None), "nothing waits on an unlocked account");
    }

    #[test]
    fn users_written_before_locked_accounts_still_decode_and_encode_the_same() {
        let before = r#"{"user_id":"u1","handle":"ada","display_name":"ada","bio":"","admin":false,"created_at":7}"#;
        let user: User = serde_json::from_str(before).unwrap();
        assert!(!user.locked);
        assert_eq!(serde_json::to_string(&user).unwrap(), before);
        let locked = User { locked: true, ..user };
        assert_eq!(serde_json::from_str::<User>(&serde_json::to_string(&locked).unwrap()).unwrap(), locked);
    }

    #[test]
    fn hidden_posts_are_for_their_author_and_admins_and_blocked_authors_for_nobody_who_blocks() {
        assert!(moderation_allows(false, false, false, false));
        assert!(!moderation_allows(true, false, false, false), "hidden from others");
        assert!(moderation_allows(true, true, false, false), "its author still sees it");
        assert!(moderation_allows(true, false, true, false), "admins still see it");
        assert!(!moderation_allows(false, false, false, true), "an author the viewer blocks is gone for them");
        assert!(!moderation_allows(false, false, true, true), "also for an admin who blocks them");
    }

    #[test]
    fn reports_without_a_resolution_add_no_bytes() {
        let report = Report {
            report_id: "r".into(),
            post_id: "p".into(),
            post_author_id: "a".into(),
            reporter_id: "u".into(),
            reason: "spam".into(),
            created_at: 1,
            resolved: None,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("resolved"));
        let resolved = Report { resolved: Some(ReportResolution { by: "admin".into(), at: 2 }), ..report };
        assert_eq!(serde_json::from_str::<Report>(&serde_json::to_string(&resolved).unwrap()).unwrap(), resolved);
    }

    #[test]
    fn time_ordered_ids_sort_by_time() {
        assert!(time_ordered_id(version(9, 5)) < time_ordered_id(version(10, 1)));
    }

    #[test]
    fn visibility_rules() {
        let mut post = Post {
            post_id: "p".into(),
            author_id: "author".into(),
            caption: String::new(),
            media: vec![],
            visibility: Visibility::Public,
            tags: vec![],
            created_at: 0,
        };
        assert!(may_view(&post, None, false));
        post.visibility = Visibility::Followers;
        assert!(!may_view(&post, None, false));
        assert!(!may_view(&post, Some("stranger"), false));
        assert!(may_view(&post, Some("fan"), true));
        assert!(may_view(&post, Some("author"), false));
        post.visibility = Visibility::Private;
        assert!(!may_view(&post, Some("fan"), true));
        assert!(may_view(&post, Some("author"), false));
    }
}
