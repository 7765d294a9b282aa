//! The aggregated search index an aggregator keeps of the public entries nodes under
//! its region feed it (`core::search`), in the node's redb database; and the scan of
//! this node's own public entries that a feeder sends.
//!
//! Tables (never replicated; additive, so no schema bump: an older binary ignores them):
//! - `search_entries` (origin hex, kind, id) → `StoredEntry` JSON
//! - `search_terms` (term, post id, origin hex) → () — post ids sort by time
//! - `search_handles` (handle, origin hex, user id) → ()
//! - `search_origins` origin hex → `OriginRow` JSON: region, digest, generation, last
//!   confirmation
//!
//! Every method is one transaction. Limits: `ENTRIES_PER_ORIGIN_MAX` per origin,
//! `ORIGINS_MAX` origins; past them entries are skipped (and counted), never stored.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{decode, encode, live, Store, StoreError, StoreResult, KEY_MAX, POSTS, POSTS_BY_AUTHOR, USERS};
use crate::core::model::{NodeId, Post, User, Visibility};
use crate::core::region::Region;
use crate::core::search::{Digest, Entry, EntryKey, Kind, Origin, PublicPost, PublicUser};

pub(super) const SEARCH_ENTRIES: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("search_entries");
pub(super) const SEARCH_TERMS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("search_terms");
pub(super) const SEARCH_HANDLES: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("search_handles");
pub(super) const SEARCH_ORIGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("search_origins");

/// Entries kept per origin (a household node has far fewer public posts).
pub const ENTRIES_PER_ORIGIN_MAX: u64 = 10_000;
/// Origins kept (nodes under one aggregator, directly or through lower aggregators).
pub const ORIGINS_MAX: usize = 4_096;
/// Index rows a search looks at before it stops.
const SEARCH_SCAN_MAX: usize = 20_000;
/// Stored format of entries and origin rows.
const FORMAT: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEntry {
    format: u8,
    generation: u64,
    hash: u64,
    entry: Entry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OriginRow {
    format: u8,
    region: String,
    digest: Digest,
    /// The last full replacement's generation; entries put by changes take it too.
    generation: u64,
    confirmed_at_ms: u64,
}

/// What one feed message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub put: u64,
    pub deleted: u64,
    /// Skipped: past `ENTRIES_PER_ORIGIN_MAX`.
    pub skipped: u64,
}

/// A search hit: the entry and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<T> {
    pub origin: Origin,
    pub item: T,
}

/// The aggregated index over a node's store.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    store: std::sync::Arc<Store>,
}

fn origin_key(origin: NodeId) -> String {
    origin.to_string()
}

impl SearchIndex {
    /// Creates the tables if they do not exist yet.
    pub fn open(store: std::sync::Arc<Store>) -> StoreResult<SearchIndex> {
        let txn = store.db.begin_write()?;
        txn.open_table(SEARCH_ENTRIES)?;
        txn.open_table(SEARCH_TERMS)?;
        txn.open_table(SEARCH_HANDLES)?;
        txn.open_table(SEARCH_ORIGINS)?;
        txn.commit()?;
        Ok(SearchIndex { store })
    }

    /// Puts `upserts` and deletes `deletes` of `origin`; a new origin past
    /// `ORIGINS_MAX` is refused.
    pub fn apply_changes(
        &self,
        origin: &Origin,
        upserts: &[Entry],
        deletes: &[EntryKey],
        now_ms: u64,
    ) -> StoreResult<Applied> {
        self.write(origin, now_ms, |tables, row, applied| {
            let generation = row.generation;
            for key in deletes {
                applied.deleted += u64::from(tables.delete(origin.id, row, key)?);
            }
            for entry in upserts {
                tables.put(origin, row, entry, generation, applied)?;
            }
            Ok(())
        })
    }

