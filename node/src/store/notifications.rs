//! Notifications, derived from records that already replicate: likes and comments
//! on a user's posts, follows of them, and posts whose caption mentions their
//! @handle. The write path keeps two derived indexes of those events (rebuilt, like
//! every index, from the rows: `rebuild_index`), so every replica holding the
//! records lists the same notifications with no replicated notification record;
//! the one replicated record is the user's `NotificationsRead` marker, in their own
//! shard, so the unread count agrees on every replica too.
//!
//! An event's recipient is a user id, or `@handle` for a mention: a post can arrive
//! before the user it mentions, so mentions are indexed by the handle the caption
//! names and resolved when read. A like or comment arriving before its post (they
//! are in different shards) is indexed when the post arrives; a deleted post takes
//! its events with it.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{live, Store, StoreResult, COMMENTS, FOLLOWS, LIKES, POSTS, USERS};
use crate::core::model::{may_view, Comment, Follow, Like, NotificationsRead, Post, Record, User};
use crate::core::replication::{RecordKey, Table};
use crate::core::text;
use crate::store::split_pair_key;

/// The replicated read markers (`Table::NotificationsRead`), keyed by user id.
pub(in crate::store) const NOTIFICATIONS_READ: TableDefinition<&str, &[u8]> =
    TableDefinition::new("notifications_read");
/// Derived: one row per event, `recipient/at(16 hex)/kind/post/actor/reference`,
/// so a recipient's events are read newest first by a range.
pub(in crate::store) const NOTIFICATIONS: TableDefinition<&str, ()> = TableDefinition::new("notifications");
/// Derived: the same events by group, `recipient/kind/post/actor/reference` → at
/// (ms), so a group's actors are counted by a range.
pub(in crate::store) const NOTIFICATION_GROUPS: TableDefinition<&str, u64> =
    TableDefinition::new("notification_groups");

/// Events one page looks at, at most: past it the page ends early with a cursor.
const PAGE_EVENTS_SCANNED_MAX: usize = 2_000;
/// Unread events the unread count looks at, at most (the count is of groups).
const UNREAD_EVENTS_SCANNED_MAX: usize = 1_000;
/// Actors named in a group; the rest are counted.
pub const GROUP_ACTORS_SHOWN: usize = 3;
/// Stands for "none" in an index key (follows have no post, likes no reference).
const NONE_PART: &str = "-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotificationKind {
    Like,
    Comment,
    Follow,
    Mention,
    /// A follow of a locked account: a request it answers (`store::social`).
    FollowRequest,
}

impl NotificationKind {
    pub fn name(self) -> &'static str {
        match self {
            NotificationKind::Like => "like",
            NotificationKind::Comment => "comment",
            NotificationKind::Follow => "follow",
            NotificationKind::Mention => "mention",
            NotificationKind::FollowRequest => "follow_request",
        }
    }

    /// Whether events of this kind are about a post (follows are about the user).
    fn has_post(self) -> bool {
        !matches!(self, NotificationKind::Follow | NotificationKind::FollowRequest)
    }

    fn from_name(name: &str) -> Option<NotificationKind> {
        [
            NotificationKind::Like,
            NotificationKind::Comment,
            NotificationKind::Follow,
            NotificationKind::Mention,
            NotificationKind::FollowRequest,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

/// Notifications of one kind about one post (or, for follows, about the user),
/// collapsed: "ada and 3 others liked …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationGroup {
    pub kind: NotificationKind,
    /// `None` for follows.
    pub post_id: Option<String>,
    /// User ids, most recent first, at most `GROUP_ACTORS_SHOWN`.
    pub actor_ids: Vec<String>,
    /// Distinct actors in the group.
    pub actors_count: u64,
    pub latest_at_ms: u64,
    pub unread: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
    /// Newest first (by each group's latest event).
    pub groups: Vec<NotificationGroup>,
    /// Where the next page starts; `None` when there is nothing older.
    pub next_cursor: Option<String>,
}

/// One event, as the indexes key it.
struct Event<'a> {
    recipient: &'a str,
    at_ms: u64,
    kind: NotificationKind,
    post_id: &'a str,
    actor_id: &'a str,
    reference: &'a str,
}

