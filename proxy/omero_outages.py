"""Tell the admins when an OMERO server becomes unreachable, and when it is back.

Porter's own 503s during an OMERO outage are not OMERO.web's 5xx, so the per-request mail
does not see them. This watch does, from the backend's results: the first call that finds
a server unreachable mails "OMERO server unreachable"; the first call that reaches it again
mails "OMERO server back", with the outage's length and how many requests porter answered
503 meanwhile. Both go through the mailer's dedup (a flapping server gets a digest, not a
mail per flap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mailer.report import Report

log = logging.getLogger("porter.auth.omero")


@dataclass
class _Outage:
    started: float
    since: datetime
    reason: str
    refused: int = 0
    request_ids: list[str] = field(default_factory=list)


class OmeroOutages:
    """Which OMERO servers are down now, as the last calls to them found."""

    def __init__(
        self, submit: Callable[[Report], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._down: dict[int, _Outage] = {}

    def down(self) -> list[int]:
        return sorted(self._down)

    def failed(self, server_id: int, reason: str) -> None:
        """A call found `server_id` unreachable (or silent past call_timeout)."""
        if server_id in self._down:
            return
        self._down[server_id] = _Outage(self._clock(), datetime.now(timezone.utc), reason)
        log.warning("OMERO server %d unreachable: %s", server_id, reason)
        self._submit(
            Report(
                kind="omero_down",
                request_id="-",
                server_id=server_id,
                comment=f"Porter cannot reach OMERO server {server_id}: {reason}. Requests "
                "that need it are answered 503 until it answers again; another mail says "
                "when it does.",
            )
        )

    def refused(self, server_id: int | None, request_id: str) -> None:
        """A request was answered 503 because the server is unreachable."""
        outage = self._down.get(server_id) if server_id is not None else None
        if outage is not None:
            outage.refused += 1

    def answered(self, server_id: int) -> None:
        """A call reached `server_id`."""
        outage = self._down.pop(server_id, None)
        if outage is None:
            return
        length = self._clock() - outage.started
        log.info(
            "OMERO server %d back after %.0f s (%d requests answered 503)",
            server_id,
            length,
            outage.refused,
        )
        self._submit(
            Report(
                kind="omero_up",
                request_id="-",
                server_id=server_id,
                comment=f"OMERO server {server_id} answers again after {length:.0f} s "
                f"(unreachable since {outage.since.isoformat(timespec='seconds')}: "
                f"{outage.reason}). Requests answered 503 meanwhile: {outage.refused}.",
            )
        )
