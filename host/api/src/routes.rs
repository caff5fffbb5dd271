//! The router, its handlers, and the server's lifecycle.

use crate::auth::{self, RateLimiter, TokenCache};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runwarden_control::{Caller, Controller, IncidentRecord, Scope};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How the API server behaves.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes; larger bodies get 413. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Requests per second each token may make, sustained; 0 turns the limit off.
    /// Default 500.
    pub rate_per_sec: u32,
    /// Requests a token may make at once before the rate applies. Default 1000.
    pub burst: u32,
    /// Browser origins (`http://host:port`) allowed to call `/mcp`; requests with any
    /// other `Origin` get 403. Clients that send no `Origin` are not browsers. Default
    /// none.
    pub mcp_origins: Vec<String>,
    /// Connections served at once; past it new ones get 503 and are closed. Default 1024.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle. Default 10 s.
    pub header_timeout: std::time::Duration,
    /// Time a client has to send a request's body once its headers arrived; slower
    /// bodies get 408. Default 30 s.
    pub body_timeout: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 * 1024,
            rate_per_sec: 500,
            burst: 1000,
            mcp_origins: Vec::new(),
            max_connections: 1024,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Statuses an incident can be in, as `GET /v1/incidents?status=` accepts them.
pub(crate) const STATUSES: &[&str] = runwarden_control::IncidentStatus::NAMES;

/// Default and largest `limit` of `GET /v1/incidents`.
pub(crate) const LIST_DEFAULT: u32 = 50;
pub(crate) const LIST_MAX: u32 = 500;

struct Inner {
    controller: Arc<Controller>,
    config: ApiConfig,
    tokens: TokenCache,
    limiter: RateLimiter,
    mcp: crate::mcp::Sessions,
    /// Each background incident task holds a clone; `None` once the server stopped, so
    /// [`serve`] can wait for the tasks to finish before shutting the controller down.
    tasks: Mutex<Option<mpsc::Sender<()>>>,
}

#[derive(Clone)]
struct AppState(Arc<Inner>);

impl AppState {
    /// A request body within the configured size and time limits.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
        let c = &self.0.config;
        read_limited(headers, body, c.max_body_bytes, c.body_timeout).await
    }

    async fn authorize(&self, headers: &HeaderMap, needed: Scope) -> ApiResult<Caller> {
        auth::authorize(
            &self.0.controller,
            &self.0.tokens,
            &self.0.limiter,
            headers,
            needed,
        )
        .await
    }

    /// [`AppState::authorize`], for a route about the host itself (its catalog, rules,
    /// log, MCP tools): a token of a tenant that does not own the host gets 404, as if
    /// there were no host. Scope is checked first (403 says nothing about the host).
    async fn authorize_owner(&self, headers: &HeaderMap, needed: Scope) -> ApiResult<Caller> {
        let caller = self.authorize(headers, needed).await?;
        self.0.controller.check_owner(&caller.tenant)?;
        Ok(caller)
    }
}

/// Serve the API on `listener` until `shutdown` completes, then finish the requests and
/// incidents in progress and shut `controller` down (so their evidence is written).
pub async fn serve(
    listener: tokio::net::TcpListener,
    controller: Arc<Controller>,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tasks, mut tasks_done) = mpsc::channel::<()>(1);
    let state = AppState(Arc::new(Inner {
        controller: controller.clone(),
        limiter: RateLimiter::new(config.rate_per_sec, config.burst),
        config,
        tokens: TokenCache::default(),
        mcp: crate::mcp::Sessions::default(),
        tasks: Mutex::new(Some(tasks)),
    }));
    let limits = crate::listen::Limits {
        max_connections: state.0.config.max_connections,
        header_timeout: state.0.config.header_timeout,
        drain_timeout: std::time::Duration::from_secs(10),
    };
    let app = router(state.clone());
    let served = crate::listen::run(listener, app, limits, shutdown).await;
    // No new background tasks from here on; wait for those running.
    drop(
        state
            .0
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    );
    let _ = tasks_done.recv().await;
    controller.shutdown().await;
    served
}

fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/incidents", post(submit_incident).get(list_incidents))
        .route("/v1/incidents/{id}", get(get_incident))
        .route("/v1/escalations", get(list_escalations))
        .route("/v1/escalations/{id}", get(get_escalation))
        .route("/v1/escalations/{id}/{decision}", post(decide_escalation))
        .route("/v1/runbooks", get(list_runbooks))
        .route("/v1/host", get(host_inventory))
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/enroll-tokens", post(create_enroll_token))
        .route("/v1/hosts/{id}/{action}", post(drain_host))
        .route("/v1/enroll", post(enroll))
        .route("/v1/rules", get(list_rules))
        .route("/v1/trust", get(get_trust).put(put_trust))
        .route(
            "/v1/components",
            get(list_components).post(publish_component),
        )
        .route("/v1/deployments", get(list_deployments).post(deploy))
        .route("/v1/deployments/{id}", get(get_deployment))
        .route("/v1/evidence/checkpoint", get(checkpoint))
        .route("/v1/evidence/{index}", get(get_evidence))
        .route("/v1/flywheel/candidates", get(flywheel_candidates))
        .route(
            "/v1/flywheel/candidates/{id}/promote",
            post(flywheel_promote),
        )
        .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}: see /v1/openapi.json for the routes",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not accept {method}: see /v1/openapi.json for its methods",
        uri.path()
    ))
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "{}: see /v1/openapi.json for the parameters",
        e.body_text()
    ))
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

/// Liveness only: without a token, nothing about the host or what it holds.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The caller's tenant's counters (any scope: a token of tenant X, admin or not, is
/// tenant X).
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let c = &s.0.controller;
    let text = c.metrics(&caller.tenant)
        + &c.escalation_metrics(&caller.tenant).await?
        + &c.fleet_metrics(&caller.tenant).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    wait: bool,
}

/// Read at most `limit` bytes of `body`; more is a 413.
/// The request body, refused past `limit` bytes (413) or when it does not arrive within
/// `timeout` (408), both with the JSON error body.
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> ApiResult<Vec<u8>> {
    tokio::time::timeout(timeout, read_body(headers, body, limit))
        .await
        .map_err(|_| ApiError::body_timeout(timeout))?
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx))
        .await
        .transpose()
        .map_err(|e| ApiError::invalid_incident(format!("reading the request body: {e}")))?
    {
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

async fn submit_incident(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<Response> {
    let caller = s.authorize(&headers, Scope::Operate).await?;
    let Query(q) = query.map_err(bad_query)?;
    let bytes = s.read_body(&headers, body).await?;
    let incident = runwarden_control::Incident::from_json(&bytes)
        .map_err(|e| ApiError::invalid_incident(e.to_string()))?;
    let controller = s.0.controller.clone();
    // Register the task before accepting, so an accepted incident is never left behind.
    let Some(task_guard) = s.0.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Err(ApiError::shutting_down());
    };
    if q.wait {
        // The caller waits for the outcome: nothing to store before processing starts.
        let done = tokio::spawn(async move {
            let result = controller.submit_as(&caller, incident).await;
            drop(task_guard);
            result
        });
        let rec: IncidentRecord = done
            .await
            .map_err(|e| ApiError::internal("incident task", &e))??;
        return Ok(Json(rec).into_response());
    }
    let rec = controller.accept_as(&caller, incident).await?;
    let accepted = rec.clone();
    // Completion runs in its own task: a client that hangs up does not cut an incident
    // off half-way, and shutdown waits for it (`task_guard`).
    let done = tokio::spawn(async move {
        let id = rec.id.clone();
        let result = controller.complete(rec).await;
        drop(task_guard);
        if let Err(e) = &result {
            eprintln!("runwarden-api: completing incident {id}: {e}");
        }
    });
    drop(done);
    let location = HeaderValue::from_str(&format!("/v1/incidents/{}", accepted.id))
        .map_err(|e| ApiError::internal("location header", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationQuery {
    state: Option<String>,
    limit: Option<u32>,
}

/// Check a list's filter against what it may be and its limit; the limit to use.
fn list_filter(
    value: Option<&str>,
    allowed: &[&str],
    name: &str,
    what: &str,
    limit: Option<u32>,
) -> ApiResult<u32> {
    if let Some(v) = value
        && !allowed.contains(&v)
    {
        return Err(ApiError::bad_request(format!(
            "{name} {v:?} is not {what}: use one of {}",
            allowed.join(", ")
        )));
    }
    let limit = limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: use 1 to {LIST_MAX}"
        )));
    }
    Ok(limit)
}