impl Event<'_> {
    fn time_key(&self) -> String {
        format!(
            "{}/{}",
            self.recipient,
            event_suffix(self.at_ms, self.kind, self.post_id, self.actor_id, self.reference)
        )
    }

    fn group_key(&self) -> String {
        format!("{}/{}/{}/{}/{}", self.recipient, self.kind.name(), self.post_id, self.actor_id, self.reference)
    }

    /// Adds the event to both indexes, or removes it; nothing for one's own action.
    fn set(&self, txn: &WriteTransaction, present: bool) -> StoreResult<()> {
        if self.actor_id == self.recipient {
            return Ok(());
        }
        let mut by_time = txn.open_table(NOTIFICATIONS)?;
        let mut by_group = txn.open_table(NOTIFICATION_GROUPS)?;
        if present {
            by_time.insert(self.time_key().as_str(), ())?;
            by_group.insert(self.group_key().as_str(), self.at_ms)?;
        } else {
            by_time.remove(self.time_key().as_str())?;
            by_group.remove(self.group_key().as_str())?;
        }
        Ok(())
    }
}

/// A time key without its recipient: what cursors hold.
fn event_suffix(at_ms: u64, kind: NotificationKind, post_id: &str, actor_id: &str, reference: &str) -> String {
    format!("{at_ms:016x}/{}/{post_id}/{actor_id}/{reference}", kind.name())
}

/// The parts of a time key's suffix: (at, kind, post, actor).
fn parse_suffix(suffix: &str) -> Option<(u64, NotificationKind, &str, &str)> {
    let mut parts = suffix.split('/');
    let at_ms = u64::from_str_radix(parts.next()?, 16).ok()?;
    let kind = NotificationKind::from_name(parts.next()?)?;
    Some((at_ms, kind, parts.next()?, parts.next()?))
}

/// The recipient of a mention of `handle`.
fn mention_recipient(handle: &str) -> String {
    format!("@{handle}")
}

/// The end of a recipient's key range: `/` + 1.
fn range_end(recipient: &str) -> String {
    format!("{recipient}0")
}

fn post_author(txn: &WriteTransaction, post_id: &str) -> StoreResult<Option<String>> {
    let posts = txn.open_table(POSTS)?;
    let author = match posts.get(post_id)? {
        Some(row) => live::<Post>(row.value())?.map(|post| post.author_id),
        None => None,
    };
    Ok(author)
}

// ----- the derived indexes, kept by `Replicated::update_indexes` -----

pub(in crate::store) fn like_changed(
    txn: &WriteTransaction,
    key: &str,
    old: Option<&Like>,
    new: Option<&Like>,
) -> StoreResult<()> {
    let Some((post_id, user_id)) = split_pair_key(key) else { return Ok(()) };
    let Some(author) = post_author(txn, post_id)? else { return Ok(()) };
    let event = |at_ms| Event {
        recipient: &author,
        at_ms,
        kind: NotificationKind::Like,
        post_id,
        actor_id: user_id,
        reference: NONE_PART,
    };
    if let Some(old) = old {
        event(old.at).set(txn, false)?;
    }
    if let Some(new) = new {
        event(new.at).set(txn, true)?;
    }
    Ok(())
}

pub(in crate::store) fn comment_changed(
    txn: &WriteTransaction,
    old: Option<&Comment>,
    new: Option<&Comment>,
) -> StoreResult<()> {
    for (comment, present) in [(old, false), (new, true)] {
        let Some(comment) = comment else { continue };
        let Some(author) = post_author(txn, &comment.post_id)? else { continue };
        comment_event(&author, comment).set(txn, present)?;
    }
    Ok(())
}

fn comment_event<'a>(post_author: &'a str, comment: &'a Comment) -> Event<'a> {
    Event {
        recipient: post_author,
        at_ms: comment.created_at,
        kind: NotificationKind::Comment,
        post_id: &comment.post_id,
        actor_id: &comment.author_id,
        reference: &comment.comment_id,
    }
}

