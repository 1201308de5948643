//! The audit seam of the request path: every `/v1` request leaves a record
//! (built by [`middleware`] from what authentication, authorization and the
//! policy chain put in the request's [`Slot`]); a download writes its
//! intent record durably before its first byte ([`intent`]) and a
//! completion record when its body ends or is dropped.
//!
//! Invariants a reader must keep:
//! - nothing is released before [`intent`] returns `Ok`; an error there is a
//!   503 and the response carries no data (fail closed);
//! - when the audit store is failing, every request except (if configured)
//!   metadata reads is refused with 503;
//! - failed authentications never wait on the audit store: the first per
//!   source and window is queued without blocking, the rest are counted and
//!   written as one record per window.

use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use modelvault_audit::{AuditRecord, DecisionRef, KeyRef, PrincipalRef, ResourceRef};
use modelvault_auth::{Principal, PrincipalKind};

use crate::gate::RequestId;
use crate::{ApiError, AppState};

tokio::task_local! {
    static SLOT: Arc<Mutex<Slot>>;
}

/// What the handlers learn about a request, for its audit record.
#[derive(Debug, Default)]
pub struct Slot {
    principal: Option<PrincipalRef>,
    decisions: Vec<DecisionRef>,
    /// The policy input the decisions were made on.
    input: Option<serde_json::Value>,
    version: Option<String>,
    /// Free detail for the record (a policy install's digest and signer).
    detail: Option<String>,
    /// The handler wrote its own record (a download's intent).
    handled: bool,
    /// Authentication failed: recorded by the failure counter instead.
    auth_failed: bool,
    /// The action the route declared ([`Declare`]).
    action: Option<&'static str>,
    /// The audit store is failing: `Some(reads allowed)`.
    audit_down: Option<bool>,
    /// Refused (503) because the audit store is failing.
    refused: bool,
    /// `ui` when a console session authenticated the request.
    channel: Option<&'static str>,
}

fn with_slot(f: impl FnOnce(&mut Slot)) {
    let _ = SLOT.try_with(|s| {
        if let Ok(mut g) = s.lock() {
            f(&mut g);
        }
    });
}

/// The principal as audit records show it.
pub fn principal_ref(p: &Principal) -> PrincipalRef {
    PrincipalRef {
        id: p.id.clone(),
        kind: match p.kind {
            PrincipalKind::Person => "person".into(),
            PrincipalKind::Service => "service".into(),
        },
        roles: p.roles(),
        groups: p.groups.clone(),
        environment: p.environment.clone(),
    }
}

/// Notes the verified principal of this request.
pub fn note_principal(p: &Principal) {
    let r = principal_ref(p);
    with_slot(|s| s.principal = Some(r));
}

/// Notes the channel the request came through (`ui`: a console session).
pub fn note_channel(channel: &'static str) {
    with_slot(|s| s.channel = Some(channel));
}

/// Notes that authentication failed (the counter records it).
pub fn note_auth_failed() {
    with_slot(|s| s.auth_failed = true);
}

/// Notes the policy chain's per-plugin results and the input they were
/// made on (`None` when no audit trail is kept).
pub fn note_decisions(
    results: &[modelvault_policy::PluginResult],
    input: Option<serde_json::Value>,
) {
    let d: Vec<DecisionRef> = results
        .iter()
        .map(|r| DecisionRef {
            plugin: r.plugin.clone(),
            sha256: r.sha256.clone(),
            outcome: match r.decision.outcome {
                modelvault_policy::Outcome::Allow => "allow",
                modelvault_policy::Outcome::Deny => "deny",
                modelvault_policy::Outcome::Abstain => "abstain",
            }
            .into(),
            reason_code: r.decision.reason_code.clone(),
            reason: r.decision.reason.clone(),
            mode: if r.shadow { "shadow" } else { "enforce" }.into(),
        })
        .collect();
    with_slot(|s| {
        s.decisions = d;
        s.input = input;
    });
}

/// Notes the resolved version (`latest` → `3`).
pub fn note_version(v: &str) {
    let v = v.to_string();
    with_slot(|s| s.version = Some(v));
}

/// Notes the record's detail (a policy install's digest and signer).
pub fn note_detail(detail: String) {
    with_slot(|s| s.detail = Some(detail));
}

