"""Pytest fixtures that run the OMERO test server as a subprocess and steer it.

``omero_sim`` (function scope) hands each test the session-wide server, reset first: up, no
delay, default idle timeout, no sessions, zero counters. One process serves the whole run
because a start costs about a second and OMERO.web (also session-wide) points at its ports.
``omero_sim_factory`` starts a private server for a test that needs one (own idle timeout,
or faults that must not touch the shared OMERO.web).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.omero_sim.directory import DEFAULT_USERS_FILE
from tests.omero_sim.process import OmeroSim, start_sim, stop_sim

__all__ = ["OmeroSim", "start_sim", "stop_sim"]


@pytest.fixture(scope="session")
def omero_sim_server() -> Iterator[OmeroSim]:
    """The session-wide test server (prefer ``omero_sim``, which resets it per test)."""
    sim = start_sim()
    yield sim
    stop_sim(sim)


@pytest.fixture
def omero_sim(omero_sim_server: OmeroSim) -> OmeroSim:
    """The shared test server, reset for this test."""
    omero_sim_server.reset()
    return omero_sim_server


@pytest.fixture
def omero_sim_factory() -> Iterator[Callable[..., OmeroSim]]:
    """Start private test servers: ``omero_sim_factory(idle_timeout=1.0)``; stopped after."""
    started: list[OmeroSim] = []

    def factory(idle_timeout: float = 600.0, users_file: Path = DEFAULT_USERS_FILE) -> OmeroSim:
        sim = start_sim(idle_timeout, users_file)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        stop_sim(sim)