pub(in crate::store) fn follow_changed(
    txn: &WriteTransaction,
    key: &str,
    old: Option<&Follow>,
    new: Option<&Follow>,
) -> StoreResult<()> {
    let Some((follower, followee)) = split_pair_key(key) else { return Ok(()) };
    // A follow of a locked account is a request; the kind is fixed when the follow
    // arrives (locking or unlocking later leaves past notifications as they were).
    let followee_locked = match txn.open_table(USERS)?.get(followee)? {
        Some(bytes) => live::<User>(bytes.value())?.is_some_and(|user| user.locked),
        None => false,
    };
    let event = |since: u64, kind: NotificationKind| Event {
        recipient: followee,
        at_ms: since,
        kind,
        post_id: NONE_PART,
        actor_id: follower,
        reference: NONE_PART,
    };
    if let Some(old) = old {
        // Whichever kind it was indexed as.
        event(old.since, NotificationKind::Follow).set(txn, false)?;
        event(old.since, NotificationKind::FollowRequest).set(txn, false)?;
    }
    if let Some(new) = new {
        let kind = if followee_locked { NotificationKind::FollowRequest } else { NotificationKind::Follow };
        event(new.since, kind).set(txn, true)?;
    }
    Ok(())
}

/// A post's mentions move with its caption; when the post appears or goes, so do
/// the events of the likes and comments it already has (they may have arrived first).
pub(in crate::store) fn post_changed(
    txn: &WriteTransaction,
    post_id: &str,
    old: Option<&Post>,
    new: Option<&Post>,
) -> StoreResult<()> {
    for (post, present) in [(old, false), (new, true)] {
        let Some(post) = post else { continue };
        for handle in text::mentions(&post.caption) {
            let recipient = mention_recipient(&handle);
            let event = Event {
                recipient: &recipient,
                at_ms: post.created_at,
                kind: NotificationKind::Mention,
                post_id,
                actor_id: &post.author_id,
                reference: NONE_PART,
            };
            event.set(txn, present)?;
        }
    }
    let (post, present) = match (old, new) {
        (None, Some(new)) => (new, true),
        (Some(old), None) => (old, false),
        _ => return Ok(()),
    };
    let mut likes = Vec::new();
    for entry in txn.open_table(LIKES)?.range((post_id, "")..(post_id, super::KEY_MAX))? {
        let (key, value) = entry?;
        if let Some(like) = live::<Like>(value.value())? {
            likes.push((key.value().1.to_owned(), like));
        }
    }
    for (user_id, like) in &likes {
        let event = Event {
            recipient: &post.author_id,
            at_ms: like.at,
            kind: NotificationKind::Like,
            post_id,
            actor_id: user_id,
            reference: NONE_PART,
        };
        event.set(txn, present)?;
    }
    let mut comments = Vec::new();
    for entry in txn.open_table(COMMENTS)?.range((post_id, "")..(post_id, super::KEY_MAX))? {
        comments.extend(live::<Comment>(entry?.1.value())?);
    }
    for comment in &comments {
        comment_event(&post.author_id, comment).set(txn, present)?;
    }
    Ok(())
}

/// Builds both derived indexes from the rows (schema 3 → 4): every live post (with
/// its mentions, likes and comments) and every live follow.
pub(in crate::store) fn rebuild_index(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(NOTIFICATIONS)?.retain(|_, _| false)?;
    txn.open_table(NOTIFICATION_GROUPS)?.retain(|_, _| false)?;
    let mut posts = Vec::new();
    for entry in txn.open_table(POSTS)?.iter()? {
        let (key, value) = entry?;
        if live::<Post>(value.value())?.is_some() {
            posts.push(key.value().to_owned());
        }
    }
    for post_id in posts {
        let post = match txn.open_table(POSTS)?.get(post_id.as_str())? {
            Some(row) => live::<Post>(row.value())?,
            None => None,
        };
        if let Some(post) = post {
            post_changed(txn, &post_id, None, Some(&post))?;
        }
    }
    let mut follows = Vec::new();
    for entry in txn.open_table(FOLLOWS)?.iter()? {
        let (key, value) = entry?;
        if let Some(follow) = live::<Follow>(value.value())? {
            let (follower, followee) = key.value();
            follows.push((super::pair_key(follower, followee), follow));
        }
    }
    for (key, follow) in &follows {
        follow_changed(txn, key, None, Some(follow))?;
    }
    Ok(())
}

