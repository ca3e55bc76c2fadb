//! The identity-platform half: app registrations, the client-credentials token endpoint logic and access tokens
//! (graph-facts §10).
//!
//! Clients authenticate with a secret, a certificate-signed `client_assertion` (RS256 + `x5t` or PS256 +
//! `x5t#S256`) or a federated assertion from a registered external issuer. Access tokens are RS256 JWTs shaped
//! like Graph's app-only v1.0 tokens, signed by a key generated at start-up and published as a JWKS.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The resource app id of Microsoft Graph.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// The audience of Graph access tokens.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// The audience federated assertions must carry.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// `client_assertion_type` for JWT assertions.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew tolerated on assertion `exp`/`nbf` (Entra allows five minutes).
const SKEW_SECS: i64 = 300;

/// Why the simulator could not set up its keys or register a credential.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// RSA key or certificate generation failed.
    #[error("generating the signing key failed")]
    Generate(#[from] rcgen::Error),
    /// A PEM/DER/JWKS input was not usable.
    #[error("the key material is not a usable RSA key or certificate: {0}")]
    Unusable(String),
}

/// The simulator's token-signing key.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates an RSA-2048 key and a self-signed certificate for it.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let params = rcgen::CertificateParams::new(vec!["graph-sim token signing".to_owned()])?;
        let cert = params.self_signed(&pair)?;
        let kid = URL_SAFE_NO_PAD.encode(Sha1::digest(cert.der()));
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        let decoding = DecodingKey::from_rsa_pem(cert.pem().as_bytes())
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.x509_sha1_fingerprint = Some(kid.clone());
        jwk.common.x509_chain = Some(vec![STANDARD.encode(cert.der())]);
        jwk.common.key_algorithm = None;
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }

    /// The JWKS document for this key (`/discovery/v2.0/keys`).
    pub fn jwks(&self) -> Value {
        let mut key = serde_json::to_value(&self.jwk).unwrap_or_else(|_| json!({}));
        key["use"] = json!("sig");
        json!({ "keys": [key] })
    }
}

/// The simulator's signing keys: the newest signs, all are published (Entra publishes several
/// keys and rolls them; a relying party must pick the key by `kid` and refresh its JWKS when it
/// meets a new one). `POST /control/keys/rotate` adds a key.
#[derive(Debug)]
pub struct KeyRing {
    keys: std::sync::RwLock<Vec<std::sync::Arc<SigningKey>>>,
}

/// How many keys a ring publishes at most (the oldest goes first).
const RING_SIZE: usize = 3;

impl KeyRing {
    /// A ring holding one key.
    pub fn new(first: SigningKey) -> Self {
        Self {
            keys: std::sync::RwLock::new(vec![std::sync::Arc::new(first)]),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<std::sync::Arc<SigningKey>>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> std::sync::Arc<SigningKey> {
        let keys = self.read();
        keys[keys.len() - 1].clone()
    }

    /// Adds a new signing key (the oldest beyond the ring's size is dropped); returns its `kid`.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let key = SigningKey::generate()?;
        let kid = key.kid.clone();
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.push(std::sync::Arc::new(key));
        if keys.len() > RING_SIZE {
            keys.remove(0);
        }
        Ok(kid)
    }

    /// The JWKS document with every published key.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .read()
            .iter()
            .flat_map(|key| key.jwks()["keys"].as_array().cloned().unwrap_or_default())
            .collect();
        json!({ "keys": keys })
    }

    /// [`verify_access_token`] with the published key the token's `kid` names.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, BearerError> {
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .ok_or(BearerError::Invalid)?;
        let key = self
            .read()
            .iter()
            .find(|key| key.kid == kid)
            .cloned()
            .ok_or(BearerError::Invalid)?;
        verify_access_token(&key, token, now)
    }
}

/// A certificate registered on an app (its thumbprints and public key).
#[derive(Debug, Clone)]
pub struct RegisteredCert {
    /// base64url SHA-1 of the DER (`x5t`).
    pub sha1: String,
    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub sha256: String,
    key: DecodingKey,
}

