"""Keys the tests' porters and stores share (a plain module: no fixtures here)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.store_seal import StoreSeal

# proxy.secret_key of the tests' porters on Redis, and the seal the tests' stores use with it.
TEST_SECRET_KEY = "tests-secret-key-for-redis-sessions-0123456789"
TEST_SEAL = StoreSeal(TEST_SECRET_KEY)


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """`key` as an unencrypted PKCS#8 PEM (what porter's *_key_file settings read)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    path.write_bytes(pem(key))
    return str(path)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
