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


def write_self_signed(directory: Path, host: str = "127.0.0.1") -> Path:
    """Write a PKCS#12 file (EC P-256 key: instant to generate, no password); return its path.

    PKCS#12, because IceSSL 3.6 deprecates a separate PEM key file.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omero-sim")])
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
        .sign(key, hashes.SHA256())
    )
    path = directory / "server.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"omero-sim", key, cert, None, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path
