//! The control API (its own port, not part of Graph): tenants, apps, seeding, directory mutations, profiles,
//! snapshots, counters and the delivery log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::graph_time;
use crate::delivery::DeliveryProfile;
use crate::directory::{DirectoryError, Kind, make_photo};
use crate::identity::{
    AppRegistration, FEDERATION_AUDIENCE, FederatedCredential, KeyError, RegisteredCert,
};
use crate::seed::{self, SeedSpec};
use crate::state::{DeltaSettings, PhotoSettings, Sim, Tenant, lock, write};
use crate::subscriptions::SubscriptionPolicy;
use crate::throttle::{FaultRule, ThrottleProfile};

/// Registers the control routes under `/control`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/control")
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
            .route("/clock", web::get().to(clock))
            .route("/clock/advance", web::post().to(advance_clock))
            .route("/keys/rotate", web::post().to(rotate_keys))
            .route("/throttle", web::put().to(set_throttle))
            .route("/faults", web::put().to(set_faults))
            .route("/faults", web::get().to(get_faults))
            .route("/delivery", web::put().to(set_delivery))
            .route("/delivery", web::get().to(get_delivery))
            .route(
                "/subscription-policy",
                web::put().to(set_subscription_policy),
            )
            .route("/counters", web::get().to(counters))
            .route("/deliveries", web::get().to(deliveries))
            .route("/tenants", web::post().to(create_tenant))
            .route("/tenants/{t}", web::delete().to(delete_tenant))
            .route("/tenants/{t}/apps", web::post().to(create_app))
            .route("/tenants/{t}/apps/{client}", web::patch().to(update_app))
            .route("/tenants/{t}/seed", web::post().to(seed_tenant))
            .route("/tenants/{t}/snapshot", web::get().to(snapshot))
            .route("/tenants/{t}/delta", web::put().to(set_delta))
            .route("/tenants/{t}/photos", web::put().to(set_photos))
            .route(
                "/tenants/{t}/subscriptions",
                web::get().to(list_subscriptions),
            )
            .route(
                "/tenants/{t}/subscriptions/{id}/lifecycle",
                web::post().to(send_lifecycle),
            )
            .route("/tenants/{t}/users/{id}/photo", web::put().to(set_photo))
            .route(
                "/tenants/{t}/users/{id}/photo",
                web::delete().to(clear_photo),
            )
            .route(
                "/tenants/{t}/roles/{template}/members/{user}",
                web::put().to(assign_role),
            )
            .route(
                "/tenants/{t}/roles/{template}/members/{user}",
                web::delete().to(unassign_role),
            )
            .route(
                "/tenants/{t}/groups/{id}/members",
                web::post().to(add_member),
            )
            .route(
                "/tenants/{t}/groups/{id}/members/{member}",
                web::delete().to(remove_member),
            )
            .route("/tenants/{t}/{kind}", web::post().to(create_object))
            .route("/tenants/{t}/{kind}/{id}", web::patch().to(update_object))
            .route("/tenants/{t}/{kind}/{id}", web::delete().to(delete_object))
            .route(
                "/tenants/{t}/{kind}/{id}/restore",
                web::post().to(restore_object),
            ),
    );
}

/// A control API failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Unknown tenant.
    #[error("tenant '{0}' does not exist")]
    UnknownTenant(String),
    /// Unknown app.
    #[error("app '{0}' does not exist in this tenant")]
    UnknownApp(String),
    /// Unknown subscription.
    #[error("subscription '{0}' does not exist")]
    UnknownSubscription(String),
    /// Path segment is neither `users` nor `groups`.
    #[error("unknown object kind '{0}' (use users or groups)")]
    UnknownKind(String),
    /// The directory refused the change.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A key or certificate could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The request body is malformed.
    #[error("{0}")]
    BadRequest(String),
}

impl ResponseError for ControlError {
    fn status_code(&self) -> StatusCode {
        match self {
            ControlError::UnknownTenant(_)
            | ControlError::UnknownApp(_)
            | ControlError::UnknownSubscription(_) => StatusCode::NOT_FOUND,
            ControlError::Directory(
                DirectoryError::NotFound(_) | DirectoryError::RoleNotFound(_),
            ) => StatusCode::NOT_FOUND,
            ControlError::Directory(DirectoryError::AlreadyExists(_)) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({"error": self.to_string()}))
    }
}

