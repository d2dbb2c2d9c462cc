"""The cache's disk tier (diskcache): shared by porter processes on one host, bounded in
bytes, never a reason for a 500, and never a way to run code planted in its directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import diskcache
import pytest

from cache.disk import DiskTier
from cache.entry import Entry
from proxy.keys import PUBLIC_CACHE
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import (
    OPERATOR,
    OPERATOR_TOKEN,
    ROOT,
    PorterFactory,
    PorterProcess,
    Upstream,
    free_port,
)
from tests.test_cache import TILE, anonymous, cache_sections, upstream_tiles


def run_py(*args: str) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` as an admin runs it: its exit code and output."""
    command = [sys.executable, str(ROOT / "run.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def thumbnail(n: int, size: int = 0) -> str:
    return f"/webgateway/render_thumbnail/{n}/?tile=1" + (f"&size={size}" if size else "")


async def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET as a visitor of the site's one public name (two porters behind one balancer)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(url, allow_redirects=False, headers={"Host": "omero.example.org"}) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


async def test_the_disk_tier_serves_what_memory_dropped_and_its_budget_holds(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    budget = 2 * 1024**2
    sections = cache_sections(
        omero_sim,
        memory_bytes=1024**2,
        disk_dir=str(tmp_path / "cache"),
        disk_bytes=budget,
        max_object_size=100_000,
    )
    client = await porter(logged_in=False, sections=sections)
    cache = client.app[PUBLIC_CACHE]
    for n in range(80):  # 80 x 64 kB: 5 MB through a 1 MiB memory tier and a 2 MiB disk tier
        status, _, _ = await anonymous(client, thumbnail(n, 64_000))
        assert status == 200
    await cache.flush()
    stats = await cache.stats()
    on_disk = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
    print(f"\n5 MB through the tiers: {stats['memory']}, {stats['disk']}, {on_disk} bytes of files")
    assert stats["memory"]["bytes"] <= 1024**2
    # diskcache culls past size_limit at each write: its own count of bytes stays within it
    assert stats["disk"]["bytes"] <= budget
    # and so do the files on disk, beside SQLite's fixed overhead (index pages, a WAL cut back
    # to 256 KiB, shared memory)
    assert on_disk <= budget + 512 * 1024
    assert 25 <= stats["disk"]["entries"] <= 32
    # the memory tier dropped thumbnail 60; the disk tier still has it: OMERO.web is not asked
    before = upstream_tiles(echo_upstream, "/webgateway/render_thumbnail/60/")
    _, _, headers = await anonymous(client, thumbnail(60, 64_000))
    assert headers["X-Cache"] == "HIT"
    assert upstream_tiles(echo_upstream, "/webgateway/render_thumbnail/60/") == before
    # the first ones are gone from both tiers
    _, _, headers = await anonymous(client, thumbnail(0, 64_000))
    assert headers["X-Cache"] == "MISS"


async def test_a_failing_disk_tier_is_a_miss_and_degraded_readiness_never_an_error(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    sections = cache_sections(omero_sim, memory_bytes=1024**2, disk_dir=str(directory))
    client = await porter(logged_in=False, sections=sections)
    ready = await (await client.get("/porter/readyz", headers=OPERATOR)).json()
    assert ready["checks"]["cache_disk"]["ok"] is True
    await anonymous(client, thumbnail(1, 2000))
    await client.app[PUBLIC_CACHE].flush()
    shutil.rmtree(directory)  # the disk is gone under porter, and a file is in its place
    directory.write_text("")
    for n in range(2, 6):
        status, _, headers = await anonymous(client, thumbnail(n, 50_000))  # file-backed values
        assert (status, headers["X-Cache"]) == (200, "MISS")
        status, _, headers = await anonymous(client, thumbnail(n, 50_000))
        assert (status, headers["X-Cache"]) == (200, "HIT")  # from memory
    await client.app[PUBLIC_CACHE].flush()
    resp = await client.get("/porter/readyz", headers=OPERATOR)
    ready = await resp.json()
    assert resp.status == 200  # porter still serves: not taken out of rotation for this
    assert ready["status"] == "ready"
    assert ready["degraded"] == ["cache_disk"]
    assert ready["checks"]["cache_disk"]["ok"] is False
    assert client.app[PUBLIC_CACHE].counters.disk_errors >= 1


async def test_nothing_planted_in_the_disk_tier_is_unpickled(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    sections = cache_sections(omero_sim, disk_dir=str(directory))
    client = await porter(logged_in=False, sections=sections)
    await anonymous(client, TILE + "?tile=1")
    await client.app[PUBLIC_CACHE].flush()
    key = next(iter(client.app[PUBLIC_CACHE]._memory))  # the key porter uses for TILE
    planted = tmp_path / "planted-code-ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (planted,))

    assert await client.app[PUBLIC_CACHE].purge(None) == 2  # memory and disk forget it
    with diskcache.Cache(str(directory)) as other:  # default Disk: pickles what is not bytes
        other.set(key, Payload())
        assert other.get(key) is None  # this Disk runs the payload: the proof it is one
    assert planted.exists()
    planted.unlink()
    status, body, headers = await anonymous(client, TILE + "?tile=1")
    assert (status, headers["X-Cache"]) == (200, "MISS")  # not an entry: fetched again
    assert body.startswith(f"tile {TILE} #2|".encode())
    assert not planted.exists()


def test_entries_survive_the_round_trip_and_damaged_bytes_are_no_entry(tmp_path: Path) -> None:
    entry = Entry(
        (("Content-Type", "image/jpeg"), ("X-Ünïcode", "välue")), b"\x00\xff" * 9, 5.0, 60
    )
    assert Entry.from_bytes(entry.to_bytes()) == entry
    data = entry.to_bytes()
    for damaged in (
        b"",
        data[:10],
        b"x" + data,
        data.replace(b'"s"', b'"z"'),
        data[: -len(entry.body) - 1],
    ):
        assert Entry.from_bytes(damaged) is None
    tier = DiskTier(str(tmp_path / "d"), 1024**2)
    tier.put("k", entry, keep=0)
    assert tier.get("k") is None  # stored in 1970 with a 60 s ttl: already expired
    fresh = Entry(entry.headers, entry.body, time.time(), 60)
    tier.put("k", fresh, keep=0)
    assert tier.get("k") == fresh
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    tier.close()


async def test_two_porter_processes_share_the_disk_tier_and_its_purges(
    echo_upstream: Upstream,
    porter_process: Callable[..., PorterProcess],
    omero_sim: OmeroSim,
    tmp_path: Path,
) -> None:
    entry = omero_sim.server_list_entry()
    sections: dict[str, dict[str, Any]] = {
        "omero": {"server_list": [list(entry)]},
        "public": {
            "enabled": True,
            "url_filter": "^/webgateway/.*",
            "user": "public",
            "password": omero_sim.users["public"],
        },
        "cache": {"enabled": True, "disk_dir": str(tmp_path / "shared-cache")},
    }
    first = porter_process(sections, upstream=echo_upstream.url, operator_token=OPERATOR_TOKEN)
    second = porter_process(sections, upstream=echo_upstream.url, operator_token=OPERATOR_TOKEN)
    _, body, headers = await get(first.url + thumbnail(1))
    assert headers["X-Cache"] == "MISS"
    for _ in range(100):  # the disk write runs after the answer
        async with (
            aiohttp.ClientSession(headers=OPERATOR) as session,
            session.get(first.url + "/porter/cache") as resp,
        ):
            if (await resp.json())["disk"]["entries"] == 1:
                break
        await asyncio.sleep(0.05)
    _, other, headers = await get(second.url + thumbnail(1))
    assert (other, headers["X-Cache"]) == (body, "HIT")  # the other process's fetch, from disk
    for n in (2, 3):
        await get(second.url + thumbnail(n))
    assert upstream_tiles(echo_upstream, "/webgateway/render_thumbnail/1/") == 1

    # `run.py cache purge` reaches the first porter over HTTP; the second drops its memory copy
    # when it reads the purge log in the shared disk tier
    config = next(tmp_path.glob(f"porter-{first.url.rsplit(':', 1)[1]}.toml"))
    purge = await asyncio.to_thread(
        run_py, "cache", "purge", "--config", str(config), "--path-regex", "/render_thumbnail/1/$"
    )
    assert purge.returncode == 0, purge.stderr
    assert '"removed": 2' in purge.stdout  # the first's memory copy and the disk's
    started = time.monotonic()
    while True:
        _, _, headers = await get(second.url + thumbnail(1))
        if headers["X-Cache"] == "MISS":
            break
        assert time.monotonic() - started < 10, "the second porter kept a purged answer"
        await asyncio.sleep(0.2)
    took = time.monotonic() - started
    print(f"\npurge through one porter reached the other's memory in {took:.1f} s")
    _, _, headers = await get(second.url + thumbnail(2))
    assert headers["X-Cache"] == "HIT"  # not purged

    # with no porter running, the CLI works on the disk tier itself
    first.stop()
    second.stop()
    stats = await asyncio.to_thread(run_py, "cache", "stats", "--config", str(config))
    assert stats.returncode == 0, stats.stderr
    assert '"entries": 3' in stats.stdout
    assert "the disk tier only" in stats.stderr


def test_the_cli_says_when_there_is_nothing_to_reach(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[proxy]\nport = 1\noperator_token = "{OPERATOR_TOKEN}"\n[cache]\nenabled = true\n'
    )
    found = run_py("cache", "stats", "--config", str(config))
    assert found.returncode == 1
    assert "no porter answers at http://127.0.0.1:1/porter/cache" in found.stderr
    config.write_text("[proxy]\nport = 1\n[cache]\nenabled = true\n")
    found = run_py("cache", "stats", "--config", str(config))
    assert found.returncode == 1
    assert "proxy.operator_token is unset" in found.stderr
    bad = run_py("cache", "purge", "--config", str(config), "--path-regex", "(")
    assert bad.returncode == 2
    assert "--path-regex is refused: not a valid regular expression" in bad.stderr
    hazard = run_py("cache", "purge", "--config", str(config), "--path-regex", "(a|aa)+$")
    assert hazard.returncode == 2
    assert "repeats an alternation or a repeat" in hazard.stderr


def test_an_unusable_disk_dir_is_named_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "c.toml"
    config.write_text(
        f"[proxy]\nport = {free_port()}\n"
        "[public]\nenabled = true\nuser = 'public'\npassword = 'x'\n"
        f"[cache]\nenabled = true\ndisk_dir = '{blocker}/cache'\n"
    )
    found = run_py("serve", "--config", str(config))
    assert found.returncode == 2
    assert "cache.disk_dir" in found.stderr
    assert "cannot be opened" in found.stderr
    relative = tmp_path / "r.toml"
    relative.write_text("[cache]\ndisk_dir = 'cache'\n")
    found = run_py("check", "--config", str(relative))
    assert found.returncode == 2
    assert "cache.disk_dir" in found.stderr


def test_check_warns_of_a_cache_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import run

    config = tmp_path / "c.toml"
    config.write_text("[cache]\nenabled = true\nrules = []\nmax_object_size = 2000000000\n")
    assert run.main(["check", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "warning: cache.enabled: true, but [public] is off" in err
    assert "warning: cache.rules: empty: nothing is cached" in err
    assert "warning: cache.max_object_size: larger than memory_bytes" in err
    config.write_text("[cache]\nrules = [{path = '(a+)+', ttl = 5}]\n")
    assert run.main(["check", "--config", str(config)]) == 2
    assert "cache.rules[0].path" in capsys.readouterr().err


async def test_a_removed_and_recreated_disk_dir_is_noticed_and_reopened(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    """`rm -rf disk_dir; mkdir disk_dir` under a running porter: it counts the error, serves
    from memory, reopens the new directory and writes there, readyz is ready again, and it
    holds none of the deleted files (their space comes back)."""
    directory = tmp_path / "cache"
    sections = cache_sections(omero_sim, memory_bytes=1024**2, disk_dir=str(directory))
    client = await porter(logged_in=False, sections=sections)
    store = client.app[PUBLIC_CACHE]
    await anonymous(client, thumbnail(1, 50_000))
    await store.flush()
    shutil.rmtree(directory)
    directory.mkdir(mode=0o700)  # the admin's new, empty directory
    for n in range(2, 5):
        status, _, headers = await anonymous(client, thumbnail(n, 50_000))
        assert (status, headers["X-Cache"]) == (200, "MISS")
    await store.flush()
    assert store.counters.disk_errors >= 1  # noticed and counted
    assert store.disk is not None
    assert store.disk.reopened == 1
    assert (directory / "cache.db").is_file()  # the new directory is the tier now
    stats = await store.disk_stats()
    assert stats is not None
    assert stats["entries"] >= 2  # written to the new directory
    ready = await (await client.get("/porter/readyz", headers=OPERATOR)).json()
    assert ready["checks"]["cache_disk"]["ok"] is True
    assert "degraded" not in ready or ready["degraded"] == []
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert not [p for p in held if p.endswith("(deleted)") and str(directory) in p]


async def test_a_removed_disk_dir_is_made_again_and_a_loose_one_is_refused(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    sections = cache_sections(omero_sim, memory_bytes=1024**2, disk_dir=str(directory))
    client = await porter(logged_in=False, sections=sections)
    store = client.app[PUBLIC_CACHE]
    assert store.disk is not None
    shutil.rmtree(directory)  # gone, nobody makes it again
    await anonymous(client, thumbnail(1, 50_000))
    await store.flush()
    assert directory.is_dir()  # porter made it again, 0700
    assert directory.stat().st_mode & 0o777 == 0o700
    shutil.rmtree(directory)
    directory.mkdir()
    directory.chmod(0o777)  # someone else could plant answers in this one
    await asyncio.sleep(1.1)  # REOPEN_EVERY
    status, _, headers = await anonymous(client, thumbnail(2, 50_000))
    assert (status, headers["X-Cache"]) == (200, "MISS")  # served, from memory and upstream
    await store.flush()
    assert not (directory / "cache.db").exists()  # not used
    ready = await (await client.get("/porter/readyz", headers=OPERATOR)).json()
    assert ready["checks"]["cache_disk"]["ok"] is False


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`, mode 0700 (root can mount one here; else skipped)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_tier_is_a_miss_and_comes_back_when_there_is_room(
    echo_upstream: Upstream, porter: PorterFactory, omero_sim: OmeroSim, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "400k") as directory:
        sections = cache_sections(omero_sim, memory_bytes=64 * 1024**2, disk_dir=str(directory))
        client = await porter(logged_in=False, sections=sections)
        store = client.app[PUBLIC_CACHE]
        statuses = set()
        for n in range(1, 25):  # 24 x 50 kB: far past the 400 kB disk
            status, _, headers = await anonymous(client, thumbnail(n, 50_000))
            statuses.add(status)
            await store.flush()
        assert statuses == {200}  # a full disk is never an error
        full_errors = store.counters.disk_errors
        assert full_errors >= 1
        status, _, headers = await anonymous(client, thumbnail(24, 50_000))
        assert (status, headers["X-Cache"]) == (200, "HIT")  # from memory

        subprocess.run(["mount", "-o", "remount,size=16m", str(directory)], check=True)
        status, _, _ = await anonymous(client, thumbnail(30, 50_000))
        await store.flush()
        ready = await (await client.get("/porter/readyz", headers=OPERATOR)).json()
        assert ready["checks"]["cache_disk"]["ok"] is True  # room again: the tier works
        stats = await store.disk_stats()
        assert stats is not None

        after = store.counters.disk_errors
        for n in range(40, 43):
            await anonymous(client, thumbnail(n, 50_000))
            await store.flush()
        assert store.counters.disk_errors == after  # room again: no new errors
        await client.close()