    /// One page of `origin`'s full set under `generation`; the `last` page removes
    /// every entry of the origin that no page of this generation carried.
    pub fn replace_page(
        &self,
        origin: &Origin,
        generation: u64,
        entries: &[Entry],
        last: bool,
        now_ms: u64,
    ) -> StoreResult<Applied> {
        self.write(origin, now_ms, |tables, row, applied| {
            for entry in entries {
                tables.put(origin, row, entry, generation, applied)?;
            }
            if last {
                let key = origin_key(origin.id);
                let mut stale = Vec::new();
                for item in tables.entries.range((key.as_str(), "", "")..(key.as_str(), KEY_MAX, ""))? {
                    let (_, bytes) = item?;
                    let stored: StoredEntry = decode(bytes.value())?;
                    if stored.generation != generation {
                        stale.push(stored.entry.key());
                    }
                }
                for entry_key in &stale {
                    applied.deleted += u64::from(tables.delete(origin.id, row, entry_key)?);
                }
                row.generation = generation;
            }
            Ok(())
        })
    }

    /// Records that a feeder's digest of `origin` matched: the origin is current.
    pub fn confirm(&self, origin: NodeId, now_ms: u64) -> StoreResult<()> {
        let txn = self.store.db.begin_write()?;
        {
            let mut origins = txn.open_table(SEARCH_ORIGINS)?;
            let key = origin_key(origin);
            let row = origins.get(key.as_str())?.map(|bytes| decode::<OriginRow>(bytes.value())).transpose()?;
            if let Some(mut row) = row {
                row.confirmed_at_ms = now_ms;
                origins.insert(key.as_str(), encode(&row).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every origin held, with its region and digest.
    pub fn origins(&self) -> StoreResult<Vec<(Origin, Digest)>> {
        let txn = self.store.db.begin_read()?;
        let origins = txn.open_table(SEARCH_ORIGINS)?;
        let mut all = Vec::new();
        for item in origins.iter()? {
            let (key, bytes) = item?;
            let row: OriginRow = decode(bytes.value())?;
            let id = key.value().parse().map_err(|_| StoreError::Corrupt(format!("origin {:?}", key.value())))?;
            all.push((Origin { id, region: row.region }, row.digest));
        }
        Ok(all)
    }

    /// The digest of one origin (empty when it is not held).
    pub fn digest(&self, origin: NodeId) -> StoreResult<Digest> {
        let txn = self.store.db.begin_read()?;
        let origins = txn.open_table(SEARCH_ORIGINS)?;
        let row =
            origins.get(origin_key(origin).as_str())?.map(|bytes| decode::<OriginRow>(bytes.value())).transpose()?;
        Ok(row.map(|row| row.digest).unwrap_or_default())
    }

    /// Every entry of `origin` (at most `ENTRIES_PER_ORIGIN_MAX`).
    pub fn entries_of(&self, origin: NodeId) -> StoreResult<Vec<Entry>> {
        let txn = self.store.db.begin_read()?;
        let entries = txn.open_table(SEARCH_ENTRIES)?;
        let key = origin_key(origin);
        let mut all = Vec::new();
        for item in entries.range((key.as_str(), "", "")..(key.as_str(), KEY_MAX, ""))? {
            let (_, bytes) = item?;
            all.push(decode::<StoredEntry>(bytes.value())?.entry);
        }
        Ok(all)
    }

    /// Removes origins no feeder confirmed, changed or replaced since `before_ms`
    /// (a node that left, or whose feeder now feeds elsewhere). Returns how many.
    pub fn purge_unconfirmed(&self, before_ms: u64) -> StoreResult<usize> {
        let stale: Vec<Origin> = {
            let txn = self.store.db.begin_read()?;
            let origins = txn.open_table(SEARCH_ORIGINS)?;
            let mut stale = Vec::new();
            for item in origins.iter()? {
                let (key, bytes) = item?;
                let row: OriginRow = decode(bytes.value())?;
                if row.confirmed_at_ms < before_ms {
                    if let Ok(id) = key.value().parse() {
                        stale.push(Origin { id, region: row.region });
                    }
                }
            }
            stale
        };
        for origin in &stale {
            let keys: Vec<EntryKey> = self.entries_of(origin.id)?.iter().map(Entry::key).collect();
            self.write(origin, before_ms, |tables, row, applied| {
                for key in &keys {
                    applied.deleted += u64::from(tables.delete(origin.id, row, key)?);
                }
                Ok(())
            })?;
            let txn = self.store.db.begin_write()?;
            txn.open_table(SEARCH_ORIGINS)?.remove(origin_key(origin.id).as_str())?;
            txn.commit()?;
        }
        Ok(stale.len())
    }

    /// Public posts holding every term, from origins `within` covers (all when
    /// `None`), newest first.
    pub fn search_posts(
        &self,
        terms: &[String],
        within: Option<&Region>,
        limit: usize,
    ) -> StoreResult<Vec<Hit<PublicPost>>> {
        let Some((first, rest)) = terms.split_first() else { return Ok(Vec::new()) };
        let txn = self.store.db.begin_read()?;
        let index = txn.open_table(SEARCH_TERMS)?;
        let entries = txn.open_table(SEARCH_ENTRIES)?;
        let origins = txn.open_table(SEARCH_ORIGINS)?;
        let mut hits = Vec::new();
        let first = first.as_str();
        for item in index.range((first, "", "")..(first, KEY_MAX, ""))?.rev().take(SEARCH_SCAN_MAX) {
            if hits.len() == limit {
                break;
            }
            let (key, _) = item?;
            let (_, post_id, origin) = key.value();
            let mut matches_all = true;
            for term in rest {
                matches_all &= index.get((term.as_str(), post_id, origin))?.is_some();
            }
            if !matches_all {
                continue;
            }
            let Some(origin) = origin_within(&origins, origin, within)? else { continue };
            let origin_hex = origin.id.to_string();
            if let Some(bytes) = entries.get((origin_hex.as_str(), Kind::Post.as_str(), post_id))? {
                if let Entry::Post(post) = decode::<StoredEntry>(bytes.value())?.entry {
                    hits.push(Hit { origin, item: post });
                }
            }
        }
        Ok(hits)
    }

    /// Profiles whose handle starts with `prefix`, from origins `within` covers.
    pub fn search_users(
        &self,
        prefix: &str,
        within: Option<&Region>,
        limit: usize,
    ) -> StoreResult<Vec<Hit<PublicUser>>> {
        let txn = self.store.db.begin_read()?;
        let index = txn.open_table(SEARCH_HANDLES)?;
        let entries = txn.open_table(SEARCH_ENTRIES)?;
        let origins = txn.open_table(SEARCH_ORIGINS)?;
        let mut hits = Vec::new();
        for item in index.range((prefix, "", "")..)?.take(SEARCH_SCAN_MAX) {
            let (key, _) = item?;
            let (handle, origin, user_id) = key.value();
            if !handle.starts_with(prefix) || hits.len() == limit {
                break;
            }
            let Some(origin) = origin_within(&origins, origin, within)? else { continue };
            let origin_hex = origin.id.to_string();
            if let Some(bytes) = entries.get((origin_hex.as_str(), Kind::User.as_str(), user_id))? {
                if let Entry::User(user) = decode::<StoredEntry>(bytes.value())?.entry {
                    hits.push(Hit { origin, item: user });
                }
            }
        }
        Ok(hits)
    }

    fn write(
        &self,
        origin: &Origin,
        now_ms: u64,
        body: impl FnOnce(&mut Tables<'_>, &mut OriginRow, &mut Applied) -> StoreResult<()>,
    ) -> StoreResult<Applied> {
        self.store.ensure_space(0)?;
        let txn = self.store.db.begin_write()?;
        let mut applied = Applied::default();
        {
            let mut origins = txn.open_table(SEARCH_ORIGINS)?;
            let key = origin_key(origin.id);
            let existing = origins.get(key.as_str())?.map(|bytes| decode::<OriginRow>(bytes.value())).transpose()?;
            let mut row = match existing {
                Some(row) => row,
                None if origins.len()? as usize >= ORIGINS_MAX => {
                    return Err(StoreError::Corrupt(format!(
                        "the search index holds {ORIGINS_MAX} origins already; origin {} is refused",
                        origin.id
                    )))
                }
                None => OriginRow {
                    format: FORMAT,
                    region: origin.region.clone(),
                    digest: Digest::default(),
                    generation: 0,
                    confirmed_at_ms: now_ms,
                },
            };
            if row.region != origin.region {
                // A node that moved: every hash includes the region, so the feeder
                // sends everything again; until then the old entries say the old place.
                row.region = origin.region.clone();
            }
            let mut tables = Tables {
                entries: txn.open_table(SEARCH_ENTRIES)?,
                terms: txn.open_table(SEARCH_TERMS)?,
                handles: txn.open_table(SEARCH_HANDLES)?,
            };
            body(&mut tables, &mut row, &mut applied)?;
            row.confirmed_at_ms = row.confirmed_at_ms.max(now_ms);
            origins.insert(key.as_str(), encode(&row).as_slice())?;
        }
        txn.commit()?;
        Ok(applied)
    }
}

/// The origin of an index row if `within` covers its region (or is `None`).
fn origin_within(
    origins: &impl ReadableTable<&'static str, &'static [u8]>,
    origin: &str,
    within: Option<&Region>,
) -> StoreResult<Option<Origin>> {
    let Some(bytes) = origins.get(origin)? else { return Ok(None) };
    let row: OriginRow = decode(bytes.value())?;
    let covered = match (within, Region::parse(&row.region)) {
        (None, _) => true,
        (Some(prefix), Ok(region)) => prefix.covers(&region),
        (Some(_), Err(_)) => false,
    };
    let Ok(id) = origin.parse() else { return Ok(None) };
    Ok(covered.then_some(Origin { id, region: row.region }))
}

struct Tables<'txn> {
    entries: redb::Table<'txn, (&'static str, &'static str, &'static str), &'static [u8]>,
    terms: redb::Table<'txn, (&'static str, &'static str, &'static str), ()>,
    handles: redb::Table<'txn, (&'static str, &'static str, &'static str), ()>,
}

impl Tables<'_> {
    fn put(
        &mut self,
        origin: &Origin,
        row: &mut OriginRow,
        entry: &Entry,
        generation: u64,
        applied: &mut Applied,
    ) -> StoreResult<()> {
        let key = entry.key();
        let existed = self.delete(origin.id, row, &key)?;
        if !existed && row.digest.count >= ENTRIES_PER_ORIGIN_MAX {
            applied.skipped += 1;
            return Ok(());
        }
        let hash = entry.hash(&origin.region);
        let origin_hex = origin_key(origin.id);
        let stored = StoredEntry { format: FORMAT, generation, hash, entry: entry.clone() };
        self.entries.insert((origin_hex.as_str(), key.0.as_str(), key.1.as_str()), encode(&stored).as_slice())?;
        match entry {
            Entry::Post(post) => {
                for term in entry.terms() {
                    self.terms.insert((term.as_str(), post.id.as_str(), origin_hex.as_str()), ())?;
                }
            }
            Entry::User(user) => {
                self.handles.insert((user.handle.as_str(), origin_hex.as_str(), user.user_id.as_str()), ())?;
            }
        }
        row.digest.add(hash);
        applied.put += 1;
        Ok(())
    }

