//! `/konnectors`: the konnectors installed on the instance (`io.cozy.konnectors`), installed
//! from a source on the server's disk (`Source=file:///…`, the command line's way) and removed.

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cocon_common::cozy::doctype::KONNECTORS;
use cocon_proto::events::v1::Konnector;
use cocon_proto::jobs::v1 as pb;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::scope_of;
use crate::edge::access::{Access, Caller, authenticate};
use crate::edge::policy::Route;
use crate::{ApiError, State, jsonapi};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/konnectors/", get(list))
        .route("/konnectors", get(list))
        .route("/konnectors/{slug}", post(install).put(install).delete(uninstall))
}

async fn caller(state: &State, headers: &HeaderMap, method: &Method) -> Result<Caller, ApiError> {
    let caller = authenticate(state, headers).await?;
    caller.authorize(
        state,
        Route::Konnectors,
        method,
        &Access {
            doctype: KONNECTORS,
            id: None,
        },
    )?;
    Ok(caller)
}

fn resource(k: &Konnector) -> Value {
    let attributes = jsonapi::installed(
        &k.manifest,
        &k.slug,
        "ready",
        &k.version,
        k.installed_at_us,
        k.updated_at_us,
    );
    json!({
        "type": KONNECTORS,
        "id": format!("{KONNECTORS}/{}", k.slug),
        "attributes": attributes,
        "meta": {},
        "links": {"self": format!("/konnectors/{}", k.slug)},
    })
}

async fn list(AxState(state): AxState<State>, method: Method, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let request = pb::ListKonnectorsRequest {
        scope: scope_of(&caller, &headers),
    };
    let list = state.clients.jobs.clone().list_konnectors(request).await?.into_inner();
    Ok(jsonapi::list(list.konnectors.iter().map(resource).collect()))
}

/// The `Source=` of an installation (a konnector's, an app's).
#[derive(Deserialize)]
pub(crate) struct Source {
    #[serde(rename = "Source", default)]
    pub source: String,
}

async fn install(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    Query(query): Query<Source>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    if query.source.is_empty() {
        return Err(ApiError::bad_request(
            "say where the konnector comes from: ?Source=file:///path/to/konnector (a directory or a .tar.gz)",
        ));
    }
    let request = pb::InstallKonnectorRequest {
        scope: scope_of(&caller, &headers),
        slug,
        source: query.source,
    };
    let answer = state
        .clients
        .jobs
        .clone()
        .install_konnector(request)
        .await?
        .into_inner();
    let konnector = answer.konnector.ok_or_else(|| {
        ApiError::new(
            cocon_common::ErrorCode::Internal,
            "internal_server_error",
            "the konnector could not be read back; list the konnectors",
        )
    })?;
    Ok((StatusCode::CREATED, jsonapi::one(resource(&konnector))).into_response())
}

async fn uninstall(
    AxState(state): AxState<State>,
    Path(slug): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers, &method).await?;
    let request = pb::KonnectorRequest {
        scope: scope_of(&caller, &headers),
        slug,
    };
    state.clients.jobs.clone().uninstall_konnector(request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
