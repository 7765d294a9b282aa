//! Per-user storage quotas and upload rates: defaults from `[limits]`, overrides an
//! admin sets per user (`PUT /api/v1/users/{handle}/quota`, kept in the store), the
//! check before an upload (`admit_upload`) and the count after it (`record_upload`).
//!
//! Storage used is the store's per-user counter (every media item a user owns, each
//! owner charged in full). The upload rate is counted here, in memory, per minute
//! over the last hour: a restart forgets it, which costs at most one hour's allowance.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde::Deserialize;

use super::{Api, ApiError, ApiResult, Call};
use crate::config::Limits;
use crate::core::model::User;
use crate::core::text::readable_bytes;
use crate::store::QuotaOverride;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
/// Users whose last hour of uploads is remembered at once; idle ones go first.
const UPLOADERS_MAX: usize = 100_000;

/// The node's defaults and the upload counts of the last hour.
#[derive(Debug)]
pub struct Quotas {
    storage_bytes_max: u64,
    upload_bytes_per_hour_max: u64,
    uploads: Mutex<UploadWindows>,
}

impl Quotas {
    pub fn new(limits: &Limits) -> Quotas {
        Quotas {
            storage_bytes_max: limits.user_storage_bytes_max,
            upload_bytes_per_hour_max: limits.user_upload_bytes_per_hour_max,
            uploads: Mutex::new(UploadWindows::new(Instant::now())),
        }
    }
}

/// Bytes uploaded per user, in one-minute buckets over the last hour.
#[derive(Debug)]
struct UploadWindows {
    /// Minutes are counted from here.
    epoch: Instant,
    by_user: HashMap<String, VecDeque<(u64, u64)>>,
}

impl UploadWindows {
    fn new(epoch: Instant) -> UploadWindows {
        UploadWindows { epoch, by_user: HashMap::new() }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / MINUTE.as_secs()
    }

    /// Drops buckets that have left the hour; `None` when nothing is left.
    fn recent(&mut self, user_id: &str, now: Instant) -> Option<&VecDeque<(u64, u64)>> {
        let oldest_kept = self.minute(now).saturating_sub(HOUR.as_secs() / MINUTE.as_secs() - 1);
        let buckets = self.by_user.get_mut(user_id)?;
        while buckets.front().is_some_and(|(minute, _)| *minute < oldest_kept) {
            buckets.pop_front();
        }
        Some(&*buckets)
    }

    /// `Err(wait)` when `bytes` more would pass `per_hour_max` in the last hour: the
    /// wait is until enough of the oldest uploads have left the hour.
    fn admit(&mut self, user_id: &str, bytes: u64, per_hour_max: u64, now: Instant) -> Result<(), Duration> {
        if per_hour_max == 0 {
            return Ok(());
        }
        if bytes > per_hour_max {
            return Err(HOUR);
        }
        let epoch = self.epoch;
        let Some(buckets) = self.recent(user_id, now) else { return Ok(()) };
        let used: u64 = buckets.iter().map(|(_, bytes)| bytes).sum();
        if used + bytes <= per_hour_max {
            return Ok(());
        }
        let mut to_free = used + bytes - per_hour_max;
        for (minute, bucket_bytes) in buckets {
            to_free = to_free.saturating_sub(*bucket_bytes);
            if to_free == 0 {
                let leaves_at = epoch + MINUTE * (*minute as u32 + 1) + HOUR - MINUTE;
                return Err(leaves_at.saturating_duration_since(now).max(Duration::from_secs(1)));
            }
        }
        Err(HOUR)
    }

    fn record(&mut self, user_id: &str, bytes: u64, now: Instant) {
        if self.by_user.len() >= UPLOADERS_MAX && !self.by_user.contains_key(user_id) {
            let users: Vec<String> = self.by_user.keys().cloned().collect();
            for user in users {
                if self.recent(&user, now).is_some_and(VecDeque::is_empty) {
                    self.by_user.remove(&user);
                }
            }
            if self.by_user.len() >= UPLOADERS_MAX {
                // Still full of active uploaders: forget one rather than grow without bound.
                if let Some(user) = self.by_user.keys().next().cloned() {
                    self.by_user.remove(&user);
                }
            }
        }
        let minute = self.minute(now);
        let buckets = self.by_user.entry(user_id.to_owned()).or_default();
        match buckets.back_mut() {
            Some((last, total)) if *last == minute => *total += bytes,
            _ => buckets.push_back((minute, bytes)),
        }
    }
}

/// A user's quota as it applies now: overrides over the node's defaults (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveQuota {
    pub storage_bytes_max: u64,
    pub upload_bytes_per_hour_max: u64,
}

impl Api {
    fn effective_quota(&self, user_id: &str) -> Result<EffectiveQuota, ApiError> {
        let set = self.store.user_quota(user_id)?;
        Ok(EffectiveQuota {
            storage_bytes_max: set.storage_bytes_max.unwrap_or(self.quotas.storage_bytes_max),
            upload_bytes_per_hour_max: set.upload_bytes_per_hour_max.unwrap_or(self.quotas.upload_bytes_per_hour_max),
        })
    }

