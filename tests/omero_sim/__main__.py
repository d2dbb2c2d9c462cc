"""Run the OMERO test server: ``python -m tests.omero_sim --config users.json``.

Ports default to 0 (free ports chosen by the OS). When ready, prints one JSON line on stdout:
``{"host": "127.0.0.1", "tcp_port": N, "ssl_port": N, "control_port": N}``.
Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from tests.omero_sim.certs import write_self_signed
from tests.omero_sim.control import start_control
from tests.omero_sim.directory import DEFAULT_USERS_FILE, Directory
from tests.omero_sim.server import HOST, SimServer

SHUTDOWN_GRACE = 3.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.omero_sim", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_USERS_FILE, help="users and groups (JSON)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--ssl-port", type=int, default=0, help="SSL port (0: any free port)")
    parser.add_argument("--control-port", type=int, default=0, help="control HTTP port")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="sessions' time-to-idle, seconds (OMERO: 600)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="omero-sim-") as tmp:
        cert = write_self_signed(Path(tmp), HOST)
        sim = SimServer(
            Directory.load(args.config), cert, args.idle_timeout, args.port, args.ssl_port
        )
        control = start_control(sim, args.control_port)
        print(
            json.dumps(
                {
                    "host": HOST,
                    "tcp_port": sim.tcp_port,
                    "ssl_port": sim.ssl_port,
                    "control_port": control.server_address[1],
                }
            ),
            flush=True,
        )
        try:
            while not stop.wait(0.2):
                pass
        finally:
            control.shutdown()
            # destroy waits for dispatches in progress (a slow() sleep): bound the wait
            closer = threading.Thread(target=sim.shutdown, daemon=True)
            closer.start()
            closer.join(SHUTDOWN_GRACE)
            if closer.is_alive():
                shutil.rmtree(tmp, ignore_errors=True)
                os._exit(0)


if __name__ == "__main__":
    main()