async fn list_escalations(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EscalationQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Query(q) = query.map_err(bad_query)?;
    let limit = list_filter(
        q.state.as_deref(),
        runwarden_control::EscalationState::NAMES,
        "state",
        "an escalation state",
        q.limit,
    )?;
    let escalations =
        s.0.controller
            .escalations(
                &caller.tenant,
                q.state.as_deref().and_then(|s| s.parse().ok()),
                limit,
            )
            .await?;
    Ok(Json(serde_json::json!({"escalations": escalations})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    note: String,
}

/// `POST /v1/escalations/{id}/approve|deny|acknowledge` with an optional `{"note": …}`.
async fn decide_escalation(
    State(s): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Operate).await?;
    let Path((id, decision)) = path.map_err(bad_path)?;
    let body = s.read_body(&headers, body).await?;
    let decision = match decision.as_str() {
        "approve" => runwarden_control::Decision::Approve,
        "deny" => runwarden_control::Decision::Deny,
        "acknowledge" => runwarden_control::Decision::Acknowledge,
        "resolve" => runwarden_control::Decision::Resolve,
        other => {
            return Err(ApiError::not_found(format!(
                "no decision {other:?}: POST /v1/escalations/{{id}}/approve, /deny, /acknowledge or /resolve"
            )));
        }
    };
    let body: DecisionBody = if body.is_empty() {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"note\": \"…\"}} or empty: {e}"
            ))
        })?
    };
    let (escalation, incident) =
        s.0.controller
            .decide(&caller, &id, decision, &body.note)
            .await?;
    Ok(Json(
        serde_json::json!({"escalation": escalation, "incident": incident}),
    ))
}

async fn get_escalation(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<runwarden_control::Escalation>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Path(id) = id.map_err(bad_path)?;
    s.0.controller
        .escalation(&caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no escalation {id:?} for tenant {}: list them with GET /v1/escalations",
                caller.tenant
            ))
        })
}

async fn list_incidents(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Query(q) = query.map_err(bad_query)?;
    let limit = list_filter(
        q.status.as_deref(),
        STATUSES,
        "status",
        "an incident status",
        q.limit,
    )?;
    let incidents =
        s.0.controller
            .incidents(
                &caller.tenant,
                q.status.as_deref().and_then(|s| s.parse().ok()),
                limit,
            )
            .await?;
    Ok(Json(serde_json::json!({"incidents": incidents})))
}

async fn get_incident(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<IncidentRecord>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Path(id) = id.map_err(bad_path)?;
    // Another tenant's incident is "not found" too: ids must not reveal what exists.
    s.0.controller
        .incident(&caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no incident {id:?} for tenant {}: list them with GET /v1/incidents",
                caller.tenant
            ))
        })
}

async fn list_runbooks(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    s.authorize_owner(&headers, Scope::Read).await?;
    Ok(Json(
        serde_json::json!({"runbooks": s.0.controller.runbooks()}),
    ))
}

async fn host_inventory(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize_owner(&headers, Scope::Read).await?;
    // The caller's tenant's first host (`runwarden up`: its only one).
    let hosts = s.0.controller.hosts_of(&caller.tenant);
    let host = hosts.first().ok_or_else(|| {
        runwarden_control::ControlError::NotFound(format!(
            "tenant {} has no host on this runwarden",
            caller.tenant
        ))
    })?;
    Ok(Json(
        serde_json::json!({"host_id": host.id(), "inventory": host.inventory}),
    ))
}