    /// Whether `user` may upload `body_bytes` more now: 507 `quota_exceeded` past their
    /// storage quota, 429 `upload_rate_exceeded` (with `Retry-After`) past their
    /// upload rate. Call before storing an upload; `record_upload` after.
    pub(super) fn admit_upload(&self, user: &User, body_bytes: u64) -> Result<(), ApiError> {
        let quota = self.effective_quota(&user.user_id)?;
        if quota.storage_bytes_max > 0 {
            let used = self.store.user_storage_bytes(&user.user_id)?;
            if used.saturating_add(body_bytes) > quota.storage_bytes_max {
                return Err(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "quota_exceeded",
                    format!(
                        "you have used {} of your {}; delete photos or ask your admin for more",
                        readable_bytes(used),
                        readable_bytes(quota.storage_bytes_max)
                    ),
                ));
            }
        }
        let admitted = self.quotas.uploads.lock().expect("uploads lock").admit(
            &user.user_id,
            body_bytes,
            quota.upload_bytes_per_hour_max,
            Instant::now(),
        );
        admitted.map_err(|wait| {
            let seconds = wait.as_secs().max(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upload_rate_exceeded",
                format!(
                    "you may upload {} an hour; try again in {seconds} s, or ask your admin for a higher rate",
                    readable_bytes(quota.upload_bytes_per_hour_max)
                ),
            )
            .retry_after(wait)
        })
    }

    /// Counts `bytes` just uploaded by `user_id` against their hourly upload rate.
    pub(super) fn record_upload(&self, user_id: &str, bytes: u64) {
        self.quotas.uploads.lock().expect("uploads lock").record(user_id, bytes, Instant::now());
    }
}

/// The user a quota route names; only local users have quotas here.
fn quota_user(api: &Api, call: &Call<'_>) -> Result<User, ApiError> {
    api.store.user_by_handle(&call.param(0).to_lowercase())?.ok_or_else(|| ApiError::not_found("user"))
}

fn quota_json(api: &Api, user: &User) -> ApiResult {
    let quota = api.effective_quota(&user.user_id)?;
    super::shapes::ok(&super::shapes::Quota {
        storage_bytes_used: api.store.user_storage_bytes(&user.user_id)?,
        storage_bytes_max: quota.storage_bytes_max,
        upload_bytes_per_hour_max: quota.upload_bytes_per_hour_max,
    })
}

/// `GET /api/v1/users/{handle}/quota`: the user themselves, an admin, or the CLI.
pub fn get_quota(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = quota_user(api, call)?;
    if !call.local_control {
        let caller = call.user()?;
        if !caller.admin && caller.user_id != user.user_id {
            return Err(ApiError::forbidden("only the user and admins can see a user's quota"));
        }
    }
    quota_json(api, &user)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaRequest {
    #[serde(default)]
    storage_bytes_max: Option<u64>,
    #[serde(default)]
    upload_bytes_per_hour_max: Option<u64>,
}

/// `PUT /api/v1/users/{handle}/quota` (admins): `null` puts a field back to the default.
pub fn set_quota(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can change a user's quota"));
    }
    let request: QuotaRequest = call.json()?;
    let user = quota_user(api, call)?;
    let set = QuotaOverride {
        storage_bytes_max: request.storage_bytes_max,
        upload_bytes_per_hour_max: request.upload_bytes_per_hour_max,
    };
    api.store.set_user_quota(&user.user_id, &set)?;
    tracing::info!(handle = %user.handle, ?set, "quota changed");
    quota_json(api, &user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_rate_counts_the_last_hour_and_says_when_to_retry() {
        let start = Instant::now();
        let mut windows = UploadWindows::new(start);
        windows.record("ada", 6 * MIB, start);
        windows.record("ada", 3 * MIB, start + MINUTE * 10);
        assert!(windows.admit("ada", MIB, 10 * MIB, start + MINUTE * 20).is_ok(), "9 + 1 MiB fits in 10");
        let wait = windows.admit("ada", 2 * MIB, 10 * MIB, start + MINUTE * 20).expect_err("9 + 2 MiB does not");
        assert_eq!(wait, MINUTE * 40, "the first 6 MiB leave the hour 60 minutes after minute 0");
        assert!(windows.admit("bob", 2 * MIB, 10 * MIB, start).is_ok(), "per user");
        assert!(windows.admit("ada", 2 * MIB, 10 * MIB, start + HOUR).is_ok(), "after the hour");
        assert!(windows.admit("ada", 2 * MIB, 0, start).is_ok(), "0 is unlimited");
        assert_eq!(windows.admit("ada", 11 * MIB, 10 * MIB, start), Err(HOUR), "never fits");
    }

    #[test]
    fn bytes_read_as_people_say_them() {
        assert_eq!(readable_bytes(8 << 30), "8.0 GiB");
        assert_eq!(readable_bytes(820 * MIB), "820 MiB");
        assert_eq!(readable_bytes(96), "96 B");
    }
}
