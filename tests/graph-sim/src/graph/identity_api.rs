//! The identity platform surface: the token endpoint, signing keys, OpenID discovery and instance discovery.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::{self, Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::clock::entra_time;
use crate::identity::{self, TokenError, TokenRequest};
use crate::state::{Sim, read};

use super::{apply_faults, base_url, finish};

fn parse_token_request(req: &HttpRequest, body: &[u8]) -> TokenRequest {
    let form = url::form_urlencoded::parse(body).into_owned().collect();
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let decode = |x: &str| {
                url::form_urlencoded::parse(format!("v={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    TokenRequest { form, basic }
}

pub(super) async fn token(
    sim: Data<Sim>,
    req: HttpRequest,
    tenant_key: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    let ep = "token";
    if let Err(e) = apply_faults(&sim, ep).await {
        return finish(&sim, &req, ep, None, Err(e));
    }
    let (status, body, tenant_id) = match issue_token(&sim, &req, &tenant_key, &body) {
        Ok((v, tid)) => (StatusCode::OK, v, tid),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            token_error_body(&sim, &e),
            "unknown".to_owned(),
        ),
    };
    sim.count(&tenant_id, ep, status.as_u16());
    let mut b = HttpResponseBuilder::new(status);
    b.insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
        .insert_header(("x-ms-request-id", trace_id(&body)));
    // Entra echoes the correlation id when asked to (MSAL sends `return-client-request-id: true`).
    if let Some(cid) = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        b.insert_header(("client-request-id", cid.to_owned()));
    }
    b.body(body.to_string())
}

fn trace_id(body: &Value) -> String {
    body.get("trace_id")
        .and_then(Value::as_str)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn issue_token(
    sim: &Sim,
    req: &HttpRequest,
    tenant_key: &str,
    body: &[u8],
) -> Result<(Value, String), TokenError> {
    let tr = parse_token_request(req, body);
    // Field names only (never values): what Microsoft's libraries send (`client_info`, `claims`, …).
    let mut fields: Vec<&str> = tr.form.keys().map(String::as_str).collect();
    fields.sort_unstable();
    let assertion_alg = tr
        .form
        .get("client_assertion")
        .and_then(|a| jsonwebtoken::decode_header(a).ok())
        .map(|h| format!("{:?}", h.alg));
    tracing::info!(
        fields = %fields.join(","),
        basic = tr.basic.is_some(),
        assertion_alg = assertion_alg.as_deref().unwrap_or(""),
        claims = tr.form.get("claims").map_or("", String::as_str),
        "token request"
    );
    let tenant = sim
        .tenant(tenant_key)
        .ok_or_else(|| TokenError::tenant_not_found(tenant_key))?;
    let resource = identity::check_request_shape(&tr)?;
    let client_id = tr.client_id().unwrap_or_default().to_owned();
    let (app, api) = {
        let apps = read(&tenant.apps);
        let app = apps
            .get(&client_id)
            .cloned()
            .ok_or_else(|| identity::app_not_found(&client_id, &tenant.id))?;
        let api = match &resource {
            identity::Resource::Graph => None,
            identity::Resource::Api(name) => Some(
                apps.values()
                    .find(|candidate| candidate.is_resource(name))
                    .cloned()
                    .ok_or_else(|| identity::resource_not_found(name))?,
            ),
        };
        (app, api)
    };
    let audiences = vec![
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant.id
        ),
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            tenant.domain
        ),
        format!("{}/{}/oauth2/v2.0/token", base_url(req), tenant.id),
        format!("{}/{}/oauth2/v2.0/token", base_url(req), tenant.domain),
        format!("{}{}", base_url(req), req.path()),
    ];
    let now = sim.clock.now().unix_timestamp();
    let auth = identity::authenticate(&app, &tr, &audiences, now, &sim.jtis)?;
    let lifetime = sim.settings.token_lifetime_secs;
    let key = sim.keys.current();
    let token = match (&resource, &api) {
        (identity::Resource::Api(name), Some(api)) => {
            identity::mint_api_token(&key, &tenant.id, &app, api, name, auth, now, lifetime)
        }
        _ => identity::mint_access_token(&key, &tenant.id, &app, auth, now, lifetime),
    };
    Ok((
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
        tenant.id.clone(),
    ))
}

fn token_error_body(sim: &Sim, e: &TokenError) -> Value {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let ts = entra_time(sim.clock.now());
    json!({
        "error": e.error,
        "error_description": format!("AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}", e.code, e.description),
        "error_codes": [e.code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={}", e.code),
    })
}

pub(super) async fn jwks(sim: Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.keys.jwks())
}

/// Tenant keys that name no tenant but are valid authorities (multi-tenant endpoints).
const MULTI_TENANT: &[&str] = &["common", "organizations", "consumers"];

/// OpenID Connect discovery for a tenant (or `common`): MSAL reads `token_endpoint` and `authorization_endpoint`.
pub(super) async fn openid_configuration(
    sim: Data<Sim>,
    req: HttpRequest,
    tenant_key: web::Path<String>,
) -> HttpResponse {
    let base = base_url(&req);
    let (segment, tid) = if MULTI_TENANT.contains(&tenant_key.to_ascii_lowercase().as_str()) {
        (tenant_key.to_ascii_lowercase(), "{tenantid}".to_owned())
    } else {
        match sim.tenant(&tenant_key) {
            Some(t) => (t.id.clone(), t.id.clone()),
            None => {
                return HttpResponse::BadRequest().json(token_error_body(
                    &sim,
                    &TokenError::tenant_not_found(&tenant_key),
                ));
            }
        }
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "max-age=86400, private"))
        .json(openid_document(&base, &segment, &tid))
}

/// The discovery document; the issuer lives on the simulator's own host so OIDC-authority clients can match it.
fn openid_document(base: &str, segment: &str, tid: &str) -> Value {
    json!({
        "token_endpoint": format!("{base}/{segment}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{segment}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{segment}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{segment}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

/// Query of Entra's instance discovery (`/common/discovery/instance`).
#[derive(Debug, serde::Deserialize)]
pub(super) struct InstanceQuery {
    authorization_endpoint: Option<String>,
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Instance discovery as MSAL calls it: the simulator vouches for its own host only.
pub(super) async fn instance_discovery(req: HttpRequest, q: Query<InstanceQuery>) -> HttpResponse {
    let base = base_url(&req);
    let own_host = req.connection_info().host().to_ascii_lowercase();
    // MSAL Python builds the endpoint from the authority's host name without its port, so the port is not compared.
    let own_name = own_host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(own_host.as_str(), |(name, _)| name)
        .to_owned();
    let api_version = q.api_version.clone().unwrap_or_else(|| "1.1".to_owned());
    let endpoint = q
        .authorization_endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok());
    let tenant = endpoint.as_ref().and_then(|u| {
        let host = u.host_str()?.to_ascii_lowercase();
        (host == own_name || host.trim_matches(['[', ']']) == own_name.trim_matches(['[', ']']))
            .then(|| u.path_segments()?.next().map(str::to_owned))
            .flatten()
    });
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        let trace = uuid::Uuid::new_v4().to_string();
        return HttpResponse::BadRequest().json(json!({
            "error": "invalid_instance",
            "error_description": format!("AADSTS50049: Unknown or invalid instance.\r\nTrace ID: {trace}"),
            "error_codes": [50049],
            "trace_id": trace,
        }));
    };
    HttpResponse::Ok().json(json!({
        "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": api_version,
        "metadata": [{
            "preferred_network": own_host,
            "preferred_cache": own_host,
            "aliases": [own_host],
        }],
    }))
}