type Result<T> = std::result::Result<T, ControlError>;

fn tenant(sim: &Sim, key: &str) -> Result<Arc<Tenant>> {
    sim.tenant(key)
        .ok_or_else(|| ControlError::UnknownTenant(key.to_owned()))
}

fn kind(segment: &str) -> Result<Kind> {
    match segment {
        "users" => Ok(Kind::User),
        "groups" => Ok(Kind::Group),
        other => Err(ControlError::UnknownKind(other.to_owned())),
    }
}

/// Adds a token-signing key: new tokens carry its `kid`; the JWKS publishes it beside the old.
async fn rotate_keys(sim: Data<Sim>) -> Result<HttpResponse> {
    let kid = sim.keys.rotate()?;
    Ok(HttpResponse::Ok().json(json!({"kid": kid})))
}

async fn clock(sim: Data<Sim>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"now": graph_time(sim.clock.now()), "timeScale": sim.clock.time_scale()}))
}

#[derive(Debug, Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock(sim: Data<Sim>, body: Json<Advance>) -> HttpResponse {
    let now = sim.clock.advance(Duration::from_secs(body.seconds));
    sim.tick();
    HttpResponse::Ok().json(json!({"now": graph_time(now)}))
}

async fn set_throttle(sim: Data<Sim>, body: Json<ThrottleProfile>) -> HttpResponse {
    *lock(&sim.throttle_profile) = body.into_inner();
    HttpResponse::NoContent().finish()
}

async fn set_faults(sim: Data<Sim>, body: Json<Vec<FaultRule>>) -> HttpResponse {
    *lock(&sim.faults) = body.into_inner();
    HttpResponse::NoContent().finish()
}

async fn get_faults(sim: Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(lock(&sim.faults).clone())
}

async fn set_delivery(sim: Data<Sim>, body: Json<DeliveryProfile>) -> HttpResponse {
    sim.notifier.set_profile(body.into_inner());
    HttpResponse::NoContent().finish()
}

async fn get_delivery(sim: Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(
        json!({"profile": sim.notifier.profile(), "endpoints": sim.notifier.endpoint_states()}),
    )
}

async fn set_subscription_policy(sim: Data<Sim>, body: Json<SubscriptionPolicy>) -> HttpResponse {
    *lock(&sim.sub_policy) = body.into_inner();
    HttpResponse::NoContent().finish()
}

#[derive(Debug, Deserialize)]
struct TenantFilter {
    tenant: Option<String>,
}

async fn counters(sim: Data<Sim>, q: Query<TenantFilter>) -> HttpResponse {
    HttpResponse::Ok().json(sim.counters(q.tenant.as_deref()))
}

async fn deliveries(sim: Data<Sim>, q: Query<TenantFilter>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"value": sim.notifier.log(q.tenant.as_deref())}))
}

#[derive(Debug, Deserialize, Default)]
struct NewTenant {
    id: Option<String>,
    domain: Option<String>,
}

async fn create_tenant(sim: Data<Sim>, body: Option<Json<NewTenant>>) -> HttpResponse {
    let body = body.map(Json::into_inner).unwrap_or_default();
    let t = sim.create_tenant(body.id, body.domain);
    HttpResponse::Created().json(json!({"id": t.id, "domain": t.domain}))
}