// ----- reads and the read marker -----

/// What reading one user's notifications needs, in one read transaction.
struct Reader<'a> {
    txn: &'a redb::ReadTransaction,
    user_id: &'a str,
    /// The user id and `@handle`.
    recipients: Vec<String>,
    read_up_to_ms: u64,
}

impl<'a> Reader<'a> {
    fn new(txn: &'a redb::ReadTransaction, user_id: &'a str) -> StoreResult<Reader<'a>> {
        let mut recipients = vec![user_id.to_owned()];
        if let Some(row) = txn.open_table(USERS)?.get(user_id)? {
            if let Some(user) = live::<User>(row.value())? {
                recipients.push(mention_recipient(&user.handle));
            }
        }
        let read_up_to_ms = match txn.open_table(NOTIFICATIONS_READ)?.get(user_id)? {
            Some(row) => live::<NotificationsRead>(row.value())?.map_or(0, |read| read.up_to_ms),
            None => 0,
        };
        Ok(Reader { txn, user_id, recipients, read_up_to_ms })
    }

    /// Whether the user may see the post an event is about (follows have none); a
    /// post that is gone or not here yet is not shown.
    fn may_see(&self, kind: NotificationKind, post_id: &str) -> StoreResult<bool> {
        if !kind.has_post() {
            return Ok(true);
        }
        let post = match self.txn.open_table(POSTS)?.get(post_id)? {
            Some(row) => live::<Post>(row.value())?,
            None => None,
        };
        let Some(post) = post else { return Ok(false) };
        let follows_author = super::social::follows_in(self.txn, self.user_id, &post.author_id)?;
        Ok(may_view(&post, Some(self.user_id), follows_author))
    }

    /// The recipients' event suffixes in `(from, to)` (exclusive), newest first, merged.
    fn events_newest_first(&self, below: Option<&str>, above: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let table = self.txn.open_table(NOTIFICATIONS)?;
        let mut merged = Vec::new();
        for recipient in &self.recipients {
            let start = match above {
                Some(above) => format!("{recipient}/{above}"),
                None => format!("{recipient}/"),
            };
            let end = match below {
                Some(below) => format!("{recipient}/{below}"),
                None => range_end(recipient),
            };
            let prefix_len = recipient.len() + 1;
            for entry in table.range(start.as_str()..end.as_str())?.rev().take(limit) {
                let suffix = entry?.0.value()[prefix_len..].to_owned();
                if above.is_some_and(|above| suffix.as_str() <= above) {
                    continue;
                }
                merged.push(suffix);
            }
        }
        merged.sort_unstable_by(|a, b| b.cmp(a));
        merged.truncate(limit);
        Ok(merged)
    }

    /// The recipient whose index holds events of `kind`.
    fn recipient_of(&self, kind: NotificationKind) -> Option<&str> {
        match kind {
            NotificationKind::Mention => self.recipients.get(1).map(String::as_str),
            _ => self.recipients.first().map(String::as_str),
        }
    }

    /// A group's actors (most recent first), their count, and the suffix of its
    /// latest event.
    fn group(&self, kind: NotificationKind, post_id: &str) -> StoreResult<Option<(NotificationGroup, String)>> {
        let Some(recipient) = self.recipient_of(kind) else { return Ok(None) };
        let prefix = format!("{recipient}/{}/{post_id}/", kind.name());
        let end = format!("{prefix}\u{7f}");
        let mut latest_by_actor: BTreeMap<String, u64> = BTreeMap::new();
        let mut latest: Option<(u64, String)> = None;
        let blocks = self.txn.open_table(super::BLOCKS)?;
        for entry in self.txn.open_table(NOTIFICATION_GROUPS)?.range(prefix.as_str()..end.as_str())? {
            let (key, at_ms) = entry?;
            let at_ms = at_ms.value();
            let rest = &key.value()[prefix.len()..];
            let Some((actor_id, reference)) = rest.split_once('/') else { continue };
            // Nothing of a user the recipient blocks (their mentions, likes, comments).
            if actor_id == self.user_id || super::safety::blocks_in(&blocks, self.user_id, actor_id)? {
                continue;
            }
            let slot = latest_by_actor.entry(actor_id.to_owned()).or_default();
            *slot = (*slot).max(at_ms);
            let suffix = event_suffix(at_ms, kind, post_id, actor_id, reference);
            if latest.as_ref().is_none_or(|(_, newest)| suffix > *newest) {
                latest = Some((at_ms, suffix));
            }
        }
        let Some((latest_at_ms, latest_suffix)) = latest else { return Ok(None) };
        let mut actors: Vec<(u64, String)> = latest_by_actor.into_iter().map(|(actor, at)| (at, actor)).collect();
        actors.sort_unstable_by(|a, b| b.cmp(a));
        let group = NotificationGroup {
            kind,
            post_id: kind.has_post().then(|| post_id.to_owned()),
            actors_count: actors.len() as u64,
            actor_ids: actors.into_iter().take(GROUP_ACTORS_SHOWN).map(|(_, actor)| actor).collect(),
            latest_at_ms,
            unread: latest_at_ms > self.read_up_to_ms,
        };
        Ok(Some((group, latest_suffix)))
    }
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a notifications cursor (use next_cursor of the previous page)")]
pub struct InvalidCursor;

