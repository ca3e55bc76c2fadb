"""Token acquisition with Microsoft's identity libraries (azure-identity over MSAL) against graph-sim."""

import base64
import datetime
import json
from pathlib import Path

import msal
from azure.identity import CertificateCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import GRAPH_SCOPE, PERMISSIONS, secret_credential


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_a_client_secret_gets_a_graph_token(sim, tenant):
    token = secret_credential(sim, tenant).get_token(GRAPH_SCOPE)
    claims = claims_of(token.token)
    assert claims["tid"] == tenant["id"]
    assert claims["appid"] == tenant["client_id"]
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["appidacr"] == "1"
    assert sorted(claims["roles"]) == sorted(PERMISSIONS)
    assert token.expires_on > datetime.datetime.now().timestamp() + 3000


def _self_signed(tmp_path: Path) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conformance client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "client.pem"
    path.write_text(key_pem + cert_pem)
    return path, cert_pem


def test_a_certificate_assertion_gets_a_graph_token(sim, tenant, tmp_path):
    pem_path, cert_pem = _self_signed(tmp_path)
    sim.control(
        "PATCH",
        f"/tenants/{tenant['id']}/apps/{tenant['client_id']}",
        {"certificates": [cert_pem], "permissions": PERMISSIONS},
    )
    mark = len(sim.log_lines())
    credential = CertificateCredential(
        tenant["id"],
        tenant["client_id"],
        certificate_path=str(pem_path),
        authority=sim.https_url,
        disable_instance_discovery=True,
    )
    claims = claims_of(credential.get_token(GRAPH_SCOPE).token)
    assert claims["appid"] == tenant["client_id"]
    assert claims["appidacr"] == "2", "a certificate client authenticates with appidacr 2"
    requests = [l for l in sim.log_lines()[mark:] if "token request" in l]
    assert requests and 'assertion_alg="RS256"' in requests[-1], requests


def test_msal_runs_instance_and_tenant_discovery_against_graph_sim(sim, tenant):
    # MSAL asks an instance-discovery endpoint about unknown hosts before OIDC discovery; point it at ours.
    # Discovery runs in the constructor, so the log mark comes first.
    mark = len(sim.log_lines())
    app = msal.ConfidentialClientApplication(
        tenant["client_id"],
        client_credential=tenant["secret"],
        authority=f"{sim.https_url}/{tenant['id']}",
        instance_discovery=f"{sim.https_url}/common/discovery/instance",
        # CAE-capable clients send `claims={"access_token":{"xms_cc":{"values":["CP1"]}}}`; Entra accepts it.
        client_capabilities=["CP1"],
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["tid"] == tenant["id"]
    lines = sim.log_lines()[mark:]
    discovery = [l for l in lines if "path=/common/discovery/instance" in l]
    assert discovery and "status=200" in discovery[-1], discovery
    tokens = [l for l in lines if "token request" in l]
    assert tokens and "xms_cc" in tokens[-1] and "client_info" in tokens[-1], tokens


def test_an_oidc_authority_validates_graph_sims_issuer(sim, tenant):
    app = msal.ConfidentialClientApplication(
        tenant["client_id"],
        client_credential=tenant["secret"],
        oidc_authority=f"{sim.https_url}/{tenant['id']}/v2.0",
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in result, result


def test_a_wrong_secret_is_refused_with_an_entra_error(sim, tenant):
    app = msal.ConfidentialClientApplication(
        tenant["client_id"],
        client_credential="not-the-secret",
        authority=f"{sim.https_url}/{tenant['id']}",
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result.get("error") == "invalid_client", result
    assert 7000215 in result.get("error_codes", []), result


def test_msal_signs_a_ps256_assertion_with_the_sha256_thumbprint(sim, tenant, tmp_path):
    # Without a given SHA-1 thumbprint MSAL (>= 1.35) signs PS256 with `x5t#S256`; azure-identity passes
    # the SHA-1 thumbprint and so signs RS256 with `x5t` (test above). graph-sim must accept both.
    pem_path, cert_pem = _self_signed(tmp_path)
    sim.control(
        "PATCH",
        f"/tenants/{tenant['id']}/apps/{tenant['client_id']}",
        {"certificates": [cert_pem], "permissions": PERMISSIONS},
    )
    mark = len(sim.log_lines())
    app = msal.ConfidentialClientApplication(
        tenant["client_id"],
        client_credential={"private_key": pem_path.read_text(), "public_certificate": cert_pem},
        authority=f"{sim.https_url}/{tenant['id']}",
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["appidacr"] == "2"
    requests = [l for l in sim.log_lines()[mark:] if "token request" in l]
    assert requests and 'assertion_alg="PS256"' in requests[-1], requests
