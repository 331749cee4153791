"""The development PKI: what the certificates say, where the files go, and a real mTLS call."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from gateway.orgs import OrgRegistry, OrgRegistryError, OrgStatus
from gateway.pki import (
    DEMO_ORGS,
    CertificateAuthority,
    IssuedCert,
    PkiError,
    PkiLayout,
    cert_fingerprint,
    ensure_pki,
    init_pki,
    org_id_from_cert,
)

HOSPITAL = "hosp-bj-001"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ca_verifies(ca: x509.Certificate, leaf: x509.Certificate) -> None:
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    public_key.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )


def test_demo_orgs_cover_every_role_and_one_suspended_org() -> None:
    ids = {org.org_id for org in DEMO_ORGS}
    assert {
        "hosp-bj-001",
        "hosp-sh-002",
        "lib-bj-001",
        "transit-bj-001",
        "reg-nhsa-001",
        "app-ecard-001",
        "lib-bj-009",
    } <= ids
    suspended = [org.org_id for org in DEMO_ORGS if org.status is OrgStatus.SUSPENDED]
    assert suspended == ["lib-bj-009"]


def test_every_file_is_written(pki: PkiLayout) -> None:
    for path in (pki.ca_cert, pki.ca_key, pki.server_cert, pki.server_key, pki.orgs_file):
        assert path.is_file(), path
    for org in DEMO_ORGS:
        assert pki.client_cert(org.org_id).is_file()
        assert pki.client_key(org.org_id).is_file()
    assert list(OrgRegistry.load(pki.orgs_file)) == list(DEMO_ORGS)


def test_key_files_are_owner_only(pki: PkiLayout) -> None:
    keys = [pki.ca_key, pki.server_key, *(pki.client_key(o.org_id) for o in DEMO_ORGS)]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_key_file_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    issued = CertificateAuthority.generate().issue_client(HOSPITAL)
    previous = os.umask(0)
    try:
        issued.write(tmp_path / "c.pem", tmp_path / "c.key")
        issued.write(tmp_path / "c.pem", tmp_path / "c.key")  # replacing keeps the mode
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "c.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.key", "c.pem"]  # no temp files left


def test_every_certificate_chains_to_the_ca(pki: PkiLayout) -> None:
    ca = _cert(pki.ca_cert)
    leaves = [_cert(pki.server_cert), *(_cert(pki.client_cert(o.org_id)) for o in DEMO_ORGS)]
    for leaf in leaves:
        _ca_verifies(ca, leaf)
        leaf.verify_directly_issued_by(ca)
        assert leaf.issuer == ca.subject


def test_ca_is_a_p256_ca(pki: PkiLayout) -> None:
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)


def test_client_certificate_names_its_org(pki: PkiLayout) -> None:
    cert = _cert(pki.client_cert(HOSPITAL))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in cn] == [HOSPITAL]
    assert [a.value for a in org] == ["Beijing Chaoyang Demo Hospital"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:onecard:org:{HOSPITAL}"
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_client_certificate_passes_a_client_verifier(pki: PkiLayout) -> None:
    verifier = PolicyBuilder().store(Store([_cert(pki.ca_cert)])).build_client_verifier()
    verified = verifier.verify(_cert(pki.client_cert(HOSPITAL)), [])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(f"urn:onecard:org:{HOSPITAL}") in verified.subjects


def test_server_certificate_names_loopback(pki: PkiLayout) -> None:
    cert = _cert(pki.server_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    store = Store([_cert(pki.ca_cert)])
    for subject in (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(cert, [])


def test_init_refuses_to_replace_a_ca(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, DEMO_ORGS[:1])
    before = layout.ca_cert.read_bytes()
    with pytest.raises(PkiError, match="a CA already exists"):
        init_pki(tmp_path, DEMO_ORGS[:1])
    assert layout.ca_cert.read_bytes() == before
    init_pki(tmp_path, DEMO_ORGS[:1], overwrite=True)
    assert layout.ca_cert.read_bytes() != before


def test_ensure_pki_creates_once(tmp_path: Path) -> None:
    layout = ensure_pki(tmp_path / "pki", DEMO_ORGS[:2])
    first = layout.ca_cert.read_bytes()
    assert ensure_pki(tmp_path / "pki", DEMO_ORGS[:2]) == layout
    assert layout.ca_cert.read_bytes() == first


def test_init_refuses_duplicate_orgs_before_writing(tmp_path: Path) -> None:
    with pytest.raises(OrgRegistryError, match="more than once"):
        init_pki(tmp_path / "pki", [DEMO_ORGS[0], DEMO_ORGS[0]])
    assert not (tmp_path / "pki").exists()


def test_ca_loads_back_and_issues(pki: PkiLayout) -> None:
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    assert ca.cert_pem == pki.ca_cert.read_bytes()
    issued = x509.load_pem_x509_certificate(ca.issue_client("lib-bj-001").cert_pem)
    issued.verify_directly_issued_by(_cert(pki.ca_cert))


def test_ca_refuses_a_key_that_is_not_its_own(pki: PkiLayout, tmp_path: Path) -> None:
    CertificateAuthority.generate().write(tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(PkiError, match="does not belong"):
        CertificateAuthority.load(pki.ca_cert, tmp_path / "other.key")


def test_issue_client_checks_its_arguments() -> None:
    ca = CertificateAuthority.generate()
    with pytest.raises(ValueError, match="org id"):
        ca.issue_client("../../etc")
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(ValueError, match="not_after"):
        ca.issue_client(HOSPITAL, not_before=now, not_after=now - dt.timedelta(seconds=1))


def test_layout_refuses_paths_outside_clients(pki: PkiLayout) -> None:
    with pytest.raises(ValueError, match="org id"):
        pki.client_key("../ca")


def test_fingerprint_is_sha256_of_der(pki: PkiLayout) -> None:
    pem = pki.client_cert(HOSPITAL).read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert cert_fingerprint(pem) == hashlib.sha256(der).hexdigest()


def test_org_id_comes_from_the_san_uri_alone(pki: PkiLayout) -> None:
    assert org_id_from_cert(pki.client_cert(HOSPITAL).read_bytes()) == HOSPITAL
    assert org_id_from_cert(_self_signed(cn="x", uris=["urn:onecard:org:a"])) == "a"
    assert org_id_from_cert(_self_signed(cn="lib-bj-001")) is None  # a CN names nobody
    assert org_id_from_cert(_self_signed(cn=None)) is None
    ambiguous = _self_signed(cn="x", uris=["urn:onecard:org:a", "urn:onecard:org:b"])
    assert org_id_from_cert(ambiguous) is None


@pytest.mark.parametrize(
    "uris",
    [
        ["URN:ONECARD:ORG:lib-bj-001"],
        ["urn:OneCard:org:lib-bj-001"],
        ["urn:onecard:org:lib-bj-001", "URN:onecard:org:lib-bj-001"],
        ["https://example.org/lib-bj-001"],
    ],
)
def test_a_san_uri_in_another_case_is_no_fallback_to_the_cn(uris: list[str]) -> None:
    assert org_id_from_cert(_self_signed(cn="lib-bj-001", uris=uris)) is None


def _self_signed(*, cn: str | None, uris: tuple[str, ...] | list[str] = ()) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if uris:
        sans = [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --- one real mutual-TLS exchange over grpc.aio on loopback -----------------------------------


@dataclass
class _Seen:
    """What the server's handler saw in the auth context of the last call."""

    auth: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass
class _Server:
    port: int
    seen: _Seen


@pytest.fixture
async def mtls_server(pki: PkiLayout) -> AsyncIterator[_Server]:
    seen = _Seen()

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.auth = {key: list(values) for key, values in context.auth_context().items()}
        return b"hello " + request

    handler = grpc.method_handlers_generic_handler(
        "onecard.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield _Server(port, seen)
    finally:
        await server.stop(None)


async def _call(server: _Server, ca_pem: bytes, client: IssuedCert | None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        reply: bytes = await channel.unary_unary("/onecard.test.Echo/Who", None, None)(
            b"hosp", timeout=5
        )
        return reply


def _issued(pki: PkiLayout, org_id: str) -> IssuedCert:
    return IssuedCert(pki.client_cert(org_id).read_bytes(), pki.client_key(org_id).read_bytes())


@pytest.mark.integration
async def test_mtls_call_with_an_org_certificate(pki: PkiLayout, mtls_server: _Server) -> None:
    reply = await _call(mtls_server, pki.ca_cert.read_bytes(), _issued(pki, HOSPITAL))
    assert reply == b"hello hosp"
    auth = mtls_server.seen.auth
    assert auth["x509_common_name"] == [HOSPITAL.encode()]
    assert auth["transport_security_type"] == [b"ssl"]
    (pem,) = auth["x509_pem_cert"]
    assert org_id_from_cert(pem) == HOSPITAL
    assert cert_fingerprint(pem) == cert_fingerprint(pki.client_cert(HOSPITAL).read_bytes())


def _refused(pki: PkiLayout) -> Iterator[tuple[str, IssuedCert | None]]:
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    yield "another CA", CertificateAuthority.generate("Not OneCard").issue_client(HOSPITAL)
    yield "expired", ca.issue_client(HOSPITAL, not_before=past, not_after=past.replace(year=2021))
    yield "no client certificate", None
    server_cert = IssuedCert(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    yield "server certificate (no clientAuth)", server_cert


@pytest.mark.integration
async def test_mtls_refuses_bad_client_certificates(pki: PkiLayout, mtls_server: _Server) -> None:
    for label, client in _refused(pki):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _call(mtls_server, pki.ca_cert.read_bytes(), client)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE, label
        assert mtls_server.seen.auth == {}, f"{label}: the handler must not run"