/// Checks a cursor a client sent back.
pub fn check_cursor(cursor: &str) -> Result<(), InvalidCursor> {
    parse_suffix(cursor).map(|_| ()).ok_or(InvalidCursor)
}

impl Store {
    /// Up to `limit` notification groups older than `cursor`, newest first.
    pub fn notifications(&self, user_id: &str, cursor: Option<&str>, limit: usize) -> StoreResult<NotificationPage> {
        let txn = self.db.begin_read()?;
        let reader = Reader::new(&txn, user_id)?;
        let events = reader.events_newest_first(cursor, None, PAGE_EVENTS_SCANNED_MAX)?;
        let scanned_all = events.len() < PAGE_EVENTS_SCANNED_MAX;
        let mut seen = BTreeSet::new();
        let mut groups = Vec::new();
        let mut last_suffix = None;
        for suffix in &events {
            last_suffix = Some(suffix.clone());
            let Some((_, kind, post_id, actor_id)) = parse_suffix(suffix) else { continue };
            if actor_id == user_id || !seen.insert((kind, post_id.to_owned())) {
                continue;
            }
            let Some((group, latest_suffix)) = reader.group(kind, post_id)? else { continue };
            // Shown on an earlier page: its latest event is above the cursor.
            if cursor.is_some_and(|cursor| latest_suffix.as_str() >= cursor) || !reader.may_see(kind, post_id)? {
                continue;
            }
            groups.push(group);
            if groups.len() == limit {
                return Ok(NotificationPage { groups, next_cursor: Some(suffix.clone()) });
            }
        }
        let next_cursor = if scanned_all { None } else { last_suffix };
        Ok(NotificationPage { groups, next_cursor })
    }

    /// Groups with an event after the read marker (of the latest
    /// `UNREAD_EVENTS_SCANNED_MAX` unread events): what the list shows as unread.
    pub fn unread_notifications(&self, user_id: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let reader = Reader::new(&txn, user_id)?;
        let above = format!("{:016x}/\u{7f}", reader.read_up_to_ms);
        let events = reader.events_newest_first(None, Some(&above), UNREAD_EVENTS_SCANNED_MAX)?;
        let mut groups = BTreeSet::new();
        let blocks = txn.open_table(super::BLOCKS)?;
        for suffix in &events {
            let Some((_, kind, post_id, actor_id)) = parse_suffix(suffix) else { continue };
            if super::safety::blocks_in(&blocks, user_id, actor_id)? {
                continue;
            }
            if actor_id != user_id && !groups.contains(&(kind, post_id)) && reader.may_see(kind, post_id)? {
                groups.insert((kind, post_id));
            }
        }
        Ok(groups.len() as u64)
    }