/// The layer with which a route declares its audit action (in
/// `routes/mod.rs`, on each handler): the action is what the request's
/// record says, and while the audit store fails it decides whether the
/// request may go on (metadata reads only, if configured) or is refused
/// before its handler runs.
#[derive(Debug, Clone, Copy)]
pub struct Declare(pub &'static str);

impl<S> tower::Layer<S> for Declare {
    type Service = Declared<S>;

    fn layer(&self, inner: S) -> Declared<S> {
        Declared {
            inner,
            action: self.0,
        }
    }
}

/// A handler wrapped by [`Declare`].
#[derive(Debug, Clone)]
pub struct Declared<S> {
    inner: S,
    action: &'static str,
}

impl<S> tower::Service<Request> for Declared<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        S::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // A `HEAD` answered by a `GET` handler is not that handler's
        // action (docs/AUDIT.md: `other`).
        let action = if req.method() == Method::HEAD {
            "other"
        } else {
            self.action
        };
        // A download releases data and a console sign-in (the OIDC
        // callback is a GET) opens a session: neither is a metadata read.
        let read_only =
            req.method() == Method::GET && !matches!(action, "download" | "console-sign-in");
        let mut refused = false;
        with_slot(|s| {
            s.action = Some(action);
            // Fail closed while the audit store fails: only metadata reads
            // may go on, and only if configured.
            refused = s.audit_down.is_some_and(|reads| !(read_only && reads));
            s.refused = refused;
        });
        if refused {
            futures::future::Either::Left(std::future::ready(Ok(unavailable().into_response())))
        } else {
            futures::future::Either::Right(self.inner.call(req))
        }
    }
}

/// The resource named by a path, read against its route template.
fn resource_of(route: &str, path: &str) -> Option<ResourceRef> {
    let mut r = ResourceRef::default();
    let mut any = false;
    let mut actual = path.split('/');
    for seg in route.split('/') {
        let Some(value) = actual.next() else { break };
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        match seg {
            "{ns}" => r.namespace = Some(decode(value)),
            "{name}" if route.starts_with("/v1/models") => r.model = Some(decode(value)),
            "{name}" | "{environment}" => r.name = Some(decode(value)),
            "{version}" => r.version = Some(decode(value)),
            "{*path}" => {
                let rest: Vec<&str> = std::iter::once(value).chain(actual.by_ref()).collect();
                r.file = Some(rest.iter().map(|s| decode(s)).collect::<Vec<_>>().join("/"));
            }
            _ => continue,
        }
        any = true;
    }
    any.then_some(r)
}

fn outcome_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "allowed",
        401 => "unauthenticated",
        403 => "denied",
        404 | 410 => "not_found",
        400..=499 => "rejected",
        _ => "error",
    }
}

/// Counts every routed request by route template, method and status.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Records every `/v1` request once it is answered.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(audit) = state.audit.clone() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let source = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let rid = RequestId::from_headers(req.headers()).map(|r| r.0);
    let resource = resource_of(&route, req.uri().path());
    let slot = Arc::new(Mutex::new(Slot {
        audit_down: (!audit.healthy()).then_some(state.config.audit.allow_reads_when_unavailable),
        ..Slot::default()
    }));
    let resp = SLOT.scope(slot.clone(), next.run(req)).await;
    let (action, refused) = match slot.lock() {
        // A route that declared no action (a 405) is refused too while
        // the audit store fails.
        Ok(s) => (
            s.action.unwrap_or("other"),
            s.refused || (s.audit_down.is_some() && s.action.is_none()),
        ),
        Err(_) => ("other", !audit.healthy()),
    };
    if refused {
        let mut rec = AuditRecord::new("request", action, "error");
        rec.request_id = rid;
        rec.source = source;
        rec.resource = resource;
        rec.status = Some(503);
        rec.detail = Some("audit_unavailable".into());
        let _ = audit.try_record(rec);
        return unavailable().into_response();
    }
    let status = resp.status();
    let (principal, decisions, input, version, detail, channel, skip) = match slot.lock() {
        Ok(mut s) => (
            s.principal.take(),
            std::mem::take(&mut s.decisions),
            s.input.take(),
            s.version.take(),
            s.detail.take(),
            s.channel,
            s.handled || s.auth_failed,
        ),
        Err(_) => (None, Vec::new(), None, None, None, None, false),
    };
    if status == StatusCode::FORBIDDEN
        && let Some(p) = &principal
    {
        state.alerts.denial(p, source.clone());
    }
    if skip {
        return resp;
    }
    let mut rec = AuditRecord::new("request", action, outcome_of(status));
    rec.request_id = rid;
    rec.principal = principal;
    rec.source = source;
    rec.resource = resource.map(|mut r| {
        if version.is_some() {
            r.version = version;
        }
        r
    });
    rec.status = Some(status.as_u16());
    rec.decisions = decisions;
    rec.input = input;
    rec.detail = detail;
    rec.channel = channel.map(str::to_string);
    audit.record(rec).await;
    resp
}

/// The 503 of a failing audit store.
pub fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the audit trail cannot be written; nothing is released until it can",
    )
}

/// What a release is about to do, for its intent record.
pub struct Intent<'a> {
    /// The verified principal.
    pub principal: &'a Principal,
    /// `download` (later `key-release`).
    pub action: &'a str,
    /// Namespace, model, version, file, range.
    pub resource: ResourceRef,
    /// Keys touched.
    pub keys: Vec<KeyRef>,
    /// Request id.
    pub request_id: &'a str,
}