async fn delete_tenant(sim: Data<Sim>, t: Path<String>) -> Result<HttpResponse> {
    if sim.delete_tenant(&t) {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ControlError::UnknownTenant(t.into_inner()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FederatedInput {
    name: Option<String>,
    issuer: String,
    subject: String,
    audiences: Option<Vec<String>>,
    /// A JWKS document or a PEM public key/certificate of the issuer.
    keys: Value,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AppInput {
    client_id: Option<String>,
    display_name: Option<String>,
    /// `true` generates a secret; a string registers that secret.
    secret: Option<Value>,
    #[serde(default)]
    certificates: Vec<String>,
    #[serde(default)]
    federated_credentials: Vec<FederatedInput>,
    permissions: Option<Vec<String>>,
    /// App ID URIs when the app exposes an API (`api://…`).
    identifier_uris: Option<Vec<String>>,
    /// The app roles the API defines (their values).
    app_roles: Option<Vec<String>>,
    /// The API's `requestedAccessTokenVersion` (1 or 2).
    access_token_version: Option<u8>,
    /// App roles of other apps' APIs granted to this app: `{"<api client id>": ["admin"]}`.
    app_role_assignments: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

fn federated(inputs: Vec<FederatedInput>) -> Result<Vec<FederatedCredential>> {
    inputs
        .into_iter()
        .map(|f| {
            let name = f.name.unwrap_or_else(|| "federated".to_owned());
            let audiences = f
                .audiences
                .unwrap_or_else(|| vec![FEDERATION_AUDIENCE.to_owned()]);
            FederatedCredential::new(name, f.issuer, f.subject, audiences, &f.keys)
                .map_err(ControlError::from)
        })
        .collect()
}

fn apply_app_input(app: &mut AppRegistration, input: AppInput) -> Result<Option<String>> {
    let new_secret = match input.secret {
        Some(Value::Bool(true)) => Some(format!("sim~{}", uuid::Uuid::new_v4().simple())),
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Bool(false)) | Some(Value::Null) => None,
        Some(_) => {
            return Err(ControlError::BadRequest(
                "secret must be true or a string".into(),
            ));
        }
    };
    if let Some(s) = &new_secret {
        app.secrets.push(s.clone());
    }
    for c in &input.certificates {
        app.certificates.push(RegisteredCert::parse(c)?);
    }
    app.federated
        .extend(federated(input.federated_credentials)?);
    if let Some(p) = input.permissions {
        app.permissions = p.into_iter().collect();
    }
    if let Some(n) = input.display_name {
        app.display_name = n;
    }
    if let Some(uris) = input.identifier_uris {
        app.identifier_uris = uris;
    }
    if let Some(roles) = input.app_roles {
        app.app_roles = roles.into_iter().collect();
    }
    match input.access_token_version {
        None => {}
        Some(version @ (1 | 2)) => app.access_token_version = version,
        Some(_) => {
            return Err(ControlError::BadRequest(
                "accessTokenVersion must be 1 or 2".into(),
            ));
        }
    }
    if let Some(assignments) = input.app_role_assignments {
        app.role_assignments = assignments
            .into_iter()
            .map(|(api, roles)| (api, roles.into_iter().collect()))
            .collect();
    }
    Ok(new_secret)
}

fn app_json(app: &AppRegistration, secret: Option<String>) -> Value {
    let certs: Vec<Value> = app
        .certificates
        .iter()
        .map(|c| json!({"x5t": c.sha1, "x5t#S256": c.sha256}))
        .collect();
    let feds: Vec<Value> = app.federated.iter().map(|f| json!({"name": f.name, "issuer": f.issuer, "subject": f.subject, "audiences": f.audiences})).collect();
    json!({
        "clientId": app.client_id,
        "displayName": app.display_name,
        "servicePrincipalId": app.service_principal_id,
        "secret": secret,
        "certificates": certs,
        "federatedCredentials": feds,
        "permissions": app.permissions,
        "identifierUris": app.identifier_uris,
        "appRoles": app.app_roles,
        "accessTokenVersion": app.access_token_version,
        "appRoleAssignments": app.role_assignments,
    })
}

async fn create_app(sim: Data<Sim>, t: Path<String>, body: Json<AppInput>) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    let input = body.into_inner();
    let mut app = AppRegistration {
        client_id: input
            .client_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        display_name: "graph-sim app".to_owned(),
        service_principal_id: uuid::Uuid::new_v4().to_string(),
        secrets: Vec::new(),
        certificates: Vec::new(),
        federated: Vec::new(),
        permissions: BTreeSet::new(),
        identifier_uris: Vec::new(),
        app_roles: BTreeSet::new(),
        access_token_version: 1,
        role_assignments: std::collections::BTreeMap::new(),
    };
    let secret = apply_app_input(&mut app, input)?;
    let out = app_json(&app, secret);
    write(&tenant.apps).insert(app.client_id.clone(), app);
    Ok(HttpResponse::Created().json(out))
}

async fn update_app(
    sim: Data<Sim>,
    path: Path<(String, String)>,
    body: Json<AppInput>,
) -> Result<HttpResponse> {
    let (t, client) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    let mut apps = write(&tenant.apps);
    let app = apps
        .get_mut(&client)
        .ok_or_else(|| ControlError::UnknownApp(client.clone()))?;
    let secret = apply_app_input(app, body.into_inner())?;
    Ok(HttpResponse::Ok().json(app_json(app, secret)))
}

async fn seed_tenant(
    sim: Data<Sim>,
    t: Path<String>,
    body: Json<SeedSpec>,
) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    let spec = body.into_inner();
    let started = Instant::now();
    let domain = tenant.domain.clone();
    let mut summary = None;
    let report = sim.mutate(&tenant, |dir| {
        let (s, m) = seed::seed(dir, &spec, &domain)?;
        summary = Some(s);
        Ok(m)
    })?;
    Ok(HttpResponse::Ok().json(
        json!({"summary": summary, "change": report, "seconds": started.elapsed().as_secs_f64()}),
    ))
}

async fn snapshot(sim: Data<Sim>, t: Path<String>) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    let body = crate::state::read(&tenant.dir).snapshot();
    Ok(HttpResponse::Ok().json(json!({"tenantId": tenant.id, "directory": body})))
}

async fn set_delta(
    sim: Data<Sim>,
    t: Path<String>,
    body: Json<DeltaSettings>,
) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    *lock(&tenant.delta) = body.into_inner();
    Ok(HttpResponse::NoContent().finish())
}