async fn list_rules(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize_owner(&headers, Scope::Read).await?;
    Ok(Json(
        serde_json::json!({"rules": s.0.controller.rules_for(Some(&caller.tenant))}),
    ))
}

/// `GET /v1/trust`: the caller's tenant's trust policy (404 when it has none).
async fn get_trust(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<runwarden_control::TrustPolicy>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    match s.0.controller.trust_policy(&caller).await? {
        Some(p) => Ok(Json(p)),
        None => Err(ApiError::not_found(format!(
            "tenant {} has no trust policy: an admin sets one with PUT /v1/trust (runwarden trust set FILE)",
            caller.tenant
        ))),
    }
}

/// `PUT /v1/trust` (admin): set the caller's tenant's trust policy.
async fn put_trust(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<runwarden_control::TrustPolicy>> {
    let caller = s.authorize(&headers, Scope::Admin).await?;
    let body = s.read_body(&headers, body).await?;
    let policy: runwarden_control::TrustPolicy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a trust policy {{\"publishers\": [{{\"key\", \"components\", \"max_risk\", \"rules\"}}], \"minimum_versions\": {{…}}}}: {e}"
        ))
    })?;
    Ok(Json(
        s.0.controller.set_trust_policy(&caller, policy).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentsQuery {
    name: Option<String>,
}

/// `GET /v1/components[?name=N]`: the caller's tenant's published components.
async fn list_components(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ComponentsQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Query(q) = query.map_err(bad_query)?;
    let releases = s.0.controller.releases(&caller, q.name.as_deref()).await?;
    Ok(Json(serde_json::json!({ "components": releases })))
}

/// `GET /v1/deployments`: the caller's tenant's latest deployments.
async fn list_deployments(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let deployments = s.0.controller.deployments(&caller).await?;
    Ok(Json(serde_json::json!({ "deployments": deployments })))
}

/// `GET /v1/deployments/{id}`: one deployment, host by host.
async fn get_deployment(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<runwarden_control::DeploymentView>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Path(id) = id.map_err(bad_path)?;
    Ok(Json(s.0.controller.deployment(&caller, &id).await?))
}

/// `POST /v1/deployments` (admin): deploy a published release to hosts, or roll back.
async fn deploy(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<runwarden_control::DeploymentView>> {
    let caller = s.authorize(&headers, Scope::Admin).await?;
    let body = s.read_body(&headers, body).await?;
    let req: runwarden_control::DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"name\", \"version\", \"hosts\", \"rollback\", \"canary_percent\", \"soak_secs\", \"max_failure_rate\"}}: {e}"
        ))
    })?;
    Ok(Json(s.0.controller.deploy(&caller, req).await?))
}

/// The largest release accepted with a component.
const MAX_RELEASE_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// The component's bytes, base64.
    component: String,
    /// Its signed release (the DSSE envelope, as a JSON object), kept as its text.
    release: Box<serde_json::value::RawValue>,
}

