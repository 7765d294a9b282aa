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
    /// The first account, with the claim code: becomes admin.
    Claim,
    Invite(&'a str),
    Open,
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

    // ----- accounts -----

    /// Creates an account. `how` says what admits it: the claim (first admin), an
    /// invite code (consumed in the same transaction), or open registration.
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
                        let mut meta = tx.txn.open_table(META)?;
                        if meta.get("claimed_by")?.is_some() {
                            return Err(StoreError::AlreadyClaimed);
                        }
                        meta.insert("claimed_by", user_id.as_bytes())?;
                    }
                    Admission::Invite(code) => {
                        let mut invites = tx.txn.open_table(INVITES)?;
                        let invite = match invites.get(code)? {
                            Some(bytes) => live::<Invite>(bytes.value())?,
                            None => None,
                        };
                        let Some(mut invite) = invite.filter(|invite| invite.used_by.is_none()) else {
                            return Err(StoreError::BadInvite);
                        };
                        invite.used_by = Some(user_id.clone());
                        invites.insert(code, encode(&Record::live(version, invite)).as_slice())?;
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
    pub fn create_invite(&self, created_by: &str) -> StoreResult<Invite> {
        self.write_unhooked(|tx| {
            let version = tx.version();
            let invite = Invite {
                code: hex(&os::random_bytes::<10>()),
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
