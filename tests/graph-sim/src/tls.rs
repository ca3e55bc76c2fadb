//! HTTPS for the Graph surface: a CA and a loopback server certificate generated at start (or PEM files given
//! by the caller), turned into a rustls server configuration with ring, our single rustls provider.
//!
//! Microsoft's identity libraries refuse a non-TLS authority, so clients such as MSAL and the Graph SDKs need
//! this; they trust the simulator through the CA PEM written to disk (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`,
//! cardsync's `graph.extra_ca_file`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate and key files to serve instead of generated ones.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the TLS material could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating the TLS certificates failed")]
    Generate(#[from] rcgen::Error),
    /// A given PEM file could not be read or holds nothing usable.
    #[error("reading {path} failed: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("the TLS certificate and key are not usable")]
    Rustls(#[from] rustls::Error),
    /// Writing the CA PEM failed.
    #[error("writing the CA certificate to {path} failed")]
    WriteCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The server side of the simulator's TLS: what to serve and which CA clients must trust.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The rustls configuration for the HTTPS listener.
    pub server: Arc<rustls::ServerConfig>,
    /// PEM of the certificate clients must trust (the generated CA, or the last certificate of a given chain).
    pub ca_pem: String,
}

/// Generates a CA and a server certificate for `127.0.0.1`, `::1` and `localhost`, signed by that CA.
pub fn generate() -> Result<TlsMaterial, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "graph-sim test CA");
    dn.push(DnType::OrganizationName, "cardsync graph-sim");
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf.distinguished_name = dn;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    Ok(TlsMaterial {
        server: server_config(chain, key)?,
        ca_pem,
    })
}

/// Loads a certificate chain and key from PEM files; the chain's last certificate is reported as the CA.
pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
    let pem_err = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_chain)
        .map_err(|e| pem_err(&files.cert_chain, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&files.cert_chain, e.to_string()))?;
    let Some(last) = chain.last() else {
        return Err(pem_err(&files.cert_chain, "no certificate found".into()));
    };
    let ca_pem = pem("CERTIFICATE", last);
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err(&files.key, e.to_string()))?;
    Ok(TlsMaterial {
        server: server_config(chain, key)?,
        ca_pem,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // actix adds the ALPN protocols it can serve (HTTP/1.1 without its `http2` feature).
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes the CA PEM to `path` (creating parent directories).
pub fn write_ca(path: &Path, ca_pem: &str) -> Result<(), TlsError> {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, ca_pem)
    };
    write().map_err(|source| TlsError::WriteCa {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_has_a_ca_pem_and_a_server_config() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let m = generate().expect("generate");
        assert!(m.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.server.alpn_protocols.is_empty());
    }
}