/// `POST /v1/components` (admin): publish a component and its signed release into the
/// registry; the tenant's trust policy must admit it.
async fn publish_component(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<runwarden_control::ReleaseView>> {
    use base64::Engine as _;
    let caller = s.authorize(&headers, Scope::Admin).await?;
    // A component is larger than any other request: base64 of the largest, and its release.
    let limit = runwarden_control::MAX_COMPONENT_BYTES / 3 * 4 + (2 << 20);
    let body = read_limited(&headers, body, limit, s.0.config.body_timeout).await?;
    let body: PublishBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"component\": \"<base64 of the .wasm>\", \"release\": {{<the signed release>}}}}: {e}"
        ))
    })?;
    if body.release.get().len() > MAX_RELEASE_BYTES {
        return Err(ApiError::bad_request(format!(
            "release: {} bytes, more than a release ever needs ({MAX_RELEASE_BYTES})",
            body.release.get().len()
        )));
    }
    if body.component.len() > runwarden_control::MAX_COMPONENT_BYTES.div_ceil(3) * 4 {
        return Err(ApiError::bad_request(format!(
            "component: more than {} bytes",
            runwarden_control::MAX_COMPONENT_BYTES
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.component.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("component: not base64: {e}")))?;
    let release = body.release.get().to_string();
    Ok(Json(
        s.0.controller.publish(&caller, &bytes, &release).await?,
    ))
}

async fn get_evidence(
    State(s): State<AppState>,
    headers: HeaderMap,
    index: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let Path(index) = index.map_err(bad_path)?;
    let Ok(n) = index.parse::<u64>() else {
        return Err(ApiError::bad_request(format!(
            "evidence index {index:?} is not a log index: use a whole number such as 0, or /v1/evidence/checkpoint"
        )));
    };
    s.0.controller
        .evidence_record(&caller.tenant, n)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no evidence record {n} for tenant {}: an incident lists its records under `evidence`",
                caller.tenant
            ))
        })
}

async fn checkpoint(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    s.authorize_owner(&headers, Scope::Read).await?;
    let note = s.0.controller.checkpoint().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Refuse browser origins the operator did not allow (DNS rebinding).
fn check_origin(s: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let origin = header_str(headers, "origin").map(|o| o.trim_end_matches('/'));
    if crate::mcp::origin_allowed(origin, &s.0.config.mcp_origins) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "Origin {:?} may not call /mcp: an operator lists allowed origins under [api] mcp_origins",
            origin.unwrap_or("")
        )))
    }
}

/// `POST /mcp`: one JSON-RPC message of the MCP streamable HTTP transport.
async fn mcp_post(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_origin(&s, &headers)?;
    let caller = s.authorize_owner(&headers, Scope::Read).await?;
    let bytes = s.read_body(&headers, body).await?;
    let Some(task_guard) = s.0.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Err(ApiError::shutting_down());
    };
    let state = s.clone();
    let repeated = [
        crate::mcp::VERSION_HEADER,
        crate::mcp::METHOD_HEADER,
        crate::mcp::NAME_HEADER,
    ]
    .iter()
    .any(|h| headers.get_all(*h).iter().count() > 1);
    let mcp_headers = crate::mcp::Headers {
        session: header_str(&headers, crate::mcp::SESSION_HEADER).map(String::from),
        version: header_str(&headers, crate::mcp::VERSION_HEADER).map(String::from),
        method: header_str(&headers, crate::mcp::METHOD_HEADER).map(String::from),
        name: header_str(&headers, crate::mcp::NAME_HEADER).and_then(crate::mcp::decode_header),
        repeated,
    };
    // In its own task, like an incident: a client that hangs up does not cut a call off.
    let reply = tokio::spawn(async move {
        let reply = crate::mcp::handle(
            &state.0.controller,
            &state.0.mcp,
            &caller,
            &mcp_headers,
            &bytes,
        )
        .await;
        drop(task_guard);
        reply
    })
    .await
    .map_err(|e| ApiError::internal("mcp task", &e))?;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut resp = match reply.body {
        Some(body) => (status, Json(body)).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    };
    if let Some(id) = reply.session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert(crate::mcp::SESSION_HEADER, v);
    }
    Ok(resp)
}

/// `GET /mcp`: this server sends no messages of its own, so it offers no stream.
async fn mcp_get(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    check_origin(&s, &headers)?;
    s.authorize_owner(&headers, Scope::Read).await?;
    Ok((
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
        Json(serde_json::json!({"error": {
            "code": "method_not_allowed",
            "message": "this MCP server sends no messages of its own: POST requests to /mcp"
        }})),
    )
        .into_response())
}

