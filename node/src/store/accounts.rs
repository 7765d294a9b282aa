//! Accounts: the node's claim, users and their handles, credentials, sessions,
//! invites, and the quotas an admin set for a user.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, hex, live, pair_key, Store, StoreError, StoreResult, Tx, CREDENTIALS, FOLLOWERS, FOLLOWS, HANDLES,
    INVITES, KEY_MAX, MEDIA_OWNERS, META, SESSIONS, USERS,
};
use crate::core::model::{Credential, Follow, Invite, MediaOwner, Record, User};
use crate::core::replication::{RecordKey, Table};
use crate::os;

/// What lets a new account in.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// The first account, with the claim code: becomes admin. Refused once the node
    /// holds any account, its own or a sibling's.
    Claim,
    /// An invite code in its normalised form (upper case, no hyphens or spaces, I and
    /// L read as 1, O as 0: what the API compares codes in).
    Invite(&'a str),
    Open,
}

/// A profile edit: each field `None` is left as it is; `avatar: Some(None)` removes
/// the avatar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileEdit {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub avatar: Option<Option<String>>,
    /// Locking keeps the followers the account has; unlocking approves every
    /// pending follow request (`social::approve_unanswered_follows`).
    pub locked: Option<bool>,
}

/// Crockford's base32: digits and letters without I, L, O and U, so a code read
/// aloud or copied by hand has no look-alikes.
const INVITE_CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new invite code in its normalised form (`Store::INVITE_CODE_SYMBOLS` symbols, no
/// hyphen).
fn new_invite_code() -> String {
    const BITS_PER_SYMBOL: usize = 5;
    const _: () = assert!(Store::INVITE_CODE_SYMBOLS * BITS_PER_SYMBOL <= u64::BITS as usize);
    let random = u64::from_le_bytes(os::random_bytes::<8>());
    (0..Store::INVITE_CODE_SYMBOLS)
        .map(|index| INVITE_CODE_ALPHABET[((random >> (index * BITS_PER_SYMBOL)) & 0b1_1111) as usize] as char)
        .collect()
}

/// The keys an invite with the normalised `code` may be stored under. New invites are
/// keyed by their normalised code; those made before short codes were 20 lower-case
/// hex digits, keyed as made, and the normalised form of such a code is the same
/// digits in upper case (hex has no I, L or O).
fn invite_keys(code: &str) -> impl Iterator<Item = String> + '_ {
    let before_short_codes = code.to_ascii_lowercase();
    let second = (before_short_codes != code).then_some(before_short_codes);
    std::iter::once(code.to_owned()).chain(second)
}

/// Per-user quota overrides an admin set; `None` is the node's default. Local to this
/// node (not a replicated record: the record machinery has no table for it), keyed
/// by user id, created on first write.
pub(super) const USER_QUOTAS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("user_quotas");

/// What an admin set for one user; `None` fields fall back to the node's `[limits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOverride {
    pub storage_bytes_max: Option<u64>,
    pub upload_bytes_per_hour_max: Option<u64>,
}

/// A session as this node keeps it (sessions are local to the node that started
/// them; what ends them everywhere, the credential's epoch and `disabled`, replicates).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    user_id: String,
    created_at: u64,
    /// Its last use as recorded (coarsely); 0 in sessions from before it was kept,
    /// which count from `created_at`.
    #[serde(default)]
    last_seen_ms: u64,
    /// The credential's `session_epoch` when it started; an older one is signed out.
    #[serde(default)]
    epoch: u64,
    /// The client's `User-Agent` (shortened), so a person can tell their sessions apart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    user_agent: String,
}

impl Session {
    fn info(&self, token_hash: &[u8]) -> SessionInfo {
        SessionInfo {
            session_id: session_id(token_hash),
            user_id: self.user_id.clone(),
            created_at_ms: self.created_at,
            last_seen_ms: self.last_seen_ms.max(self.created_at),
            last_seen_recorded: self.last_seen_ms != 0,
            epoch: self.epoch,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A session's public id: the first 16 bytes of its token's hash, in hex. Knowing it
/// does not let anyone act as the user (that takes the token itself).
fn session_id(token_hash: &[u8]) -> String {
    hex(&token_hash[..token_hash.len().min(16)])
}

/// Characters of a `User-Agent` kept with a session.
const USER_AGENT_CHARS_MAX: usize = 120;

/// One session of a user, as listed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub user_id: String,
    pub created_at_ms: u64,
    pub last_seen_ms: u64,
    /// `false` for a session from before last use was recorded: its `last_seen_ms`
    /// is when it began, which says nothing of its use.
    pub last_seen_recorded: bool,
    pub epoch: u64,
    pub user_agent: String,
}

/// A bearer's session with its user and credential, read in one transaction.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: SessionInfo,
    pub user: User,
    /// `None` only while a replicated user's credential has not arrived yet.
    pub credential: Option<Credential>,
}

/// One line of the admin's list of users.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub user: User,
    pub disabled: bool,
    /// The latest use of any of the user's sessions on this node (coarse), if any.
    pub last_seen_ms: Option<u64>,
}

/// What a change to a credential decided: write it (a replicated write), or leave
/// the record as it was; either way with an answer.
#[derive(Debug)]
pub enum CredentialUpdate<R> {
    Write(R),
    Keep(R),
}

/// What `Store::delete_account` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountDeletion {
    /// Every record of the user's shard is a tombstone now, and so is every follow of
    /// them; `records` counts the tombstones written (follows of them included).
    /// `posts` are the ids of the posts deleted (fan-out tells remote followers).
    Deleted { records: u64, follows_of_them: u64, media_removed: usize, posts: Vec<String> },
    /// This node holds no live account with that id.
    NotHere,
    /// The account is the last admin this node holds: nothing was written.
    LastAdmin,
}

