"""Keys the tests' porters and stores share (a plain module: no fixtures here)."""

from __future__ import annotations

from auth.store_seal import StoreSeal

# proxy.secret_key of the tests' porters on Redis, and the seal the tests' stores use with it.
TEST_SECRET_KEY = "tests-secret-key-for-redis-sessions-0123456789"
TEST_SEAL = StoreSeal(TEST_SECRET_KEY)
