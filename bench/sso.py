"""SSO: bearer-token requests vs cookie-session requests through porter, same run, and the
OMERO sessions made for 1,000 requests of one SSO user (it must be 1).

Run on demand (not a test): .venv/bin/python -m bench.sso [--duration 5 --rounds 3]
Porter runs as a process in front of the echo upstream (which answers OMERO.web's handoff)
with the OMERO test server as its server; the identity provider is an EC key made here.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench._common import (
    Processes,
    Target,
    ensure_tools,
    expect,
    load_line,
    log_in,
    print_ratios,
    print_table,
    start_echo_upstream,
    start_porter,
    wrk_matrix,
)
from tests.omero_sim.fixture import start_sim, stop_sim

ISSUER = "https://idp.bench.example"
PATH = "/webclient/api/bench/"
ONE_USER_REQUESTS = 1000


def token_for(key: ec.EllipticCurvePrivateKey, user: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "omero",
        "sub": f"sub-{user}",
        "preferred_username": user,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, key, algorithm="ES256")


async def one_user(url: str, token: str) -> int:
    """ONE_USER_REQUESTS bearer requests of one user, 10 at a time; how many failed."""
    failed = 0
    semaphore = asyncio.Semaphore(10)

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        async with semaphore, session.get(url) as resp:
            await resp.read()
            failed += resp.status != 200

    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(one(session) for _ in range(ONE_USER_REQUESTS)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target (medians)")
    args = parser.parse_args()
    ensure_tools(["wrk"], ["wrk"])
    sim = start_sim()
    try:
        with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as procs:
            key = ec.generate_private_key(ec.SECP256R1())
            public = Path(tmp) / "idp.pem"
            public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            echo = start_echo_upstream(procs)
            porter = start_porter(
                procs,
                "porter",
                echo,
                sections={
                    "omero": {
                        "server_list": [[sim.host, sim.ssl_port, "sim"]],
                        "admin_user": "root",
                        "admin_password": sim.users["root"],
                    },
                    "sso": {
                        "enabled": True,
                        "issuers": [
                            {
                                "issuer": ISSUER,
                                "audience": ["omero"],
                                "algorithms": ["ES256"],
                                "public_key_files": [str(public)],
                            }
                        ],
                    },
                },
            )
            url = porter.url + PATH
            cookie = asyncio.run(log_in(porter.url, "alice", sim.users["alice"]))
            token = token_for(key, "bob")
            bearer = {"Authorization": f"Bearer {token}"}
            cookies = {"Cookie": f"porter_session={cookie}"}
            before = sim.stats()["sessions_created"]
            expect(url, bearer, 200, "{")
            expect(url, cookies, 200, "{")
            failed = asyncio.run(one_user(url, token))
            made = sim.stats()["sessions_created"] - before
            users = [s["user"] for s in sim.sessions()]
            print(load_line())
            print(
                f"{ONE_USER_REQUESTS} bearer requests of one SSO user (10 at a time): "
                f"{users.count('bob')} OMERO session(s) of that user ({made} created in all, "
                f"the held admin session included), {failed} failed"
            )
            targets = [
                Target("bearer token", url, bearer),
                Target("cookie session", url, cookies),
            ]
            summaries = wrk_matrix(targets, (1, 32), args.duration, args.rounds)
            print_table(summaries)
            print_ratios(summaries, [("bearer token", "cookie session")], (1, 32))
    finally:
        stop_sim(sim)


if __name__ == "__main__":
    main()
