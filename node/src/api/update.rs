//! Updates of this box for the local CLI (`edgenode update check|install`) and admins:
//! `POST /api/v1/node/update/check`, `POST /api/v1/node/update/install`, and the
//! `update` part of `GET /api/v1/node`. The work is the updater's (`ports::Updates`).

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::ports::UpdateRefused;
use super::{ok_json, Api, ApiError, ApiResult, Call};

/// Only the control token (the CLI on the box) or an admin.
fn require_admin(call: &mut Call<'_>) -> Result<(), ApiError> {
    if call.local_control || call.user()?.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an admin can update this node"))
    }
}

fn updates(api: &Api) -> Result<&dyn super::ports::Updates, ApiError> {
    api.updates.as_deref().ok_or_else(|| ApiError::unavailable("the updater is not running on this node"))
}

impl From<UpdateRefused> for ApiError {
    fn from(refused: UpdateRefused) -> ApiError {
        match refused {
            UpdateRefused::NotAvailable(message) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "updates_not_available", message)
            }
            UpdateRefused::NotConfigured(message) => ApiError::new(StatusCode::CONFLICT, "no_update_url", message),
            UpdateRefused::Busy(message) => ApiError::new(StatusCode::CONFLICT, "update_in_progress", message),
            UpdateRefused::Failed(message) => ApiError::new(StatusCode::BAD_GATEWAY, "update_failed", message),
        }
    }
}

/// The `update` field of `/api/v1/node` for admins and the control token.
pub fn node_update_json(api: &Api) -> Option<Value> {
    api.updates.as_ref().map(|updates| updates.status())
}

/// `POST /api/v1/node/update/check`.
pub fn check(api: &Api, call: &mut Call<'_>) -> ApiResult {
    require_admin(call)?;
    ok_json(updates(api)?.check_now()?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InstallRequest {
    /// An absolute path on the node's machine, or an `https://` URL.
    source: String,
}

/// `POST /api/v1/node/update/install`: control token only (a path on this machine).
pub fn install(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control {
        return Err(ApiError::forbidden(
            "bundles are installed by `edgenode update install` on the node's own machine",
        ));
    }
    let request: InstallRequest = call.json()?;
    let source = request.source.trim();
    if !(source.starts_with('/') || source.starts_with("https://")) {
        return Err(ApiError::bad_request("bad_source", "source: an absolute path or an https:// URL"));
    }
    ok_json(updates(api)?.install(source)?)
}