    /// Removes an entry and its index rows; whether it was there.
    fn delete(&mut self, origin: NodeId, row: &mut OriginRow, key: &EntryKey) -> StoreResult<bool> {
        let origin_hex = origin_key(origin);
        let removed = self.entries.remove((origin_hex.as_str(), key.0.as_str(), key.1.as_str()))?;
        let Some(bytes) = removed else { return Ok(false) };
        let stored: StoredEntry = decode(bytes.value())?;
        drop(bytes);
        match &stored.entry {
            Entry::Post(post) => {
                for term in stored.entry.terms() {
                    self.terms.remove((term.as_str(), post.id.as_str(), origin_hex.as_str()))?;
                }
            }
            Entry::User(user) => {
                self.handles.remove((user.handle.as_str(), origin_hex.as_str(), user.user_id.as_str()))?;
            }
        }
        row.digest.remove(stored.hash);
        Ok(true)
    }
}

impl Store {
    /// The public entries this node feeds for its users (those whose home is `home`,
    /// or unknown): each profile and each public post, newest posts first, at most
    /// `max` in all. Followers-only and private posts are never among them.
    pub fn public_entries(&self, home: NodeId, max: usize) -> StoreResult<Vec<Entry>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let index = txn.open_table(POSTS_BY_AUTHOR)?;
        let posts = txn.open_table(POSTS)?;
        let moderation = txn.open_table(super::POST_MODERATION)?;
        let mut entries = Vec::new();
        for item in users.iter()? {
            let (_, bytes) = item?;
            let Some(user) = live::<User>(bytes.value())? else { continue };
            if user.home.is_some_and(|node| node != home) {
                continue;
            }
            if entries.len() >= max {
                break;
            }
            entries.push(Entry::User(PublicUser {
                user_id: user.user_id.clone(),
                handle: user.handle.clone(),
                display_name: user.display_name.clone(),
                bio: user.bio.clone(),
            }));
            let user_id = user.user_id.as_str();
            for item in index.range((user_id, "")..(user_id, KEY_MAX))?.rev() {
                if entries.len() >= max {
                    break;
                }
                let (key, _) = item?;
                let post = match posts.get(key.value().1)? {
                    Some(bytes) => live::<Post>(bytes.value())?,
                    None => None,
                };
                let Some(post) = post.filter(|post| post.visibility == Visibility::Public) else { continue };
                // A post an admin hid is no longer fed (aggregators drop it on the next change).
                if super::safety::hidden_in(&moderation, &post.author_id, &post.post_id)? {
                    continue;
                }
                entries.push(Entry::Post(public_post(&post, &user.handle)));
            }
        }
        Ok(entries)
    }
}

