"""The development PKI: a OneCard CA, the gateway's server certificate and one client
certificate per organisation, plus reading the org id back out of a presented certificate.

Keys are ECDSA P-256, signatures SHA-256. A client certificate names its organisation twice: as
the SAN URI ``urn:onecard:org:<org id>`` (what the gateway reads) and as the subject CN (the
fallback, and what people read). Private key files are created with mode 0600 and replaced
atomically, so they are never readable by others, not even briefly.

Layout of a PKI directory (``PkiLayout``)::

    ca.pem ca.key server.pem server.key orgs.toml clients/<org id>.pem clients/<org id>.key

``ca.pem`` is written last: its presence marks a complete PKI (``ensure_pki`` relies on it).
This is for development and tests; production certificates come from a real CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import SetupError
from gateway.orgs import Org, OrgRegistry, OrgStatus, OrgType, dump_toml, is_valid_org_id

ORG_URI_PREFIX = "urn:onecard:org:"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
_CLOCK_SKEW = dt.timedelta(minutes=5)
_CLIENT_VALID_DAYS = 825

DEMO_ORGS: tuple[Org, ...] = (
    Org("hosp-bj-001", OrgType.HOSPITAL, "Beijing Chaoyang Demo Hospital", "110105"),
    Org("hosp-sh-002", OrgType.HOSPITAL, "Shanghai Huangpu Demo Hospital", "310101"),
    Org("lib-bj-001", OrgType.LIBRARY, "Beijing Dongcheng Demo Library", "110101"),
    Org("transit-bj-001", OrgType.TRANSIT, "Beijing Demo Transit Operator", "110000"),
    Org("reg-nhsa-001", OrgType.REGULATOR, "National Healthcare Security Demo Office", "100000"),
    Org("app-ecard-001", OrgType.CITIZEN_APP, "Official E-Card Demo App", "100000"),
    Org(
        "lib-bj-009",
        OrgType.LIBRARY,
        "Beijing Haidian Demo Library (suspended)",
        "110108",
        OrgStatus.SUSPENDED,
    ),
)


class PkiError(SetupError):
    """The PKI cannot be created or loaded as asked; the message says what to do."""


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both files atomically; the key file has mode 0600 from its creation."""
        _write_atomically(cert_path, self.cert_pem, 0o644)
        _write_atomically(key_path, self.key_pem, 0o600)


class CertificateAuthority:
    """A CA key and its self-signed certificate, issuing server and org client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if cert.public_key() != key.public_key():
            raise PkiError("the CA key does not belong to the CA certificate")
        self._cert = cert
        self._key = key

    @classmethod
    def generate(
        cls, common_name: str = "OneCard Development CA", valid_days: int = 3650
    ) -> CertificateAuthority:
        """A new CA with a fresh P-256 key."""
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """The CA stored in ``cert_path`` and ``key_path`` (PEM, key unencrypted)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise PkiError(f"{exc.filename}: cannot read ({exc.strerror})") from None
        except (ValueError, TypeError) as exc:
            raise PkiError(
                f"{cert_path} / {key_path}: not a PEM certificate and key: {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path}: expected an EC private key")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write the CA certificate and key (key mode 0600)."""
        IssuedCert(self.cert_pem, _key_pem(self._key)).write(cert_path, key_path)

    def issue_server(self, hosts: Sequence[str], valid_days: int = 825) -> IssuedCert:
        """A TLS server certificate for ``hosts`` (DNS names and IP addresses, as SANs)."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        now = _now()
        sans = [_host_san(host) for host in hosts]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        return self._issue(
            subject,
            sans,
            ExtendedKeyUsageOID.SERVER_AUTH,
            now - _CLOCK_SKEW,
            now + dt.timedelta(days=valid_days),
        )

    def issue_client(
        self,
        org_id: str,
        org_name: str = "",
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCert:
        """A TLS client certificate naming ``org_id`` (SAN URI and CN); O is ``org_name``."""
        if not is_valid_org_id(org_id):
            raise ValueError(f"org id {org_id!r} is not of the registry's form")
        now = _now()
        start = not_before if not_before is not None else now - _CLOCK_SKEW
        end = not_after if not_after is not None else now + dt.timedelta(days=_CLIENT_VALID_DAYS)
        if end <= start:
            raise ValueError("not_after must be later than not_before")
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, org_id)]
        if org_name:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name))
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ORG_URI_PREFIX + org_id)]
        return self._issue(x509.Name(attributes), sans, ExtendedKeyUsageOID.CLIENT_AUTH, start, end)

    def _issue(
        self,
        subject: x509.Name,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> IssuedCert:
        key = _new_key()
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """Where each file of a PKI directory lives."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def orgs_file(self) -> Path:
        return self.directory / "orgs.toml"

    @property
    def clients_dir(self) -> Path:
        return self.directory / "clients"

    def client_cert(self, org_id: str) -> Path:
        return self.clients_dir / f"{_checked(org_id)}.pem"

    def client_key(self, org_id: str) -> Path:
        return self.clients_dir / f"{_checked(org_id)}.key"


def init_pki(
    directory: Path,
    orgs: Sequence[Org] = DEMO_ORGS,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    overwrite: bool = False,
) -> PkiLayout:
    """Create a CA, a server certificate for ``hosts``, a client certificate per org and the
    org registry in ``directory``. Refuses to replace an existing CA unless ``overwrite``."""
    layout = PkiLayout(Path(directory))
    if layout.ca_cert.exists() and not overwrite:
        raise PkiError(
            f"{layout.ca_cert}: a CA already exists; replacing it invalidates every certificate "
            "it issued (onecard pki init --force, or overwrite=True, replaces it)"
        )
    registry = OrgRegistry(orgs)  # refuses duplicate or malformed ids before anything is written
    layout.clients_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = CertificateAuthority.generate()
    ca.issue_server(hosts).write(layout.server_cert, layout.server_key)
    for org in registry:
        cert = ca.issue_client(org.org_id, org.name)
        cert.write(layout.client_cert(org.org_id), layout.client_key(org.org_id))
    _write_atomically(layout.orgs_file, dump_toml(registry).encode("utf-8"), 0o644)
    ca.write(layout.ca_cert, layout.ca_key)  # last: ca.pem marks a complete PKI
    return layout


def ensure_pki(
    directory: Path, orgs: Sequence[Org] = DEMO_ORGS, *, hosts: Sequence[str] = DEFAULT_HOSTS
) -> PkiLayout:
    """The PKI in ``directory``, created first if it has no ``ca.pem``."""
    layout = PkiLayout(Path(directory))
    if layout.ca_cert.exists():
        return layout
    return init_pki(layout.directory, orgs, hosts=hosts, overwrite=True)


def cert_fingerprint(cert_pem: bytes) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def org_id_from_cert(cert_pem: bytes) -> str | None:
    """The org a certificate names: its one ``urn:onecard:org:`` SAN URI, exactly as issued.

    None if it names none or more than one, or if a SAN URI spells the scheme in another case
    (the subject CN is never read: identity comes from the SAN alone, compared exactly).
    Raises ValueError if ``cert_pem`` is not PEM.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return None
    ours = [uri for uri in uris if uri.lower().startswith(ORG_URI_PREFIX)]
    ids = {uri.removeprefix(ORG_URI_PREFIX) for uri in ours}
    if len(ids) != 1 or any(not uri.startswith(ORG_URI_PREFIX) for uri in ours):
        return None
    (org_id,) = ids
    return org_id or None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _checked(org_id: str) -> str:
    if not is_valid_org_id(org_id):
        raise ValueError(f"org id {org_id!r} is not of the registry's form")
    return org_id


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
