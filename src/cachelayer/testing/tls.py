"""A throwaway certificate authority for tests that need verified TLS on loopback (the shared
tier's Redis, the standalone layer's CA file, the JSON client's CA bundle, the RDS databases)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
from pathlib import Path
from typing import Any, Optional, Tuple

import attrs

__all__ = ["TestCA", "make_test_ca"]


@attrs.frozen
class TestCA:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed (PEM files), and, when
    asked for, ``other_ca_file``: a second CA that signed nothing (to see a server refused)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Optional[Path] = None


def _ca(name: str, now: datetime.datetime) -> Tuple[Any, Any]:
    """A self-signed CA's key and certificate, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_test_ca(
    directory: Path, *, other_ca: bool = False, key_owner: Optional[str] = None
) -> TestCA:
    """Make a CA and a certificate for ``127.0.0.1``/``localhost`` signed by it, in
    ``directory``; valid for a day. ``other_ca`` adds an unrelated CA's certificate;
    ``key_owner`` (a user name) is given the server's key (mode 0600), for a server that
    refuses to run as root and to read a key it does not own (PostgreSQL)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = _ca("cachelayer test CA", now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = TestCA(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "other-ca.pem" if other_ca else None,
    )
    pem = serialization.Encoding.PEM
    out.ca_file.write_bytes(ca.public_bytes(pem))
    out.cert_file.write_bytes(cert.public_bytes(pem))
    out.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out.key_file.chmod(0o600)
    if key_owner:
        entry = pwd.getpwnam(key_owner)
        os.chown(out.key_file, entry.pw_uid, entry.pw_gid)
    if out.other_ca_file is not None:
        out.other_ca_file.write_bytes(_ca("some other CA", now)[1].public_bytes(pem))
    return out