impl RegisteredCert {
    /// Parses a certificate given as PEM or base64 DER (Graph's `keyCredentials.key` form).
    pub fn parse(input: &str) -> Result<Self, KeyError> {
        let der = if input.contains("-----BEGIN") {
            let body: String = input
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("");
            STANDARD
                .decode(body.trim())
                .map_err(|e| KeyError::Unusable(e.to_string()))?
        } else {
            STANDARD
                .decode(input.trim())
                .map_err(|e| KeyError::Unusable(e.to_string()))?
        };
        let key = DecodingKey::from_rsa_pem(der_to_pem(&der).as_bytes())
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        Ok(Self {
            sha1: URL_SAFE_NO_PAD.encode(Sha1::digest(&der)),
            sha256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
            key,
        })
    }
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A federated identity credential with the external issuer's public keys.
#[derive(Debug, Clone)]
pub struct FederatedCredential {
    /// Credential name.
    pub name: String,
    /// Exact `iss` to match.
    pub issuer: String,
    /// Exact `sub` to match.
    pub subject: String,
    /// Accepted audiences (normally `api://AzureADTokenExchange`).
    pub audiences: Vec<String>,
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl FederatedCredential {
    /// Builds a credential; `keys` is a JWKS document or a PEM public key / certificate.
    pub fn new(
        name: String,
        issuer: String,
        subject: String,
        audiences: Vec<String>,
        keys: &Value,
    ) -> Result<Self, KeyError> {
        let keys = parse_issuer_keys(keys)?;
        Ok(Self {
            name,
            issuer,
            subject,
            audiences,
            keys,
        })
    }
}

fn parse_issuer_keys(v: &Value) -> Result<Vec<(Option<String>, DecodingKey)>, KeyError> {
    if let Some(pem) = v.as_str() {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError::Unusable(e.to_string()))?;
        return Ok(vec![(None, key)]);
    }
    let set: JwkSet =
        serde_json::from_value(v.clone()).map_err(|e| KeyError::Unusable(e.to_string()))?;
    set.keys
        .iter()
        .take(100)
        .map(|jwk| {
            Ok((
                jwk.common.key_id.clone(),
                DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Unusable(e.to_string()))?,
            ))
        })
        .collect()
}

/// An app registration (with its service principal) in one tenant.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    /// Application (client) id.
    pub client_id: String,
    /// Display name (`app_displayname` claim).
    pub display_name: String,
    /// Service principal object id (`oid`/`sub` of its tokens, `creatorId` of its subscriptions).
    pub service_principal_id: String,
    /// Client secrets.
    pub secrets: Vec<String>,
    /// Registered certificates.
    pub certificates: Vec<RegisteredCert>,
    /// Federated identity credentials.
    pub federated: Vec<FederatedCredential>,
    /// Granted application permissions (app roles such as `User.Read.All`).
    pub permissions: BTreeSet<String>,
    /// When the app exposes an API: its App ID URIs (`api://…`), the resource of
    /// `api://…/.default` token requests.
    pub identifier_uris: Vec<String>,
    /// The app roles the API defines (their `value`s).
    pub app_roles: BTreeSet<String>,
    /// The manifest's `requestedAccessTokenVersion` of the API: 1 (the default) or 2.
    pub access_token_version: u8,
    /// App roles of other apps' APIs granted to this app, by the API app's client id.
    pub role_assignments: std::collections::BTreeMap<String, BTreeSet<String>>,
}

impl AppRegistration {
    /// Whether `resource` (an App ID URI or the client id) names this app's API.
    pub fn is_resource(&self, resource: &str) -> bool {
        self.client_id == resource
            || self
                .identifier_uris
                .iter()
                .any(|uri| uri.trim_end_matches('/') == resource)
    }
}

/// An Entra-shaped token endpoint error (graph-facts §10).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("AADSTS{code}: {description}")]
pub struct TokenError {
    /// HTTP status (400 or 401).
    pub status: u16,
    /// OAuth `error` (`invalid_client`, `invalid_scope`, ...).
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// The human text after `AADSTSnnn: `.
    pub description: String,
}

