"""A throwaway self-signed certificate for the test server's SSL endpoint."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID


def self_signed(
    common_name: str, host: str = "127.0.0.1"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An EC P-256 key (instant to generate) and a self-signed certificate for `host` and
    localhost, valid from five minutes ago for two days; it is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_self_signed(directory: Path, host: str = "127.0.0.1") -> Path:
    """Write a PKCS#12 file (no password) for the sim's SSL endpoint; return its path.

    PKCS#12, because IceSSL 3.6 deprecates a separate PEM key file.
    """
    key, cert = self_signed("omero-sim", host)
    path = directory / "server.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"omero-sim", key, cert, None, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path
