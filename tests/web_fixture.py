"""Pytest fixtures that run the real OMERO.web (omero-web under gunicorn) against the sim.

How one is started: tests/omero_web.py.
``omero_web`` is shared by the whole run (public user off, OMERO.web's default);
``omero_web_factory(public_user=True, ...)`` starts others, e.g. OMERO.web with its
built-in public user, once per distinct configuration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.omero_sim.fixture import OmeroSim
from tests.omero_web import (
    PUBLIC_URL_FILTER,
    OmeroWeb,
    restart_web,
    start_web,
    stop_web,
    web_config,
)

__all__ = ["PUBLIC_URL_FILTER", "OmeroWeb", "restart_web", "start_web", "stop_web", "web_config"]


@pytest.fixture(scope="session")
def omero_web_factory(
    omero_sim_server: OmeroSim,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., OmeroWeb]]:
    """Start OMERO.web against the shared sim: ``omero_web_factory(public_user=True)``.

    Keyword arguments are those of ``web_config``; one OMERO.web per distinct configuration
    is started and shared for the rest of the run.
    """
    workdir = tmp_path_factory.mktemp("omeroweb")
    running: dict[str, OmeroWeb] = {}

    def factory(**kwargs: Any) -> OmeroWeb:
        config = web_config(omero_sim_server, **kwargs)
        key = json.dumps(config, sort_keys=True)
        if key not in running:
            running[key] = start_web(config, workdir)
        return running[key]

    yield factory
    for web in running.values():
        stop_web(web)


@pytest.fixture
def omero_web(omero_web_factory: Callable[..., OmeroWeb], omero_sim: OmeroSim) -> OmeroWeb:
    """The real OMERO.web with OMERO.web's defaults (public user off), against ``omero_sim``."""
    return omero_web_factory()