async fn set_photos(
    sim: Data<Sim>,
    t: Path<String>,
    body: Json<PhotoSettings>,
) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    let settings = body.into_inner();
    *lock(&tenant.photos) = settings.clone();
    Ok(HttpResponse::Ok().json(settings))
}

async fn list_subscriptions(sim: Data<Sim>, t: Path<String>) -> Result<HttpResponse> {
    let tenant = tenant(&sim, &t)?;
    let subs: Vec<Value> = lock(&tenant.subs).values().map(|s| s.to_json()).collect();
    Ok(HttpResponse::Ok().json(json!({"value": subs})))
}

#[derive(Debug, Deserialize)]
struct LifecycleInput {
    event: String,
    /// `subscriptionRemoved` also deletes the subscription unless this is false.
    #[serde(default = "yes")]
    remove: bool,
}

fn yes() -> bool {
    true
}

async fn send_lifecycle(
    sim: Data<Sim>,
    path: Path<(String, String)>,
    body: Json<LifecycleInput>,
) -> Result<HttpResponse> {
    let (t, id) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    let sub = lock(&tenant.subs)
        .get(&id)
        .cloned()
        .ok_or_else(|| ControlError::UnknownSubscription(id.clone()))?;
    if !matches!(
        body.event.as_str(),
        "reauthorizationRequired" | "subscriptionRemoved" | "missed"
    ) {
        return Err(ControlError::BadRequest(format!(
            "unknown lifecycle event '{}'",
            body.event
        )));
    }
    let sent = if body.event == "reauthorizationRequired" {
        sim.challenge_subscription(&tenant, &id)
            .is_some_and(|s| s.lifecycle_url.is_some())
    } else {
        sim.send_lifecycle(&tenant, &sub, &body.event)
    };
    if body.event == "subscriptionRemoved" && body.remove {
        lock(&tenant.subs).remove(&id);
    }
    Ok(HttpResponse::Ok().json(json!({"sent": sent})))
}

fn props(body: &Bytes) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ControlError::BadRequest(
            "the body must be a JSON object of properties".into(),
        )),
    }
}