/// Writes a tombstone of the record `key` in `shard`, whatever its table.
fn tombstone(tx: &mut Tx<'_>, shard: &str, key: &RecordKey) -> StoreResult<()> {
    let version = tx.version();
    super::replica::write_tombstone(tx.txn, shard, key, version)?;
    tx.written.push(crate::core::replication::VersionedKey {
        shard: crate::core::replication::ShardId(shard.to_owned()),
        key: key.clone(),
        version,
    });
    Ok(())
}

impl Store {
    /// Symbols of a new invite code: 50 random bits, shown as `XXXXX-XXXXX`. Guesses
    /// are throttled per address and each costs a password hash (api/throttle.rs).
    pub const INVITE_CODE_SYMBOLS: usize = 10;
    /// `created_by` of an invite made with the local control token (the CLI on the
    /// box): no user made it.
    pub const INVITE_BY_CONTROL_TOKEN: &'static str = "";
    /// Open invites `open_invites` lists at most (the newest).
    pub const OPEN_INVITES_LISTED_MAX: usize = 1000;

    // ----- node: who claimed it, how many accounts -----

    /// The user id of the admin who claimed the node, if any.
    pub fn claimed_by(&self) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let claimed_by = meta.get("claimed_by")?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        Ok(claimed_by)
    }

    /// Accounts this node holds, deleted ones (whose handles stay reserved) left out.
    pub fn user_count(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let mut count = 0;
        for entry in txn.open_table(HANDLES)?.iter()? {
            let (_, user_id) = entry?;
            if let Some(bytes) = users.get(user_id.value())? {
                count += u64::from(live::<User>(bytes.value())?.is_some());
            }
        }
        Ok(count)
    }

    /// Whether the node has an owner: it was claimed, or it holds any account (a
    /// sibling of a claimed neighbourhood holds the accounts replicated to it, and is
    /// no unclaimed node even though nobody claimed it).
    pub fn claimed_or_has_accounts(&self) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let claimed = txn.open_table(META)?.get("claimed_by")?.is_some();
        Ok(claimed || !txn.open_table(HANDLES)?.is_empty()?)
    }

    // ----- accounts -----

    /// Creates an account. `how` says what admits it: the claim (first admin; refused
    /// with `AlreadyClaimed` once any account is here), an invite code (consumed in the
    /// same transaction), or open registration.
    pub fn create_user(&self, handle: &str, password_hash: String, how: Admission<'_>) -> StoreResult<User> {
        self.write(|tx| {
            let version = tx.version();
            let user_id = hex(&os::random_bytes::<16>());
            let user = User {
                user_id: user_id.clone(),
                handle: handle.to_owned(),
                display_name: handle.to_owned(),
                bio: String::new(),
                admin: matches!(how, Admission::Claim),
                created_at: version.at.physical_ms(),
                home: Some(self.node_id),
                avatar: None,
                locked: false,
            };
            {
                if tx.txn.open_table(HANDLES)?.get(handle)?.is_some() {
                    return Err(StoreError::HandleTaken);
                }
                match how {
                    Admission::Claim => {
                        // Checked here too, not only by the API: replication may bring
                        // a sibling's accounts in between.
                        let has_accounts = !tx.txn.open_table(HANDLES)?.is_empty()?;
                        let mut meta = tx.txn.open_table(META)?;
                        if has_accounts || meta.get("claimed_by")?.is_some() {
                            return Err(StoreError::AlreadyClaimed);
                        }
                        meta.insert("claimed_by", user_id.as_bytes())?;
                    }
                    Admission::Invite(code) => {
                        let mut invites = tx.txn.open_table(INVITES)?;
                        let mut found = None;
                        for key in invite_keys(code) {
                            let invite = match invites.get(key.as_str())? {
                                Some(bytes) => live::<Invite>(bytes.value())?,
                                None => None,
                            };
                            if let Some(invite) = invite {
                                found = Some((key, invite));
                                break;
                            }
                        }
                        let Some((key, mut invite)) = found.filter(|(_, invite)| invite.used_by.is_none()) else {
                            return Err(StoreError::BadInvite);
                        };
                        invite.used_by = Some(user_id.clone());
                        invites.insert(key.as_str(), encode(&Record::live(version, invite)).as_slice())?;
                    }
                    Admission::Open => {}
                }
                let shard = user_id.as_str();
                let user_key = RecordKey::new(Table::User, user_id.as_str());
                tx.write_record(shard, &user_key, &Record::live(version, user.clone()))?;
                // Its own version: a version names one write (the replication log needs
                // strictly increasing versions).
                let version = tx.version();
                let credential = Credential::new(password_hash);
                let credential_key = RecordKey::new(Table::Credential, user_id.as_str());
                tx.write_record(shard, &credential_key, &Record::live(version, credential))?;
            }
            Ok(user)
        })
    }

    pub fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let user = users.get(user_id)?;
        user.map(|bytes| live::<User>(bytes.value())).transpose().map(Option::flatten)
    }

    pub fn user_by_handle(&self, handle: &str) -> StoreResult<Option<User>> {
        let user_id = {
            let txn = self.db.begin_read()?;
            let handles = txn.open_table(HANDLES)?;
            let user_id = handles.get(handle)?.map(|id| id.value().to_owned());
            user_id
        };
        match user_id {
            Some(user_id) => self.user(&user_id),
            None => Ok(None),
        }
    }

    pub fn credential(&self, user_id: &str) -> StoreResult<Option<Credential>> {
        let txn = self.db.begin_read()?;
        let credentials = txn.open_table(CREDENTIALS)?;
        let credential = credentials.get(user_id)?;
        credential.map(|bytes| live::<Credential>(bytes.value())).transpose().map(Option::flatten)
    }

    /// Handles starting with `prefix`, in order.
    pub fn users_with_handle_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<User>> {
        let user_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let handles = txn.open_table(HANDLES)?;
            let mut user_ids = Vec::new();
            for entry in handles.range(prefix..)? {
                let (handle, user_id) = entry?;
                if !handle.value().starts_with(prefix) || user_ids.len() == limit {
                    break;
                }
                user_ids.push(user_id.value().to_owned());
            }
            user_ids
        };
        let mut users = Vec::new();
        for user_id in user_ids {
            users.extend(self.user(&user_id)?);
        }
        Ok(users)
    }

    /// Starts a session of `user_id` under the credential's current epoch (local to
    /// this node: not replicated).
    pub fn create_session(&self, token_hash: &[u8], user_id: &str, user_agent: &str) -> StoreResult<()> {
        let now_ms = os::now_ms();
        let txn = self.db.begin_write()?;
        {
            let credential = txn.open_table(CREDENTIALS)?.get(user_id)?.map(|bytes| live::<Credential>(bytes.value()));
            let epoch = credential.transpose()?.flatten().map_or(0, |credential| credential.session_epoch);
            let session = Session {
                user_id: user_id.to_owned(),
                created_at: now_ms,
                last_seen_ms: now_ms,
                epoch,
                user_agent: user_agent.chars().take(USER_AGENT_CHARS_MAX).collect(),
            };
            txn.open_table(SESSIONS)?.insert(token_hash, encode(&session).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The session with this token hash, its user and their credential, in one read
    /// transaction; `None` for an unknown token (or a user this node no longer holds).
    /// Whether the session still counts (idle, epoch, disabled) is the caller's call.
    pub fn signed_in(&self, token_hash: &[u8]) -> StoreResult<Option<SignedIn>> {
        let txn = self.db.begin_read()?;
        let Some(session) = txn.open_table(SESSIONS)?.get(token_hash)?.map(|bytes| decode::<Session>(bytes.value()))
        else {
            return Ok(None);
        };
        let session = session?.info(token_hash);
        let user = match txn.open_table(USERS)?.get(session.user_id.as_str())? {
            Some(bytes) => live::<User>(bytes.value())?,
            None => None,
        };
        let Some(user) = user else { return Ok(None) };
        let credential = match txn.open_table(CREDENTIALS)?.get(session.user_id.as_str())? {
            Some(bytes) => live::<Credential>(bytes.value())?,
            None => None,
        };
        Ok(Some(SignedIn { session, user, credential }))
    }

    /// A user and their credential, in one read transaction.
    pub fn user_with_credential(&self, user_id: &str) -> StoreResult<Option<(User, Option<Credential>)>> {
        let txn = self.db.begin_read()?;
        let user = match txn.open_table(USERS)?.get(user_id)? {
            Some(bytes) => live::<User>(bytes.value())?,
            None => None,
        };
        let Some(user) = user else { return Ok(None) };
        let credential = match txn.open_table(CREDENTIALS)?.get(user_id)? {
            Some(bytes) => live::<Credential>(bytes.value())?,
            None => None,
        };
        Ok(Some((user, credential)))
    }

    /// Records that the session was used at `now_ms` (callers do it coarsely: this is
    /// a write transaction).
    pub fn touch_session(&self, token_hash: &[u8], now_ms: u64) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let session = sessions.get(token_hash)?.map(|bytes| decode::<Session>(bytes.value())).transpose()?;
            if let Some(mut session) = session {
                session.last_seen_ms = session.last_seen_ms.max(now_ms);
                sessions.insert(token_hash, encode(&session).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The sessions of `user_id` on this node, the most recently used first. Reads
    /// every session of the node (sessions are keyed by token hash): fine for the
    /// sessions a household node holds, which idle expiry keeps few.
    pub fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<SessionInfo>> {
        let txn = self.db.begin_read()?;
        let mut found = Vec::new();
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (token_hash, bytes) = entry?;
            let session = decode::<Session>(bytes.value())?;
            if session.user_id == user_id {
                found.push(session.info(token_hash.value()));
            }
        }
        found.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.session_id.cmp(&b.session_id)));
        Ok(found)
    }

    /// Ends the session of `user_id` with this public id; `false` when they have none.
    pub fn delete_session_by_id(&self, user_id: &str, session_id_wanted: &str) -> StoreResult<bool> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut key = None;
            for entry in sessions.iter()? {
                let (token_hash, bytes) = entry?;
                if session_id(token_hash.value()) == session_id_wanted
                    && decode::<Session>(bytes.value())?.user_id == user_id
                {
                    key = Some(token_hash.value().to_vec());
                    break;
                }
            }
            match key {
                Some(key) => sessions.remove(key.as_slice())?.is_some(),
                None => false,
            }
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Changes the credential of `user_id` in one replicated write: `change` decides
    /// whether to write. When the write raised the session epoch, the session
    /// `keep_session` (a token hash) is moved to the new epoch in the same transaction,
    /// so the caller stays signed in while every other session ends. `None` when this
    /// node holds no credential for the user.
    pub fn update_credential<R>(
        &self,
        user_id: &str,
        keep_session: Option<&[u8]>,
        change: impl FnOnce(&mut Credential) -> CredentialUpdate<R>,
    ) -> StoreResult<Option<R>> {
        self.write(|tx| {
            let stored = match tx.txn.open_table(CREDENTIALS)?.get(user_id)? {
                Some(bytes) => live::<Credential>(bytes.value())?,
                None => None,
            };
            let Some(mut credential) = stored else { return Ok(None) };
            let epoch_before = credential.session_epoch;
            let answer = match change(&mut credential) {
                CredentialUpdate::Keep(answer) => return Ok(Some(answer)),
                CredentialUpdate::Write(answer) => answer,
            };
            if let Some(token_hash) = keep_session.filter(|_| credential.session_epoch != epoch_before) {
                let mut sessions = tx.txn.open_table(SESSIONS)?;
                let session = sessions.get(token_hash)?.map(|bytes| decode::<Session>(bytes.value())).transpose()?;
                if let Some(mut session) = session.filter(|session| session.user_id == user_id) {
                    session.epoch = credential.session_epoch;
                    sessions.insert(token_hash, encode(&session).as_slice())?;
                }
            }
            let version = tx.version();
            let key = RecordKey::new(Table::Credential, user_id);
            tx.write_record(user_id, &key, &Record::live(version, credential))?;
            Ok(Some(answer))
        })
    }

    /// The id of the deleted account that held `handle` (handles of deleted accounts
    /// stay reserved), for finishing a deletion (`delete_account` again).
    pub fn deleted_user_id_by_handle(&self, handle: &str) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let Some(user_id) = txn.open_table(HANDLES)?.get(handle)?.map(|id| id.value().to_owned()) else {
            return Ok(None);
        };
        let deleted = match txn.open_table(USERS)?.get(user_id.as_str())? {
            Some(bytes) => live::<User>(bytes.value())?.is_none(),
            None => false,
        };
        Ok(deleted.then_some(user_id))
    }

    /// Deletes the account `user_id` in one replicated transaction: a tombstone for
    /// every live record of their shard (posts, likes, comments, follows, media
    /// owners, then the credential and the user), and for every follow of them by
    /// others (in the followers' shards, so follower counts drop). Their sessions on
    /// this node end in the same transaction. One transaction: a node killed midway
    /// holds the account whole or deleted, never half of it; replicas apply the
    /// tombstones like any others.
    ///
    /// The handle stays reserved (the handle index keeps it for the deleted user:
    /// `User`'s `update_indexes`), so nobody can take it to pass for them. A photo whose
    /// last live owner goes loses its media row in this transaction (`media`'s
    /// `owner_gone`) and its files right after the commit.
    ///
    /// Called again for a deleted account, it tombstones what is live in its shard
    /// since (records a replica cut off by a partition wrote while the deletion was
    /// made); `NotHere` when nothing was left.
    pub fn delete_account(&self, user_id: &str) -> StoreResult<AccountDeletion> {
        let outcome = self.write(|tx| {
            // `None`: no such account; `Some(None)`: deleted before (its leftovers,
            // written on a replica cut off while the deletion was made, go now).
            let user = match tx.txn.open_table(USERS)?.get(user_id)? {
                Some(bytes) => Some(live::<User>(bytes.value())?),
                None => None,
            };
            let Some(user) = user else { return Ok(AccountDeletion::NotHere) };
            let deleted_before = user.is_none();
            if user.is_some_and(|user| user.admin) {
                let mut other_admin = false;
                for entry in tx.txn.open_table(USERS)?.iter()? {
                    let (key, bytes) = entry?;
                    if key.value() != user_id && live::<User>(bytes.value())?.is_some_and(|other| other.admin) {
                        other_admin = true;
                        break;
                    }
                }
                if !other_admin {
                    return Ok(AccountDeletion::LastAdmin);
                }
            }
            // Read first: redb opens a table once per transaction, and writing a
            // record opens the replica index again.
            let mut live_keys = Vec::new();
            {
                let index = tx.txn.open_table(super::replica::REPLICA_INDEX)?;
                for entry in index.range((user_id, 0, 0, "")..=(user_id, u64::MAX, u8::MAX, KEY_MAX))? {
                    let (key, value) = entry?;
                    let (_, _, code, record_key) = key.value();
                    let (_, _, is_tombstone) = value.value();
                    if let Some(table) = Table::from_code(code).filter(|_| !is_tombstone) {
                        live_keys.push(RecordKey::new(table, record_key));
                    }
                }
            }
            // The user and the credential last: nothing below depends on them, and
            // they are what a reader of the shard would check first.
            live_keys.sort_by_key(|key| matches!(key.table, Table::User | Table::Credential));
            let mut records = 0;
            let mut posts = Vec::new();
            for key in &live_keys {
                if key.table == Table::Placement {
                    continue; // not a user's record
                }
                tombstone(tx, user_id, key)?;
                if key.table == Table::Post {
                    posts.push(key.key.clone());
                }
                records += 1;
            }
            let followers: Vec<String> = {
                let followers = tx.txn.open_table(FOLLOWERS)?;
                let mut found = Vec::new();
                for entry in followers.range((user_id, "")..(user_id, KEY_MAX))? {
                    found.push(entry?.0.value().1.to_owned());
                }
                found
            };
            let mut follows_of_them = 0;
            for follower in &followers {
                let live_follow = match tx.txn.open_table(FOLLOWS)?.get((follower.as_str(), user_id))? {
                    Some(bytes) => live::<Follow>(bytes.value())?.is_some(),
                    None => false,
                };
                if live_follow {
                    let key = RecordKey::new(Table::Follow, pair_key(follower, user_id));
                    tombstone(tx, follower, &key)?;
                    follows_of_them += 1;
                }
            }
            let sessions: Vec<Vec<u8>> = {
                let sessions = tx.txn.open_table(SESSIONS)?;
                let mut found = Vec::new();
                for entry in sessions.iter()? {
                    let (token_hash, bytes) = entry?;
                    if decode::<Session>(bytes.value())?.user_id == user_id {
                        found.push(token_hash.value().to_vec());
                    }
                }
                found
            };
            let mut session_table = tx.txn.open_table(SESSIONS)?;
            for token_hash in &sessions {
                session_table.remove(token_hash.as_slice())?;
            }
            drop(session_table);
            tx.txn.open_table(super::media::USER_STORAGE)?.remove(user_id)?;
            if deleted_before && records + follows_of_them == 0 {
                return Ok(AccountDeletion::NotHere);
            }
            Ok(AccountDeletion::Deleted {
                records: records + follows_of_them,
                follows_of_them,
                media_removed: 0,
                posts,
            })
        })?;
        match outcome {
            AccountDeletion::Deleted { records, follows_of_them, posts, .. } => {
                let media_removed = self.remove_unowned_media_files()?;
                Ok(AccountDeletion::Deleted { records, follows_of_them, media_removed, posts })
            }
            other => Ok(other),
        }
    }

    /// Writes a profile edit of `user_id` in one replicated write of its User record
    /// and answers the user as written; `None` when this node holds no such user.
    /// Fields the edit leaves `None` keep their value. A new avatar must be a photo the
    /// user owns: checked in the same transaction (`UnknownMedia`, nothing written).
    /// The caller checks the text limits (`core::model::checked_display_name`, …).
    pub fn update_profile(&self, user_id: &str, edit: ProfileEdit) -> StoreResult<Option<User>> {
        self.write(|tx| {
            let stored = match tx.txn.open_table(USERS)?.get(user_id)? {
                Some(bytes) => live::<User>(bytes.value())?,
                None => None,
            };
            let Some(mut user) = stored else { return Ok(None) };
            if let Some(Some(media_id)) = &edit.avatar {
                let owned = match tx.txn.open_table(MEDIA_OWNERS)?.get((media_id.as_str(), user_id))? {
                    Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                    None => false,
                };
                if !owned {
                    return Err(StoreError::UnknownMedia(media_id.clone()));
                }
            }
            if let Some(display_name) = edit.display_name {
                user.display_name = display_name;
            }
            if let Some(bio) = edit.bio {
                user.bio = bio;
            }
            if let Some(avatar) = edit.avatar {
                user.avatar = avatar;
            }
            if let Some(locked) = edit.locked.filter(|&locked| locked != user.locked) {
                super::social::approve_unanswered_follows(tx, user_id)?;
                user.locked = locked;
            }
            let version = tx.version();
            let key = RecordKey::new(Table::User, user_id);
            tx.write_record(user_id, &key, &Record::live(version, user.clone()))?;
            Ok(Some(user))
        })
    }

    /// Whether a media item is the avatar of one of its owners (an avatar is always
    /// a photo its user owns, so only the owners need looking at): profiles are
    /// public, and so is their avatar.
    pub fn is_avatar(&self, media_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let users = txn.open_table(USERS)?;
        for entry in owners.range((media_id, "")..(media_id, KEY_MAX))? {
            let (key, owner) = entry?;
            if live::<MediaOwner>(owner.value())?.is_none() {
                continue;
            }
            let user = match users.get(key.value().1)? {
                Some(bytes) => live::<User>(bytes.value())?,
                None => None,
            };
            if user.is_some_and(|user| user.avatar.as_deref() == Some(media_id)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A page of the users this node holds (its own and its siblings'), by handle,
    /// after the handle `after`; and the handle to continue after when there is more.
    /// Last seen comes from this node's sessions (one pass over them).
    pub fn users_page(&self, after: Option<&str>, limit: usize) -> StoreResult<(Vec<UserRow>, Option<String>)> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let handles = txn.open_table(HANDLES)?;
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut page = Vec::new();
        let mut more = false;
        for entry in handles.range::<&str>((start, Bound::Unbounded))? {
            let (handle, user_id) = entry?;
            if page.len() == limit {
                more = true;
                break;
            }
            page.push((handle.value().to_owned(), user_id.value().to_owned()));
        }
        let users = txn.open_table(USERS)?;
        let credentials = txn.open_table(CREDENTIALS)?;
        let mut rows = Vec::new();
        for (_, user_id) in &page {
            let user = match users.get(user_id.as_str())? {
                Some(bytes) => live::<User>(bytes.value())?,
                None => None,
            };
            let Some(user) = user else { continue };
            let credential = match credentials.get(user_id.as_str())? {
                Some(bytes) => live::<Credential>(bytes.value())?,
                None => None,
            };
            let disabled = credential.is_some_and(|credential| credential.disabled);
            rows.push(UserRow { user, disabled, last_seen_ms: None });
        }
        let mut last_seen = std::collections::HashMap::<String, u64>::new();
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (_, bytes) = entry?;
            let session = decode::<Session>(bytes.value())?;
            if page.iter().any(|(_, user_id)| *user_id == session.user_id) {
                let seen = last_seen.entry(session.user_id).or_default();
                *seen = (*seen).max(session.last_seen_ms.max(session.created_at));
            }
        }
        for row in &mut rows {
            row.last_seen_ms = last_seen.get(&row.user.user_id).copied();
        }
        let next = if more { page.last().map(|(handle, _)| handle.clone()) } else { None };
        Ok((rows, next))
    }

    /// The public id of the session with this token hash (as `sessions_of` lists it).
    pub fn session_id(token_hash: &[u8]) -> String {
        session_id(token_hash)
    }

    /// A new one-time code (password reset) in the invite codes' normalised form:
    /// `Store::INVITE_CODE_SYMBOLS` Crockford symbols, 50 random bits.
    pub fn new_one_time_code() -> String {
        new_invite_code()
    }

    pub fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?.remove(token_hash)?;
        txn.commit()?;
        Ok(())
    }

    /// The quota overrides of `user_id` (all `None` when an admin set none).
    pub fn user_quota(&self, user_id: &str) -> StoreResult<QuotaOverride> {
        let txn = self.db.begin_read()?;
        let quotas = match txn.open_table(USER_QUOTAS) {
            Ok(quotas) => quotas,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(QuotaOverride::default()),
            Err(error) => return Err(error.into()),
        };
        let stored = quotas.get(user_id)?;
        Ok(stored.map(|bytes| decode(bytes.value())).transpose()?.unwrap_or_default())
    }

    /// Sets (or, with both fields `None`, removes) the quota overrides of `user_id`.
    pub fn set_user_quota(&self, user_id: &str, quota: &QuotaOverride) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut quotas = txn.open_table(USER_QUOTAS)?;
            if *quota == QuotaOverride::default() {
                quotas.remove(user_id)?;
            } else {
                quotas.insert(user_id, encode(quota).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// An invite, versioned by the node's one clock (the replication node's when it
    /// runs): written through the client write path, though invites do not replicate.
    /// Its `code` is normalised (`Store::INVITE_CODE_SYMBOLS` symbols, no hyphen) and is the
    /// key. A new code equal to a stored one (odds about n / 2^50 with n invites made)
    /// would replace it.
    /// `created_by` is the admin's user id, or `Store::INVITE_BY_CONTROL_TOKEN` for one
    /// the CLI on the box made.
    pub fn create_invite(&self, created_by: &str) -> StoreResult<Invite> {
        self.write_unhooked(|tx| {
            let version = tx.version();
            let invite = Invite {
                code: new_invite_code(),
                created_by: created_by.to_owned(),
                created_at: version.at.physical_ms(),
                used_by: None,
            };
            tx.txn
                .open_table(INVITES)?
                .insert(invite.code.as_str(), encode(&Record::live(version, invite.clone())).as_slice())?;
            Ok(invite)
        })
    }

    /// Invites nobody has used or revoked, newest first, at most
    /// `Store::OPEN_INVITES_LISTED_MAX`.
    pub fn open_invites(&self) -> StoreResult<Vec<Invite>> {
        let txn = self.db.begin_read()?;
        let invites = txn.open_table(INVITES)?;
        // By version, newest first: the node's one clock orders invites made within
        // one millisecond too.
        let mut open = Vec::new();
        for entry in invites.iter()? {
            let (_, bytes) = entry?;
            let record = decode::<Record<Invite>>(bytes.value())?;
            if let Some(invite) = record.body.filter(|invite| invite.used_by.is_none()) {
                open.push((record.version, invite));
            }
        }
        open.sort_by(|(a, _), (b, _)| b.cmp(a));
        open.truncate(Self::OPEN_INVITES_LISTED_MAX);
        Ok(open.into_iter().map(|(_, invite)| invite).collect())
    }

    /// Revokes the open invite with the normalised `code` (as `Admission::Invite` takes
    /// it): a tombstone, versioned by the node's one clock, replaces it under the key it
    /// was made with, so it admits nobody. `false` when no open invite has that code
    /// (unknown, used or revoked before).
    pub fn revoke_invite(&self, code: &str) -> StoreResult<bool> {
        self.write_unhooked(|tx| {
            let mut invites = tx.txn.open_table(INVITES)?;
            let mut open_key = None;
            for key in invite_keys(code) {
                let invite = match invites.get(key.as_str())? {
                    Some(bytes) => live::<Invite>(bytes.value())?,
                    None => None,
                };
                if invite.is_some_and(|invite| invite.used_by.is_none()) {
                    open_key = Some(key);
                    break;
                }
            }
            let Some(key) = open_key else { return Ok(false) };
            let version = tx.version();
            invites.insert(key.as_str(), encode(&Record::<Invite>::tombstone(version)).as_slice())?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_dir;

    #[test]
    fn claims_and_invites_admit_once() {
        let dir = temp_dir("admit");
        let store = Store::open(&dir).unwrap();
        let admin = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        assert!(matches!(store.create_user("eve", "h".into(), Admission::Claim), Err(StoreError::AlreadyClaimed)));
        let invite = store.create_invite(&admin.user_id).unwrap();
        store.create_user("bob", "h".into(), Admission::Invite(&invite.code)).unwrap();
        assert!(matches!(
            store.create_user("cy", "h".into(), Admission::Invite(&invite.code)),
            Err(StoreError::BadInvite)
        ));
        assert!(matches!(store.create_user("bob", "h".into(), Admission::Open), Err(StoreError::HandleTaken)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn open_invites_are_listed_until_used_or_revoked() {
        let dir = temp_dir("invite-revoke");
        let store = Store::open(&dir).unwrap();
        let admin = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        let used = store.create_invite(&admin.user_id).unwrap();
        let revoked = store.create_invite(&admin.user_id).unwrap();
        let kept = store.create_invite(Store::INVITE_BY_CONTROL_TOKEN).unwrap();
        let codes =
            |store: &Store| store.open_invites().unwrap().into_iter().map(|invite| invite.code).collect::<Vec<_>>();
        assert_eq!(codes(&store), [kept.code.as_str(), &revoked.code, &used.code], "newest first");
        store.create_user("bob", "h".into(), Admission::Invite(&used.code)).unwrap();
        assert!(store.revoke_invite(&revoked.code).unwrap());
        assert_eq!(codes(&store), [kept.code.as_str()]);
        assert!(!store.revoke_invite(&revoked.code).unwrap(), "revoked already");
        assert!(!store.revoke_invite(&used.code).unwrap(), "used: not open");
        assert!(!store.revoke_invite("0000000000").unwrap(), "unknown");
        assert!(matches!(
            store.create_user("cy", "h".into(), Admission::Invite(&revoked.code)),
            Err(StoreError::BadInvite)
        ));
        // One made before short codes is revoked under the key it was made with.
        store_invite_as_before_short_codes(&store, "0a1b2c3d4e5f60718293");
        assert!(store.revoke_invite("0A1B2C3D4E5F60718293").unwrap());
        assert_eq!(codes(&store), [kept.code.as_str()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn new_invite_codes_are_ten_crockford_symbols() {
        let dir = temp_dir("invite-format");
        let store = Store::open(&dir).unwrap();
        let first = store.create_invite("admin").unwrap();
        assert_eq!(first.code.len(), Store::INVITE_CODE_SYMBOLS, "{}", first.code);
        assert!(first.code.bytes().all(|symbol| INVITE_CODE_ALPHABET.contains(&symbol)), "{}", first.code);
        assert_ne!(first.code, store.create_invite("admin").unwrap().code);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Invites made before short codes: 20 lower-case hex digits, keyed as made.
    fn store_invite_as_before_short_codes(store: &Store, code: &str) {
        store
            .write_unhooked(|tx| {
                let version = tx.version();
                let invite = Invite { code: code.to_owned(), created_by: "admin".into(), created_at: 1, used_by: None };
                tx.txn.open_table(INVITES)?.insert(code, encode(&Record::live(version, invite)).as_slice())?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn invites_from_before_short_codes_still_admit_once() {
        let dir = temp_dir("old-invite");
        let store = Store::open(&dir).unwrap();
        let old_code = "0a1b2c3d4e5f60718293";
        store_invite_as_before_short_codes(&store, old_code);
        // What the API hands the store: the normalised form, in upper case.
        let normalised = old_code.to_ascii_uppercase();
        let bob = store.create_user("bob", "h".into(), Admission::Invite(&normalised)).unwrap();
        assert!(matches!(
            store.create_user("cy", "h".into(), Admission::Invite(&normalised)),
            Err(StoreError::BadInvite)
        ));
        let txn = store.db.begin_read().unwrap();
        let invites = txn.open_table(INVITES).unwrap();
        let stored = live::<Invite>(invites.get(old_code).unwrap().unwrap().value()).unwrap().unwrap();
        assert_eq!(stored.used_by, Some(bob.user_id), "used under the key it was made with");
        assert!(invites.get(normalised.as_str()).unwrap().is_none(), "no second row");
        drop(invites);
        drop(txn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_node_holding_accounts_cannot_be_claimed() {
        let dir = temp_dir("populated");
        let store = Store::open(&dir).unwrap();
        assert!(!store.claimed_or_has_accounts().unwrap());
        // As a sibling's account replicated here would be: present, yet nobody claimed.
        store.create_user("ada", "h".into(), Admission::Open).unwrap();
        assert_eq!(store.claimed_by().unwrap(), None);
        assert!(store.claimed_or_has_accounts().unwrap());
        assert!(matches!(store.create_user("eve", "h".into(), Admission::Claim), Err(StoreError::AlreadyClaimed)));
        assert_eq!(store.user_count().unwrap(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signing_others_out_keeps_the_callers_session_and_pages_list_users() {
        let dir = temp_dir("account-care");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        store.create_user("bob", "h".into(), Admission::Open).unwrap();
        store.create_user("cy", "h".into(), Admission::Open).unwrap();
        let (phone, laptop) = ([1u8; 32], [2u8; 32]);
        store.create_session(&phone, &ada.user_id, "phone").unwrap();
        store.create_session(&laptop, &ada.user_id, "laptop").unwrap();
        let epoch = |token: &[u8; 32]| store.signed_in(token).unwrap().expect("a session").session.epoch;

        let kept = store.update_credential(&ada.user_id, None, |_| CredentialUpdate::Keep(7)).unwrap();
        assert_eq!(kept, Some(7));
        let signed_out = store
            .update_credential(&ada.user_id, Some(&phone), |credential| {
                credential.session_epoch += 1;
                CredentialUpdate::Write(())
            })
            .unwrap();
        assert_eq!(signed_out, Some(()));
        assert_eq!(store.credential(&ada.user_id).unwrap().unwrap().session_epoch, 1);
        assert_eq!((epoch(&phone), epoch(&laptop)), (1, 0), "the caller moves to the new epoch, no one else");
        assert_eq!(store.update_credential("nobody", None, |_| CredentialUpdate::Write(())).unwrap(), None);

        let sessions = store.sessions_of(&ada.user_id).unwrap();
        assert_eq!(sessions.len(), 2);
        let laptop_id = Store::session_id(&laptop);
        assert!(sessions.iter().any(|session| session.session_id == laptop_id && session.user_agent == "laptop"));
        let bob = store.user_by_handle("bob").unwrap().unwrap();
        assert!(!store.delete_session_by_id(&bob.user_id, &laptop_id).unwrap(), "not bob's");
        assert!(store.delete_session_by_id(&ada.user_id, &laptop_id).unwrap());
        assert!(!store.delete_session_by_id(&ada.user_id, &laptop_id).unwrap(), "gone");
        assert!(store.signed_in(&laptop).unwrap().is_none());

        // A session written before last use was kept decodes, and says so.
        let before = [3u8; 32];
        let old_row = format!(r#"{{"user_id":"{}","created_at":5}}"#, ada.user_id);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(SESSIONS).unwrap().insert(before.as_slice(), old_row.as_bytes()).unwrap();
        txn.commit().unwrap();
        let old = store.signed_in(&before).unwrap().expect("an old session").session;
        assert_eq!((old.last_seen_ms, old.last_seen_recorded, old.epoch), (5, false, 0));
        store.touch_session(&before, 9).unwrap();
        let touched = store.signed_in(&before).unwrap().expect("still there").session;
        assert_eq!((touched.last_seen_ms, touched.last_seen_recorded), (9, true));

        let handles = |rows: &[UserRow]| rows.iter().map(|row| row.user.handle.clone()).collect::<Vec<_>>();
        let (first, next) = store.users_page(None, 2).unwrap();
        assert_eq!((handles(&first), next.as_deref()), (vec!["ada".to_owned(), "bob".to_owned()], Some("bob")));
        assert!(first[0].last_seen_ms.is_some() && first[1].last_seen_ms.is_none());
        let (second, next) = store.users_page(Some("bob"), 2).unwrap();
        assert_eq!((handles(&second), next), (vec!["cy".to_owned()], None));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn deleting_an_account_tombstones_its_shard_in_one_transaction_and_keeps_the_handle() {
        use crate::core::model::Visibility;
        use crate::store::{BlobInfo, BlobKind, MediaInfo};
        let dir = temp_dir("delete-account");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "h".into(), Admission::Claim).unwrap().user_id;
        let bob = store.create_user("bob", "h".into(), Admission::Open).unwrap().user_id;
        let cy = store.create_user("cy", "h".into(), Admission::Open).unwrap().user_id;
        let photo = |seed: char| {
            let media_id: String = std::iter::repeat_n(seed, 64).collect();
            let blob = BlobInfo { width: 1, height: 1, bytes: 10, sha256: String::new() };
            for kind in [BlobKind::Original, BlobKind::Display, BlobKind::Thumb] {
                store.blobs.write_durable(&media_id, kind, b"bytes", 1).unwrap();
            }
            let thumb = blob.clone();
            MediaInfo {
                media_id,
                mime: "image/jpeg".into(),
                width: 1,
                height: 1,
                blurhash: String::new(),
                original: blob.clone(),
                display: blob,
                thumb,
                created_at: 0,
            }
        };
        let (own, shared) = (photo('a'), photo('b'));
        store.put_media(&own, &bob).unwrap();
        store.put_media(&shared, &bob).unwrap();
        store.put_media(&shared, &cy).unwrap();
        let bob_post =
            store.create_post(&bob, "lanterns".into(), vec![own.media_id.clone()], Visibility::Public).unwrap();
        let cy_post = store.create_post(&cy, "market".into(), vec![], Visibility::Public).unwrap();
        store.set_like(&cy_post.post_id, &bob, true).unwrap();
        store.add_comment(&cy_post.post_id, &bob, "nice".into()).unwrap();
        store.add_comment(&cy_post.post_id, &ada, "agreed".into()).unwrap();
        store.set_follow(&bob, &cy, true).unwrap();
        store.set_follow(&cy, &bob, true).unwrap();
        store.set_follow(&ada, &bob, true).unwrap();
        store.create_session(&[7u8; 32], &bob, "phone").unwrap();
        let used_before = store.used_bytes();

        assert_eq!(store.delete_account(&ada).unwrap(), AccountDeletion::LastAdmin, "the node keeps an admin");
        let outcome = store.delete_account(&bob).unwrap();
        // user, credential, post, like, comment, follow, two media owners + two follows of bob
        let posts = vec![bob_post.post_id.clone()];
        assert_eq!(outcome, AccountDeletion::Deleted { records: 10, follows_of_them: 2, media_removed: 1, posts });
        assert_eq!(store.delete_account(&bob).unwrap(), AccountDeletion::NotHere, "nothing left");
        // A like bob made on a replica cut off while he was deleted, arriving later:
        // deleting again finishes the job.
        let leftover = store.write(|tx| {
            let version = tx.version();
            let key = RecordKey::new(Table::Like, pair_key(&cy_post.post_id, &bob));
            tx.write_record(&bob, &key, &Record::live(version, crate::core::model::Like { at: 1 }))
        });
        leftover.unwrap();
        assert_eq!(store.likes(&cy_post.post_id, None).unwrap().0, 1);
        assert_eq!(store.deleted_user_id_by_handle("bob").unwrap().as_deref(), Some(bob.as_str()));
        assert_eq!(store.deleted_user_id_by_handle("ada").unwrap(), None, "not deleted");
        let finished = store.delete_account(&bob).unwrap();
        let expected = AccountDeletion::Deleted { records: 1, follows_of_them: 0, media_removed: 0, posts: vec![] };
        assert_eq!(finished, expected);
        assert_eq!(store.likes(&cy_post.post_id, None).unwrap().0, 0);

        assert!(store.user(&bob).unwrap().is_none() && store.credential(&bob).unwrap().is_none());
        assert!(store.post(&bob_post.post_id).unwrap().is_none());
        assert_eq!(store.likes(&cy_post.post_id, None).unwrap().0, 0);
        assert_eq!(store.comment_count(&cy_post.post_id).unwrap(), 1, "ada's comment stays");
        assert_eq!((store.follower_count(&cy).unwrap(), store.followees(&cy).unwrap().len()), (0, 0));
        assert!(store.followees(&ada).unwrap().is_empty());
        assert!(store.signed_in(&[7u8; 32]).unwrap().is_none(), "bob's session ended");
        // The handle stays reserved for the deleted account.
        assert!(store.user_by_handle("bob").unwrap().is_none());
        assert!(matches!(store.create_user("bob", "h".into(), Admission::Open), Err(StoreError::HandleTaken)));
        // Only the photo nobody else owns left: its row and then its files.
        assert!(store.media(&own.media_id).unwrap().is_none());
        assert!(!store.blobs.exists(&own.media_id, BlobKind::Original));
        assert!(
            store.media(&shared.media_id).unwrap().is_some() && store.blobs.exists(&shared.media_id, BlobKind::Thumb)
        );
        assert_eq!(store.used_bytes(), used_before - own.total_bytes(), "the stored bytes drop with the files");
        assert_eq!(store.remove_unowned_media_files().unwrap(), 0, "nothing left to remove");
        // The one a deletion lets go of last goes too.
        store.create_user("dee", "h".into(), Admission::Open).unwrap();
        assert!(matches!(store.delete_account(&cy).unwrap(), AccountDeletion::Deleted { media_removed: 1, .. }));
        assert!(!store.blobs.exists(&shared.media_id, BlobKind::Thumb));
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.user_count().unwrap(), 2, "ada and dee; deleted accounts are not counted");
        assert!(store.user_by_handle("cy").unwrap().is_none());
        assert!(matches!(store.create_user("cy", "h".into(), Admission::Open), Err(StoreError::HandleTaken)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn quota_overrides_are_kept_and_removed() {
        let dir = temp_dir("quota");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.user_quota("u1").unwrap(), QuotaOverride::default(), "no table yet: no override");
        let set = QuotaOverride { storage_bytes_max: Some(5), upload_bytes_per_hour_max: None };
        store.set_user_quota("u1", &set).unwrap();
        assert_eq!(store.user_quota("u1").unwrap(), set);
        assert_eq!(store.user_quota("u2").unwrap(), QuotaOverride::default());
        store.set_user_quota("u1", &QuotaOverride::default()).unwrap();
        assert_eq!(store.user_quota("u1").unwrap(), QuotaOverride::default());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