    /// Marks notifications up to `up_to_ms` (default: now) read. The marker only moves
    /// forward; returns where it stands.
    pub fn mark_notifications_read(&self, user_id: &str, up_to_ms: Option<u64>) -> StoreResult<u64> {
        self.write(|tx| {
            let stored = match tx.txn.open_table(NOTIFICATIONS_READ)?.get(user_id)? {
                Some(row) => live::<NotificationsRead>(row.value())?.map_or(0, |read| read.up_to_ms),
                None => 0,
            };
            let version = tx.version();
            let wanted = up_to_ms.unwrap_or(version.at.physical_ms());
            if wanted <= stored {
                return Ok(stored);
            }
            let key = RecordKey::new(Table::NotificationsRead, user_id);
            tx.write_record(user_id, &key, &Record::live(version, NotificationsRead { up_to_ms: wanted }))?;
            Ok(wanted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Visibility;
    use crate::store::Admission;

    /// Every row of both derived indexes.
    fn index_rows(store: &Store) -> (Vec<String>, Vec<(String, u64)>) {
        let txn = store.db.begin_read().unwrap();
        let by_time = txn.open_table(NOTIFICATIONS).unwrap();
        let by_group = txn.open_table(NOTIFICATION_GROUPS).unwrap();
        let times = by_time.iter().unwrap().map(|entry| entry.unwrap().0.value().to_owned()).collect();
        let groups = by_group
            .iter()
            .unwrap()
            .map(|entry| entry.map(|(k, v)| (k.value().to_owned(), v.value())).unwrap())
            .collect();
        (times, groups)
    }

    #[test]
    fn a_schema_3_database_gets_the_index_its_rows_imply() {
        let dir = crate::store::tests::temp_dir("notifications-schema-3");
        let (expected, ada_id) = {
            let store = Store::open(&dir).unwrap();
            let ada = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
            let bea = store.create_user("bea", "hash".into(), Admission::Open).unwrap();
            let post = store.create_post(&ada.user_id, "dusk".into(), vec![], Visibility::Public).unwrap();
            store.set_like(&post.post_id, &bea.user_id, true).unwrap();
            store.add_comment(&post.post_id, &bea.user_id, "nice".into()).unwrap();
            store.set_follow(&bea.user_id, &ada.user_id, true).unwrap();
            store.create_post(&bea.user_id, "hi @ada".into(), vec![], Visibility::Public).unwrap();
            let expected = index_rows(&store);
            assert_eq!(expected.0.len(), 4, "like, comment, follow, mention: {expected:?}");
            // What a schema 3 database is: the rows without the derived indexes.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(NOTIFICATIONS).unwrap();
            txn.delete_table(NOTIFICATION_GROUPS).unwrap();
            txn.open_table(crate::store::META)
                .unwrap()
                .insert("schema_version", 3u64.to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
            (expected, ada.user_id)
        };
        let store = Store::open(&dir).unwrap();
        assert_eq!(index_rows(&store), expected, "the migration derives what the write path did");
        assert_eq!(store.unread_notifications(&ada_id).unwrap(), 4);
        assert_eq!(store.notifications(&ada_id, None, 10).unwrap().groups.len(), 4);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn suffixes_parse_back_and_sort_by_time() {
        let older = event_suffix(9, NotificationKind::Like, "p1", "u1", NONE_PART);
        let newer = event_suffix(10, NotificationKind::Comment, "p1", "u2", "c1");
        assert!(older < newer);
        assert_eq!(parse_suffix(&newer), Some((10, NotificationKind::Comment, "p1", "u2")));
        assert!(check_cursor("not/a/cursor").is_err());
        assert!(check_cursor(&older).is_ok());
    }
}