async fn create_object(
    sim: Data<Sim>,
    path: Path<(String, String)>,
    body: Bytes,
) -> Result<HttpResponse> {
    let (t, k) = path.into_inner();
    let (tenant, kind) = (tenant(&sim, &t)?, kind(&k)?);
    let p = props(&body)?;
    let id = p.get("id").and_then(Value::as_str).map(str::to_owned);
    let mut created = String::new();
    let report = sim.mutate(&tenant, |dir| {
        let (new_id, m) = dir.create(kind, id, &p)?;
        created = new_id;
        Ok(m)
    })?;
    Ok(HttpResponse::Created().json(json!({"id": created, "change": report})))
}

async fn update_object(
    sim: Data<Sim>,
    path: Path<(String, String, String)>,
    body: Bytes,
) -> Result<HttpResponse> {
    let (t, k, id) = path.into_inner();
    let (tenant, kind) = (tenant(&sim, &t)?, kind(&k)?);
    let p = props(&body)?;
    let report = sim.mutate(&tenant, |dir| dir.update(kind, &id, &p))?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "change": report})))
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    permanent: bool,
}

async fn delete_object(
    sim: Data<Sim>,
    path: Path<(String, String, String)>,
    q: Query<DeleteQuery>,
) -> Result<HttpResponse> {
    let (t, k, id) = path.into_inner();
    let (tenant, kind) = (tenant(&sim, &t)?, kind(&k)?);
    let report = if q.permanent {
        sim.mutate(&tenant, |dir| dir.purge(kind, &id))?
    } else {
        sim.mutate(&tenant, |dir| dir.soft_delete(kind, &id))?
    };
    Ok(HttpResponse::Ok().json(json!({"id": id, "change": report})))
}

async fn restore_object(
    sim: Data<Sim>,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let (t, k, id) = path.into_inner();
    let (tenant, kind) = (tenant(&sim, &t)?, kind(&k)?);
    let report = sim.mutate(&tenant, |dir| dir.restore(kind, &id))?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "change": report})))
}

#[derive(Debug, Deserialize)]
struct MemberInput {
    id: String,
}

async fn add_member(
    sim: Data<Sim>,
    path: Path<(String, String)>,
    body: Json<MemberInput>,
) -> Result<HttpResponse> {
    let (t, g) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    let report = sim.mutate(&tenant, |dir| dir.add_member(&g, &body.id))?;
    Ok(HttpResponse::Ok().json(json!({"change": report})))
}

async fn remove_member(
    sim: Data<Sim>,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let (t, g, m) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    let report = sim.mutate(&tenant, |dir| dir.remove_member(&g, &m))?;
    Ok(HttpResponse::Ok().json(json!({"change": report})))
}

#[derive(Debug, Deserialize)]
struct PhotoQuery {
    width: Option<u32>,
    height: Option<u32>,
}

async fn set_photo(
    sim: Data<Sim>,
    req: HttpRequest,
    path: Path<(String, String)>,
    q: Query<PhotoQuery>,
    body: Bytes,
) -> Result<HttpResponse> {
    let (t, id) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("image/jpeg")
        .to_owned();
    let photo = make_photo(
        body.to_vec(),
        ct,
        q.width.unwrap_or(240),
        q.height.unwrap_or(240),
    );
    let etag = photo.etag.clone();
    write(&tenant.dir).set_photo(&id, Some(photo))?;
    Ok(HttpResponse::Ok().json(json!({"etag": etag, "changedAt": graph_time(sim.clock.now())})))
}

async fn clear_photo(sim: Data<Sim>, path: Path<(String, String)>) -> Result<HttpResponse> {
    let (t, id) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    write(&tenant.dir).set_photo(&id, None)?;
    Ok(HttpResponse::Ok().json(json!({"changedAt": graph_time(sim.clock.now())})))
}

async fn assign_role(sim: Data<Sim>, path: Path<(String, String, String)>) -> Result<HttpResponse> {
    let (t, template, user) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    write(&tenant.dir).assign_role(&template, &user)?;
    Ok(HttpResponse::Ok().json(json!({"changedAt": graph_time(sim.clock.now())})))
}

async fn unassign_role(
    sim: Data<Sim>,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let (t, template, user) = path.into_inner();
    let tenant = tenant(&sim, &t)?;
    write(&tenant.dir).unassign_role(&template, &user)?;
    Ok(HttpResponse::Ok().json(json!({"changedAt": graph_time(sim.clock.now())})))
}