fn err(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> TokenError {
    TokenError {
        status,
        error,
        code,
        description: description.into(),
    }
}

impl TokenError {
    /// AADSTS90002: unknown tenant.
    pub fn tenant_not_found(tenant: &str) -> Self {
        err(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    }
}

/// The parsed form of a token request.
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// Form fields.
    pub form: HashMap<String, String>,
    /// Client id and secret from HTTP Basic authentication, if sent.
    pub basic: Option<(String, String)>,
}

impl TokenRequest {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The client id from the form or Basic auth.
    pub fn client_id(&self) -> Option<&str> {
        self.field("client_id")
            .or(self.basic.as_ref().map(|(id, _)| id.as_str()))
    }
}

/// How the client authenticated (the `appidacr` claim: 1 secret, 2 certificate or assertion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Client secret.
    Secret,
    /// Certificate-signed assertion.
    Certificate,
    /// Federated assertion.
    Federated,
}

/// What a client-credentials request asks a token for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// Microsoft Graph.
    Graph,
    /// Another app's API, named by its App ID URI or client id (`api://…/.default`).
    Api(String),
}

/// Checks grant type and scope before the client is looked up; returns the resource asked for.
pub fn check_request_shape(req: &TokenRequest) -> Result<Resource, TokenError> {
    match req.field("grant_type") {
        None => {
            return Err(err(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
        Some("client_credentials") => {}
        Some(other) => {
            return Err(err(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    if req.client_id().is_none() {
        return Err(err(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    }
    let Some(scope) = req.field("scope") else {
        return Err(err(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 {
        return Err(err(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        ));
    }
    let Some(resource) = scopes[0].strip_suffix("/.default") else {
        return Err(err(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    };
    let resource = resource.trim_end_matches('/');
    if resource == GRAPH_AUDIENCE || resource == GRAPH_APP_ID {
        Ok(Resource::Graph)
    } else {
        Ok(Resource::Api(resource.to_owned()))
    }
}

/// The error for a resource no app of the tenant exposes (AADSTS500011).
pub fn resource_not_found(resource: &str) -> TokenError {
    err(
        400,
        "invalid_resource",
        500011,
        format!("The resource principal named {resource} was not found in the tenant."),
    )
}

/// The error for a client id not registered in the tenant (AADSTS700016).
pub fn app_not_found(client_id: &str, tenant: &str) -> TokenError {
    err(
        400,
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

/// Single-use `jti` memory for certificate assertions.
#[derive(Debug, Default)]
pub struct JtiCache {
    seen: Mutex<HashMap<String, i64>>,
}

impl JtiCache {
    /// Records a jti; `false` if it was already used and has not expired.
    fn remember(&self, jti: &str, exp: i64, now: i64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > 10_000 {
            seen.retain(|_, e| *e + SKEW_SECS >= now);
        }
        seen.insert(jti.to_owned(), exp).is_none()
    }
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    jti: Option<String>,
}

/// RFC 7519 NumericDate: seconds that "can represent non-integer values". MSAL Python sends
/// `exp`/`iat` as floats (`1795312656.92`), which Entra accepts; fractions are dropped.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64))))
}

/// Thumbprints compare without base64 padding: MSAL Python sends `x5t`/`x5t#S256` padded (`…VTQ=`).
fn same_thumbprint(registered: &str, presented: &str) -> bool {
    registered.trim_end_matches('=') == presented.trim_end_matches('=')
}

/// Authenticates the client of a token request against its app registration.
///
/// `audiences` are the token endpoint URLs a certificate assertion may name in `aud`.
pub fn authenticate(
    app: &AppRegistration,
    req: &TokenRequest,
    audiences: &[String],
    now: i64,
    jtis: &JtiCache,
) -> Result<ClientAuth, TokenError> {
    let secret = req
        .field("client_secret")
        .or(req.basic.as_ref().map(|(_, s)| s.as_str()));
    if let Some(secret) = secret {
        return if app.secrets.iter().any(|s| s == secret) {
            Ok(ClientAuth::Secret)
        } else {
            Err(err(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.client_id
                ),
            ))
        };
    }
    let Some(assertion) = req.field("client_assertion") else {
        return Err(err(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if req.field("client_assertion_type") != Some(JWT_BEARER) {
        return Err(err(
            400,
            "invalid_request",
            90014,
            "The request body must contain the following parameter: 'client_assertion_type'.",
        ));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    let unverified: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .map_err(|_| malformed())?
        .claims;
    if unverified.iss.as_deref() == Some(app.client_id.as_str()) {
        certificate_assertion(app, assertion, &header, audiences, now, jtis)
    } else {
        federated_assertion(app, assertion, &header, &unverified, now)
    }
}

fn malformed() -> TokenError {
    err(
        401,
        "invalid_client",
        50027,
        "JWT token is invalid or malformed.",
    )
}

fn verify(
    assertion: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<AssertionClaims, TokenError> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<AssertionClaims>(assertion, key, &v)
        .map(|d| d.claims)
        .map_err(|_| {
            err(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            )
        })
}

fn check_times(c: &AssertionClaims, now: i64) -> Result<(), TokenError> {
    let Some(exp) = c.exp else {
        return Err(err(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range. The 'exp' claim is missing.",
        ));
    };
    let too_early = c.nbf.is_some_and(|nbf| nbf > now + SKEW_SECS);
    if exp + SKEW_SECS < now || too_early {
        return Err(err(
            401,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {exp}.",
                c.nbf.unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

fn audiences_of(c: &AssertionClaims) -> Vec<String> {
    match &c.aud {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn certificate_assertion(
    app: &AppRegistration,
    assertion: &str,
    header: &Header,
    audiences: &[String],
    now: i64,
    jtis: &JtiCache,
) -> Result<ClientAuth, TokenError> {
    let cert = match (header.alg, &header.x5t_s256, &header.x5t) {
        (Algorithm::PS256 | Algorithm::RS256, Some(s256), _) => app
            .certificates
            .iter()
            .find(|c| same_thumbprint(&c.sha256, s256)),
        (Algorithm::PS256 | Algorithm::RS256, None, Some(x5t)) => app
            .certificates
            .iter()
            .find(|c| same_thumbprint(&c.sha1, x5t)),
        (Algorithm::PS256 | Algorithm::RS256, None, None) => {
            return Err(err(
                401,
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found: the header has neither 'x5t' nor 'x5t#S256'.]",
            ));
        }
        (alg, _, _) => {
            return Err(err(
                401,
                "invalid_client",
                700027,
                format!("Client assertion uses unsupported algorithm {alg:?}; use RS256 or PS256."),
            ));
        }
    };
    let Some(cert) = cert else {
        let thumb = header
            .x5t_s256
            .clone()
            .or(header.x5t.clone())
            .unwrap_or_default();
        return Err(err(
            401,
            "invalid_client",
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumb}']"
            ),
        ));
    };
    let claims = verify(assertion, &cert.key, header.alg)?;
    if claims.sub.as_deref() != Some(app.client_id.as_str()) {
        return Err(err(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter: 'iss' and 'sub' must both be the client id.",
        ));
    }
    if !audiences_of(&claims).iter().any(|a| audiences.contains(a)) {
        return Err(err(
            401,
            "invalid_client",
            700022,
            format!(
                "The client assertion audience is not valid. Expected one of: {}.",
                audiences.join(", ")
            ),
        ));
    }
    check_times(&claims, now)?;
    let Some(jti) = claims.jti.as_deref() else {
        return Err(err(
            401,
            "invalid_client",
            700023,
            "Client assertion must contain a 'jti' claim.",
        ));
    };
    if !jtis.remember(jti, claims.exp.unwrap_or(now), now) {
        return Err(err(
            401,
            "invalid_client",
            700023,
            format!(
                "The client assertion with jti '{jti}' has already been used. Assertions are single-use."
            ),
        ));
    }
    Ok(ClientAuth::Certificate)
}

fn federated_assertion(
    app: &AppRegistration,
    assertion: &str,
    header: &Header,
    unverified: &AssertionClaims,
    now: i64,
) -> Result<ClientAuth, TokenError> {
    let iss = unverified.iss.clone().unwrap_or_default();
    let sub = unverified.sub.clone().unwrap_or_default();
    let hint = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.";
    let by_issuer: Vec<&FederatedCredential> =
        app.federated.iter().filter(|f| f.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(err(
            400,
            "invalid_request",
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. {hint}"
            ),
        ));
    }
    let by_subject: Vec<&FederatedCredential> =
        by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(err(
            400,
            "invalid_request",
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. {hint}"
            ),
        ));
    }
    let auds = audiences_of(unverified);
    let Some(cred) = by_subject
        .into_iter()
        .find(|f| f.audiences.iter().any(|a| auds.contains(a)))
    else {
        return Err(err(
            400,
            "invalid_request",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {hint}",
                auds.join(",")
            ),
        ));
    };
    let alg = header.alg;
    let candidates = cred
        .keys
        .iter()
        .filter(|(kid, _)| header.kid.is_none() || kid.is_none() || *kid == header.kid);
    let claims = candidates
        .map(|(_, key)| verify(assertion, key, alg))
        .find_map(Result::ok)
        .ok_or_else(|| {
            err(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation against the federated issuer's keys.",
            )
        })?;
    check_times(&claims, now)?;
    Ok(ClientAuth::Federated)
}

/// Claims of an access token this simulator issues (shaped like Graph's app-only v1.0 tokens).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// `https://graph.microsoft.com`.
    pub aud: String,
    /// `https://sts.windows.net/{tid}/`.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Client id.
    pub appid: String,
    /// App display name.
    pub app_displayname: String,
    /// 1 = secret, 2 = certificate/assertion.
    pub appidacr: String,
    /// Identity provider (`iss`).
    pub idp: String,
    /// `app`.
    pub idtyp: String,
    /// Service principal object id.
    pub oid: String,
    /// Granted application permissions.
    pub roles: Vec<String>,
    /// Service principal object id.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Unique token id.
    pub uti: String,
    /// `1.0`.
    pub ver: String,
}

/// Signs an access token for the app in a tenant.
pub fn mint_access_token(
    key: &SigningKey,
    tenant: &str,
    app: &AppRegistration,
    auth: ClientAuth,
    now: i64,
    lifetime_secs: i64,
) -> String {
    let iss = format!("https://sts.windows.net/{tenant}/");
    let claims = AccessClaims {
        aud: GRAPH_AUDIENCE.to_owned(),
        iss: iss.clone(),
        iat: now,
        nbf: now,
        exp: now + lifetime_secs,
        appid: app.client_id.clone(),
        app_displayname: app.display_name.clone(),
        appidacr: if auth == ClientAuth::Secret { "1" } else { "2" }.to_owned(),
        idp: iss,
        idtyp: "app".to_owned(),
        oid: app.service_principal_id.clone(),
        roles: app.permissions.iter().cloned().collect(),
        sub: app.service_principal_id.clone(),
        tid: tenant.to_owned(),
        uti: URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        ver: "1.0".to_owned(),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".to_owned());
    header.kid = Some(key.kid.clone());
    header.x5t = Some(key.kid.clone());
    // Signing with a key we generated ourselves cannot fail; an empty token would simply be refused later.
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap_or_default()
}

/// Claims of an app-only access token for another app's API (graph-facts §10): the v1.0 shape
/// (`iss` `https://sts.windows.net/{tid}/`, `aud` the App ID URI asked for, `appid`) unless the
/// API's manifest asks for v2.0 (`iss` `https://login.microsoftonline.com/{tid}/v2.0`, `aud` its
/// client id, `azp`). `roles` holds the API's app roles granted to the client, and is left out
/// when none are, as Entra does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiClaims {
    /// The API: its App ID URI (v1.0) or client id (v2.0).
    pub aud: String,
    /// The issuer (by token version).
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Client id (v1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// Client authentication (v1.0): 1 secret, 2 certificate or assertion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appidacr: Option<String>,
    /// Client id (v2.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// Client authentication (v2.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azpacr: Option<String>,
    /// `app`.
    pub idtyp: String,
    /// The client's service principal object id.
    pub oid: String,
    /// The API's app roles granted to the client.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub roles: Vec<String>,
    /// The client's service principal object id.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Unique token id.
    pub uti: String,
    /// `1.0` or `2.0`.
    pub ver: String,
}

/// Signs an access token for `client` to call `api` (asked for as `resource`).
#[allow(clippy::too_many_arguments)] // the same inputs as `mint_access_token`, plus the API's two
pub fn mint_api_token(
    key: &SigningKey,
    tenant: &str,
    client: &AppRegistration,
    api: &AppRegistration,
    resource: &str,
    auth: ClientAuth,
    now: i64,
    lifetime_secs: i64,
) -> String {
    let acr = if auth == ClientAuth::Secret { "1" } else { "2" }.to_owned();
    let v2 = api.access_token_version == 2;
    let roles = client
        .role_assignments
        .get(&api.client_id)
        .map(|granted| granted.intersection(&api.app_roles).cloned().collect())
        .unwrap_or_default();
    let claims = ApiClaims {
        aud: if v2 {
            api.client_id.clone()
        } else {
            resource.to_owned()
        },
        iss: if v2 {
            format!("https://login.microsoftonline.com/{tenant}/v2.0")
        } else {
            format!("https://sts.windows.net/{tenant}/")
        },
        iat: now,
        nbf: now,
        exp: now + lifetime_secs,
        appid: (!v2).then(|| client.client_id.clone()),
        appidacr: (!v2).then(|| acr.clone()),
        azp: v2.then(|| client.client_id.clone()),
        azpacr: v2.then_some(acr),
        idtyp: "app".to_owned(),
        oid: client.service_principal_id.clone(),
        roles,
        sub: client.service_principal_id.clone(),
        tid: tenant.to_owned(),
        uti: URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        ver: if v2 { "2.0" } else { "1.0" }.to_owned(),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".to_owned());
    header.kid = Some(key.kid.clone());
    if !v2 {
        header.x5t = Some(key.kid.clone());
    }
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap_or_default()
}

/// Why a bearer token was refused by a Graph endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization: Bearer`.
    #[error("Access token is empty.")]
    Missing,
    /// Bad signature, audience or shape.
    #[error("Access token validation failure. Invalid audience.")]
    Invalid,
    /// Past `exp`.
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
}

/// Verifies an access token's signature and audience, and its lifetime against the sim clock.
pub fn verify_access_token(
    key: &SigningKey,
    token: &str,
    now: i64,
) -> Result<AccessClaims, BearerError> {
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_audience(&[GRAPH_AUDIENCE, GRAPH_APP_ID]);
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v)
        .map_err(|_| BearerError::Invalid)?
        .claims;
    if claims.exp <= now {
        return Err(BearerError::Expired);
    }
    if claims.nbf > now + SKEW_SECS {
        return Err(BearerError::Invalid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppRegistration {
        AppRegistration {
            client_id: "c1".into(),
            display_name: "app".into(),
            service_principal_id: "sp".into(),
            secrets: vec!["s3cret".into()],
            certificates: Vec::new(),
            federated: Vec::new(),
            permissions: BTreeSet::from(["User.Read.All".to_owned()]),
            identifier_uris: Vec::new(),
            app_roles: BTreeSet::new(),
            access_token_version: 1,
            role_assignments: std::collections::BTreeMap::new(),
        }
    }

    fn form(pairs: &[(&str, &str)]) -> TokenRequest {
        TokenRequest {
            form: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            basic: None,
        }
    }

    #[test]
    fn scopes_without_dot_default_are_invalid_scope() {
        let req = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "c1"),
            ("scope", "User.Read.All"),
        ]);
        let e = check_request_shape(&req).expect_err("must fail");
        assert_eq!((e.error, e.code), ("invalid_scope", 1002012));
    }

    #[test]
    fn a_wrong_secret_is_invalid_client_with_status_401() {
        let req = form(&[("client_secret", "nope")]);
        let e = authenticate(&app(), &req, &[], 0, &JtiCache::default()).expect_err("must fail");
        assert_eq!(
            (e.status, e.error, e.code),
            (401, "invalid_client", 7000215)
        );
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let c: AssertionClaims =
            serde_json::from_value(json!({"exp": 1795312656.92, "nbf": 17, "iss": "c1"}))
                .expect("claims");
        assert_eq!((c.exp, c.nbf), (Some(1795312656), Some(17)));
    }

    #[test]
    fn padded_thumbprints_match_unpadded_ones() {
        assert!(same_thumbprint(
            "hOBcHZi846VCHSJbFAs26Go9VTQ",
            "hOBcHZi846VCHSJbFAs26Go9VTQ="
        ));
        assert!(!same_thumbprint("hOBcHZi846VCHSJbFAs26Go9VTQ", "other"));
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let key = SigningKey::generate().expect("key");
        let token = mint_access_token(&key, "t1", &app(), ClientAuth::Secret, 1_000, 3599);
        let claims = verify_access_token(&key, &token, 1_001).expect("valid");
        assert_eq!(claims.roles, vec!["User.Read.All".to_owned()]);
        assert_eq!(claims.tid, "t1");
        assert_eq!(
            verify_access_token(&key, &token, 1_000 + 3599).map(|_| ()),
            Err(BearerError::Expired)
        );
    }

    #[test]
    fn tokens_signed_by_another_key_are_invalid() {
        let ours = SigningKey::generate().expect("key");
        let theirs = SigningKey::generate().expect("key");
        let token = mint_access_token(&theirs, "t1", &app(), ClientAuth::Secret, 1_000, 3599);
        assert_eq!(
            verify_access_token(&ours, &token, 1_001).map(|_| ()),
            Err(BearerError::Invalid)
        );
    }
}

#[cfg(test)]
mod api_token_tests {
    use super::*;

    fn registration(client_id: &str) -> AppRegistration {
        AppRegistration {
            client_id: client_id.into(),
            display_name: client_id.into(),
            service_principal_id: format!("sp-{client_id}"),
            secrets: Vec::new(),
            certificates: Vec::new(),
            federated: Vec::new(),
            permissions: BTreeSet::new(),
            identifier_uris: vec![format!("api://{client_id}")],
            app_roles: BTreeSet::from(["admin".to_owned(), "reader".to_owned()]),
            access_token_version: 1,
            role_assignments: std::collections::BTreeMap::new(),
        }
    }

    fn claims(token: &str) -> Value {
        jsonwebtoken::dangerous::insecure_decode::<Value>(token)
            .expect("decodes")
            .claims
    }

    #[test]
    fn a_v1_api_token_names_the_app_id_uri_and_carries_only_the_apis_granted_roles() {
        let key = SigningKey::generate().expect("key");
        let api = registration("api");
        let mut client = registration("client");
        client.role_assignments.insert(
            "api".into(),
            BTreeSet::from(["admin".to_owned(), "not-defined".to_owned()]),
        );
        let token = mint_api_token(
            &key,
            "t1",
            &client,
            &api,
            "api://api",
            ClientAuth::Secret,
            10,
            60,
        );
        let claims = claims(&token);
        assert_eq!(claims["aud"], "api://api");
        assert_eq!(claims["iss"], "https://sts.windows.net/t1/");
        assert_eq!(claims["appid"], "client");
        assert_eq!(claims["roles"], json!(["admin"]));
        assert_eq!(claims["ver"], "1.0");
    }

    #[test]
    fn a_v2_api_token_names_the_client_id_and_leaves_out_empty_roles() {
        let key = SigningKey::generate().expect("key");
        let mut api = registration("api");
        api.access_token_version = 2;
        let client = registration("client");
        let token = mint_api_token(
            &key,
            "t1",
            &client,
            &api,
            "api://api",
            ClientAuth::Certificate,
            10,
            60,
        );
        let claims = claims(&token);
        assert_eq!(claims["aud"], "api");
        assert_eq!(claims["iss"], "https://login.microsoftonline.com/t1/v2.0");
        assert_eq!(claims["azp"], "client");
        assert!(claims.get("roles").is_none() && claims.get("appid").is_none());
    }

    #[test]
    fn a_rotated_ring_publishes_both_keys_and_signs_with_the_new_one() {
        let ring = KeyRing::new(SigningKey::generate().expect("key"));
        let old = ring.current().kid.clone();
        let new = ring.rotate().expect("rotates");
        assert_ne!(old, new);
        assert_eq!(ring.current().kid, new);
        let kids: Vec<String> = ring.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kids, [old, new]);
    }
}
