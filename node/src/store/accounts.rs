//! Accounts: the node's claim, users and their handles, credentials, sessions,
//! invites, and the quotas an admin set for a user.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, hex, live, Store, StoreError, StoreResult, CREDENTIALS, HANDLES, INVITES, META, SESSIONS, USERS,
};
use crate::core::model::{Credential, Invite, Record, User};
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
const USER_QUOTAS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("user_quotas");

/// What an admin set for one user; `None` fields fall back to the node's `[limits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOverride {
    pub storage_bytes_max: Option<u64>,
    pub upload_bytes_per_hour_max: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    user_id: String,
    created_at: u64,
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

    pub fn user_count(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(HANDLES)?.len()?)
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
                let credential = Credential { password_hash };
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

    pub fn create_session(&self, token_hash: &[u8], user_id: &str) -> StoreResult<()> {
        let session = Session { user_id: user_id.to_owned(), created_at: os::now_ms() };
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?.insert(token_hash, encode(&session).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let session = sessions.get(token_hash)?;
        Ok(session.map(|bytes| decode::<Session>(bytes.value())).transpose()?.map(|session| session.user_id))
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
