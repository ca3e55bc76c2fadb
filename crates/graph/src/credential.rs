//! App-only credentials and the client-credentials token exchange with the identity platform.

use crate::error::TokenError;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha1::Digest as _;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The scope of every app-only Graph token.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a certificate assertion is signed: the current Entra documentation asks for PS256 with an
/// `x5t#S256` thumbprint; older guidance used RS256 with a SHA-1 `x5t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256, header `x5t#S256`.
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, header `x5t` (SHA-1 thumbprint).
    Rs256,
}

/// How the app proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate: its PEM (public part, for the thumbprint) and the PEM private key.
    Certificate {
        /// The certificate, PEM.
        certificate_pem: String,
        /// The RSA private key, PEM (PKCS#1 or PKCS#8).
        private_key_pem: SecretString,
        /// Signature flavour.
        algorithm: AssertionAlgorithm,
    },
    /// Workload identity federation: a token from an external issuer (the Kubernetes service-account
    /// token), read afresh from this file for every exchange because kubelet rotates it.
    Federated {
        /// Usually `$AZURE_FEDERATED_TOKEN_FILE`.
        token_file: PathBuf,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate { algorithm, .. } => f
                .debug_struct("Certificate")
                .field("algorithm", algorithm)
                .finish_non_exhaustive(),
            Credential::Federated { token_file } => f
                .debug_struct("Federated")
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// One tenant's app registration as cardsync uses it.
#[derive(Debug, Clone)]
pub struct TenantConnection {
    /// The Entra tenant id (GUID) or a verified domain.
    pub tenant_id: String,
    /// The app (client) id.
    pub client_id: String,
    /// The app's credential.
    pub credential: Credential,
}

/// A token as the identity platform returned it.
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) secret: SecretString,
    pub(crate) lifetime: Duration,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// Exchanges the connection's credential for an access token.
pub(crate) async fn acquire(
    http: &reqwest::Client,
    authority: &url::Url,
    connection: &TenantConnection,
) -> Result<AccessToken, TokenError> {
    let endpoint = token_endpoint(authority, &connection.tenant_id);
    let mut form: Vec<(&str, String)> = vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", connection.client_id.clone()),
        ("scope", GRAPH_SCOPE.into()),
    ];
    match &connection.credential {
        Credential::Secret(secret) => {
            form.push(("client_secret", secret.expose_secret().to_owned()))
        }
        Credential::Certificate {
            certificate_pem,
            private_key_pem,
            algorithm,
        } => {
            let assertion = sign_assertion(
                &endpoint,
                &connection.client_id,
                certificate_pem,
                private_key_pem,
                *algorithm,
            )?;
            form.push(("client_assertion_type", ASSERTION_TYPE.into()));
            form.push(("client_assertion", assertion));
        }
        Credential::Federated { token_file } => {
            let token = tokio::fs::read_to_string(token_file)
                .await
                .map_err(TokenError::FederatedTokenFile)?;
            form.push(("client_assertion_type", ASSERTION_TYPE.into()));
            form.push(("client_assertion", token.trim().to_owned()));
        }
    }

    let response = http
        .post(&endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(Box::new(e)))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| TokenError::Unavailable(Box::new(e)))?;
    if status.is_success() {
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| TokenError::BadResponse(format!("not a token response: {e}")))?;
        // expires_in is a number in v2.0 responses and a string in some older ones.
        let seconds = match token.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(3599);
        return Ok(AccessToken {
            secret: SecretString::from(token.access_token),
            lifetime: Duration::from_secs(seconds),
        });
    }
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(TokenError::Unavailable(
            format!("token endpoint answered {status}").into(),
        ));
    }
    match serde_json::from_slice::<TokenErrorResponse>(&body) {
        Ok(refusal) => Err(TokenError::Refused {
            error: refusal.error,
            codes: refusal.error_codes,
        }),
        Err(_) => Err(TokenError::BadResponse(format!(
            "token endpoint answered {status}"
        ))),
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`.
pub(crate) fn token_endpoint(authority: &url::Url, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority.as_str().trim_end_matches('/')
    )
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Signs a client assertion: `aud` = the token endpoint, `iss` = `sub` = the client id, a unique
/// `jti`, valid from now for 10 minutes.
pub(crate) fn sign_assertion(
    audience: &str,
    client_id: &str,
    certificate_pem: &str,
    private_key_pem: &SecretString,
    algorithm: AssertionAlgorithm,
) -> Result<String, TokenError> {
    let der = pem_body(certificate_pem, "CERTIFICATE")
        .ok_or_else(|| TokenError::BadCertificate("no PEM CERTIFICATE block".into()))?;
    let mut header = jsonwebtoken::Header::new(match algorithm {
        AssertionAlgorithm::Ps256 => jsonwebtoken::Algorithm::PS256,
        AssertionAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
    });
    header.typ = Some("JWT".into());
    match algorithm {
        AssertionAlgorithm::Ps256 => {
            header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)))
        }
        AssertionAlgorithm::Rs256 => {
            header.x5t = Some(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)))
        }
    }
    // The key may come alone or in one PEM bundle with the certificate (as operators store it).
    let key_pem = private_key_block(private_key_pem.expose_secret())
        .ok_or_else(|| TokenError::BadCertificate("no PEM PRIVATE KEY block".into()))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes())
        .map_err(|_| TokenError::BadCertificate("the private key is not an RSA PEM key".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = AssertionClaims {
        aud: audience,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + 600,
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| TokenError::BadCertificate(format!("signing failed: {e}")))
}

/// The first `PRIVATE KEY` or `RSA PRIVATE KEY` PEM block of `pem`, markers included.
fn private_key_block(pem: &str) -> Option<&str> {
    for label in ["PRIVATE KEY", "RSA PRIVATE KEY"] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(start) = pem.find(&begin) {
            let stop = start + pem[start..].find(&end)? + end.len();
            return Some(&pem[start..stop]);
        }
    }
    None
}

/// The DER bytes of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let base64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(base64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let credential = Credential::Secret(SecretString::from("hunter2"));
        assert_eq!(format!("{credential:?}"), "Secret(<redacted>)");
        let connection = TenantConnection {
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential,
        };
        assert!(!format!("{connection:?}").contains("hunter2"));
    }

    #[test]
    fn the_token_endpoint_is_per_tenant() {
        let authority = url::Url::parse("https://login.microsoftonline.com/").unwrap();
        assert_eq!(
            token_endpoint(&authority, "contoso.com"),
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn the_private_key_is_found_inside_a_bundle_with_the_certificate() {
        let bundle = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            private_key_block(bundle),
            Some("-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----")
        );
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nS0VZ\n-----END RSA PRIVATE KEY-----";
        assert_eq!(private_key_block(rsa), Some(rsa));
        assert_eq!(private_key_block("-----BEGIN CERTIFICATE-----"), None);
    }

    #[test]
    fn pem_blocks_decode_and_garbage_does_not() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_body(pem, "CERTIFICATE"), Some(vec![0, 1, 2, 3]));
        assert_eq!(pem_body("nothing", "CERTIFICATE"), None);
        assert!(matches!(
            sign_assertion(
                "aud",
                "c",
                "nothing",
                &SecretString::from("k"),
                AssertionAlgorithm::Ps256
            ),
            Err(TokenError::BadCertificate(_))
        ));
    }
}