/// `DELETE /mcp`: end the session.
async fn mcp_delete(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<StatusCode> {
    check_origin(&s, &headers)?;
    let caller = s.authorize_owner(&headers, Scope::Read).await?;
    let id = header_str(&headers, crate::mcp::SESSION_HEADER).ok_or_else(|| {
        ApiError::bad_request("no Mcp-Session-Id header: name the session to end")
    })?;
    if s.0.mcp.end(id, &caller) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such MCP session for this token"))
    }
}

/// `GET /v1/flywheel/candidates`: the tenant's L2 signatures and how close each is to
/// becoming an L1 rule.
async fn flywheel_candidates(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let candidates = s.0.controller.flywheel_candidates(&caller.tenant).await?;
    Ok(Json(serde_json::json!({"candidates": candidates})))
}

/// `GET /v1/hosts`: the caller's tenant's hosts (none for a tenant without any).
async fn list_hosts(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Read).await?;
    let hosts = s.0.controller.host_views(&caller.tenant).await?;
    Ok(Json(serde_json::json!({ "hosts": hosts })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EnrollTokenBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// `POST /v1/hosts/enroll-tokens`: a single-use token that enrolls one host into the
/// caller's tenant. Admin.
async fn create_enroll_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<runwarden_control::EnrollmentToken>> {
    let caller = s.authorize(&headers, Scope::Admin).await?;
    let body = s.read_body(&headers, body).await?;
    let body: EnrollTokenBody = if body.is_empty() {
        EnrollTokenBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"tenant\": …, \"labels\": {{…}}, \"ttl_secs\": …}} (each optional): {e}"
            ))
        })?
    };
    Ok(Json(
        s.0.controller
            .create_enrollment_token(&caller, body.tenant.as_deref(), body.labels, body.ttl_secs)
            .await?,
    ))
}

/// `POST /v1/hosts/{id}/drain|undrain`: stop or resume dispatching new jobs to a host.
async fn drain_host(
    State(s): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = s.authorize(&headers, Scope::Operate).await?;
    let Path((id, action)) = path.map_err(bad_path)?;
    let drained = match action.as_str() {
        "drain" => true,
        "undrain" => false,
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?} on hosts: drain or undrain"
            )));
        }
    };
    s.0.controller.drain(&caller, &id, drained).await?;
    Ok(Json(serde_json::json!({ "host": id, "drained": drained })))
}

/// `POST /v1/enroll`: an agent enrolls its host with a single-use enrollment token (the
/// token is the credential: no bearer token).
async fn enroll(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<runwarden_control::Enrolled>> {
    let body = s.read_body(&headers, body).await?;
    let e: runwarden_control::Enrollment = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"token\", \"host_id\", \"policy\", \"inventory\", \"key\"}}: {e}"
        ))
    })?;
    Ok(Json(s.0.controller.enroll(e).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    #[serde(default)]
    confirm: bool,
    /// The `rule_sha256` of the proposal that was reviewed (needed to confirm).
    #[serde(default)]
    rule_sha256: Option<String>,
}

/// `POST /v1/flywheel/candidates/{id}/promote`: the rule, compiled and replayed; deployed
/// only with `{"confirm": true}`. Admin: it changes what runs automatically.
async fn flywheel_promote(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<runwarden_control::Promotion>> {
    let caller = s.authorize(&headers, Scope::Admin).await?;
    let Path(id) = id.map_err(bad_path)?;
    let body = s.read_body(&headers, body).await?;
    let body: PromoteBody = if body.is_empty() {
        PromoteBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"confirm\": true|false}} or empty: {e}"
            ))
        })?
    };
    let confirm = match (body.confirm, body.rule_sha256.as_deref()) {
        (false, _) => None,
        (true, Some(sha)) => Some(sha),
        (true, None) => {
            return Err(ApiError::bad_request(
                "to confirm, pass the rule_sha256 of the proposal you reviewed: \
                 {\"confirm\": true, \"rule_sha256\": \"…\"}",
            ));
        }
    };
    Ok(Json(
        s.0.controller
            .flywheel_promote(&caller, &id, confirm)
            .await?,
    ))
}