/// A public post's searchable fields (the caller checks it is public).
pub fn public_post(post: &Post, author_handle: &str) -> PublicPost {
    PublicPost {
        id: post.post_id.clone(),
        author_id: post.author_id.clone(),
        author_handle: author_handle.to_owned(),
        caption: post.caption.clone(),
        tags: post.tags.clone(),
        media: post.media.clone(),
        created_at: post.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Admission;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgenode-search-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn post(id: &str, caption: &str) -> Entry {
        crate::core::search::sample_post(id, caption)
    }

    fn user(id: &str, handle: &str) -> Entry {
        Entry::User(PublicUser {
            user_id: id.to_owned(),
            handle: handle.to_owned(),
            display_name: String::new(),
            bio: String::new(),
        })
    }

    fn origin(id: u64, region: &str) -> Origin {
        Origin { id: NodeId(id), region: region.to_owned() }
    }

    fn found(index: &SearchIndex, query: &str, within: Option<&str>) -> Vec<String> {
        let within = within.map(|text| Region::parse(text).unwrap());
        let terms = crate::core::text::query_terms(query);
        index.search_posts(&terms, within.as_ref(), 20).unwrap().into_iter().map(|hit| hit.item.id).collect()
    }

    #[test]
    fn puts_replaces_deletes_and_searches_by_term_and_region() {
        let dir = temp_dir("basic");
        let store = std::sync::Arc::new(Store::open(&dir).unwrap());
        let index = SearchIndex::open(store).unwrap();
        let (a, b) = (origin(1, "earth/x/a"), origin(2, "earth/xy"));
        index.apply_changes(&a, &[post("p1", "the #harbour at dawn"), user("u1", "ada")], &[], 10).unwrap();
        index.apply_changes(&b, &[post("p2", "harbour lights")], &[], 10).unwrap();
        assert_eq!(found(&index, "harbour", None), vec!["p2", "p1"], "newest id first");
        assert_eq!(found(&index, "#harbour dawn", None), vec!["p1"], "every term must match");
        assert_eq!(found(&index, "harbour", Some("earth/x")), vec!["p1"], "earth/x does not cover earth/xy");
        assert_eq!(found(&index, "harbour", Some("earth/xy")), vec!["p2"]);
        let users = index.search_users("ad", Some(&Region::parse("earth").unwrap()), 10).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].origin, a);

        // Replacing an entry re-indexes it; deleting removes it everywhere.
        index.apply_changes(&a, &[post("p1", "sunset at the beach")], &[], 11).unwrap();
        assert_eq!(found(&index, "harbour", None), vec!["p2"]);
        assert_eq!(found(&index, "sunset", None), vec!["p1"]);
        let digest_before = index.digest(a.id).unwrap();
        assert_eq!(digest_before.count, 2);
        let applied = index.apply_changes(&a, &[], &[(Kind::Post, "p1".to_owned())], 12).unwrap();
        assert_eq!(applied.deleted, 1);
        assert_eq!(found(&index, "sunset", None), Vec::<String>::new());
        assert_eq!(index.digest(a.id).unwrap().count, 1);
        assert_eq!(index.digest(a.id).unwrap(), Digest::of(&[user("u1", "ada").hash(&a.region)]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_replacement_in_pages_drops_what_it_did_not_carry() {
        let dir = temp_dir("replace");
        let store = std::sync::Arc::new(Store::open(&dir).unwrap());
        let index = SearchIndex::open(store).unwrap();
        let a = origin(1, "earth/x/a");
        index.apply_changes(&a, &[post("p1", "one"), post("p2", "two"), post("p3", "three")], &[], 10).unwrap();
        index.replace_page(&a, 7, &[post("p2", "two")], false, 20).unwrap();
        index.replace_page(&a, 7, &[post("p4", "four")], true, 20).unwrap();
        let mut ids: Vec<String> = index.entries_of(a.id).unwrap().iter().map(|entry| entry.id().to_owned()).collect();
        ids.sort();
        assert_eq!(ids, vec!["p2", "p4"]);
        assert_eq!(found(&index, "one", None), Vec::<String>::new());
        let hashes: Vec<u64> = [post("p2", "two"), post("p4", "four")].iter().map(|e| e.hash(&a.region)).collect();
        assert_eq!(index.digest(a.id).unwrap(), Digest::of(&hashes));
        // Origins nobody confirmed lately go.
        assert_eq!(index.purge_unconfirmed(15).unwrap(), 0);
        assert_eq!(index.purge_unconfirmed(25).unwrap(), 1);
        assert!(index.origins().unwrap().is_empty());
        assert_eq!(found(&index, "two", None), Vec::<String>::new());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_origin_keeps_at_most_its_share() {
        let dir = temp_dir("bounded");
        let store = std::sync::Arc::new(Store::open(&dir).unwrap());
        let index = SearchIndex::open(store).unwrap();
        let a = origin(1, "earth/x/a");
        let many: Vec<Entry> = (0..ENTRIES_PER_ORIGIN_MAX + 3).map(|n| user(&format!("u{n}"), "bob")).collect();
        let applied = index.apply_changes(&a, &many, &[], 1).unwrap();
        assert_eq!((applied.put, applied.skipped), (ENTRIES_PER_ORIGIN_MAX, 3));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_public_posts_of_home_users_are_fed() {
        let dir = temp_dir("own");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
        store.create_post(&ada.user_id, "public #sea".into(), vec![], Visibility::Public).unwrap();
        store.create_post(&ada.user_id, "for followers".into(), vec![], Visibility::Followers).unwrap();
        store.create_post(&ada.user_id, "private".into(), vec![], Visibility::Private).unwrap();
        let entries = store.public_entries(store.node_id(), 100).unwrap();
        let captions: Vec<&str> = entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Post(post) => Some(post.caption.as_str()),
                Entry::User(_) => None,
            })
            .collect();
        assert_eq!(captions, vec!["public #sea"]);
        assert_eq!(entries.len(), 2, "the profile and the public post");
        assert!(store.public_entries(NodeId(12345), 100).unwrap().is_empty(), "another node's users are not ours");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