/// Writes a release's intent record durably; returns its sequence number.
/// An error is a 503: release nothing.
pub async fn intent(state: &AppState, i: &Intent<'_>) -> Result<Option<u64>, ApiError> {
    let Some(audit) = &state.audit else {
        return Ok(None);
    };
    let mut rec = AuditRecord::new("intent", i.action, "allowed");
    rec.request_id = Some(i.request_id.to_string());
    rec.principal = Some(principal_ref(i.principal));
    rec.resource = Some(i.resource.clone());
    rec.keys = i.keys.clone();
    let (decisions, input, channel) = SLOT
        .try_with(|s| {
            s.lock()
                .ok()
                .map(|g| (g.decisions.clone(), g.input.clone(), g.channel))
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    rec.decisions = decisions;
    rec.input = input;
    rec.channel = channel.map(str::to_string);
    rec.status = Some(200);
    let seq = audit.durable(rec).await.map_err(|e| {
        tracing::error!(error = %e, "audit intent not written; refusing the release");
        unavailable()
    })?;
    with_slot(|s| s.handled = true);
    Ok(Some(seq))
}

/// What a receipt states beyond its intent record.
pub struct ReceiptFacts {
    /// [`modelvault_audit::manifest_digest`] of the version's files.
    pub manifest_sha256: String,
    /// The downloaded file's SHA-256.
    pub file_sha256: Option<String>,
}

/// The signed decision receipt of a release whose intent record `seq` is
/// durable, as the value of the `Modelvault-Receipt` header; `None`
/// without an audit trail.
pub fn receipt(
    state: &AppState,
    i: &Intent<'_>,
    seq: Option<u64>,
    facts: ReceiptFacts,
) -> Option<axum::http::HeaderValue> {
    let (audit, seq) = (state.audit.as_ref()?, seq?);
    let decisions = SLOT
        .try_with(|s| s.lock().ok().map(|g| g.decisions.clone()))
        .ok()
        .flatten()
        .unwrap_or_default();
    let r = &i.resource;
    let receipt = modelvault_audit::Receipt {
        v: 1,
        request_id: i.request_id.to_string(),
        principal: principal_ref(i.principal),
        action: i.action.to_string(),
        environment: i.principal.environment.clone(),
        namespace: r.namespace.clone().unwrap_or_default(),
        model: r.model.clone().unwrap_or_default(),
        version: r.version.clone().unwrap_or_default(),
        manifest_sha256: facts.manifest_sha256,
        file: r.file.clone(),
        file_sha256: facts.file_sha256,
        range: r.range.clone(),
        decisions,
        time: chrono::Utc::now(),
        audit: modelvault_audit::AuditPointer {
            chain: audit.chain().to_string(),
            seq,
        },
    };
    match audit
        .sign_receipt(&receipt)
        .map(axum::http::HeaderValue::try_from)
    {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "receipt is not a header value");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "receipt not signed");
            None
        }
    }
}

/// Records the source address for an intent (the middleware knows it; the
/// handler passes it through).
pub fn completion(
    state: &AppState,
    intent_seq: Option<u64>,
    request_id: String,
    action: &'static str,
    bytes: u64,
    complete: bool,
) {
    let (Some(audit), Some(seq)) = (state.audit.clone(), intent_seq) else {
        return;
    };
    let mut rec = AuditRecord::new(
        "completion",
        action,
        if complete { "complete" } else { "aborted" },
    );
    rec.request_id = Some(request_id);
    rec.intent_seq = Some(seq);
    rec.bytes = Some(bytes);
    // Queued in place; a task waits for room only when the queue is full.
    if let Err(rec) = audit.try_queue(rec) {
        tokio::spawn(async move { audit.record(*rec).await });
    }
}

/// Writes the first failed authentication of a source in its window at
/// once (never blocking); the rest are written per window by
/// [`spawn_failure_flusher`].
pub fn auth_failure(
    state: &AppState,
    first_in_window: bool,
    source: Option<std::net::IpAddr>,
    reason: &str,
    request_id: Option<String>,
) {
    note_auth_failed();
    let Some(audit) = &state.audit else { return };
    if !first_in_window {
        return;
    }
    let mut rec = AuditRecord::new("authentication", "authentication", "unauthenticated");
    rec.source = source.map(|s| s.to_string());
    rec.detail = Some(reason.to_string());
    rec.request_id = request_id;
    rec.status = Some(401);
    rec.count = Some(1);
    if !audit.try_record(rec) {
        tracing::warn!("audit queue full; failed authentication counted only");
    }
}

/// Every window, writes one record per source with the failures beyond
/// the first.
pub fn spawn_failure_flusher(state: &AppState) {
    let Some(audit) = state.audit.clone() else {
        return;
    };
    let failures = state.auth_failures.clone();
    let every = std::time::Duration::from_secs(state.config.access.failure_window_secs.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            for (source, window_start, extra) in failures.drain_closed() {
                let mut rec =
                    AuditRecord::new("authentication", "authentication", "unauthenticated");
                rec.source = Some(source);
                rec.window_start = Some(window_start);
                rec.count = Some(extra);
                rec.detail = Some("aggregated".into());
                audit.record(rec).await;
            }
        }
    });
}
