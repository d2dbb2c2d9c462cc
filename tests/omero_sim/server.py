"""The test server process: an Ice communicator with one adapter on a TCP and an SSL port.

``down()`` destroys the adapter (open connections drop, new ones are refused) and ``up()``
binds the same ports again; sessions survive, as when only the network or router fails.
``hang()`` holds the adapter: connections are accepted by the kernel but never answered.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import Ice
import omero
import omero.ObjectFactoryRegistrar
import omero.rtypes

from tests.omero_sim.directory import Directory
from tests.omero_sim.locator import Faults, Locator
from tests.omero_sim.sessions import SessionRegistry
from tests.omero_sim.state import SimState, close_connections

HOST = "127.0.0.1"


def _properties(cert: Path) -> Any:
    props = Ice.createProperties()
    for name, value in {
        "Ice.Plugin.IceSSL": "IceSSL:createIceSSL",
        "IceSSL.CertFile": str(cert),
        "IceSSL.Password": "",
        "IceSSL.VerifyPeer": "0",
        "Ice.ThreadPool.Server.Size": "4",
        "Ice.ThreadPool.Server.SizeMax": "64",  # slow() sleeps in dispatch threads
        "Ice.ACM.Server.Close": "0",  # Glacier2 sessions end on close, not on idle ACM
        "Ice.ACM.Server.Heartbeat": "0",
        "Ice.MessageSizeMax": "65536",
        "Ice.Warn.Connections": "0",
    }.items():
        props.setProperty(name, value)
    return props


class SimServer:
    def __init__(
        self,
        directory: Directory,
        cert: Path,
        idle_timeout: float = 600.0,
        tcp_port: int = 0,
        ssl_port: int = 0,
    ) -> None:
        init = Ice.InitializationData()
        init.properties = _properties(cert)
        self.communicator = Ice.initialize(init)
        omero.ObjectFactoryRegistrar.registerObjectFactory(self.communicator, None)
        for factory in omero.rtypes.ObjectFactories.values():
            factory.register(self.communicator)
        self.registry = SessionRegistry(directory, idle_timeout)
        self.state = SimState(
            directory,
            self.registry,
            {
                "omero.version": "5.6.16",
                "omero.db.uuid": "00000000-0000-0000-0000-0000000051a0",
                "omero.client.ui.menu.dropdown.everyone.enabled": "true",
                "omero.client.viewer.roi_limit": "2000",
                "omero.mail.config": "false",
            },
        )
        self.faults = Faults()
        self.locator = Locator(self.state, self.faults)
        self.tcp_port, self.ssl_port = tcp_port, ssl_port
        self.adapter: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.up()
        self._reaper = threading.Thread(target=self._reap, name="sim-reaper", daemon=True)
        self._reaper.start()

    def up(self) -> None:
        """Listen (again) on the same ports."""
        with self._lock:
            if self.adapter is not None:
                self.adapter.activate()  # no-op unless held
                return
            endpoints = f"tcp -h {HOST} -p {self.tcp_port}:ssl -h {HOST} -p {self.ssl_port}"
            adapter = self.communicator.createObjectAdapterWithEndpoints("OmeroSim", endpoints)
            adapter.addServantLocator(self.locator, "")
            adapter.activate()
            for endpoint in adapter.getEndpoints():
                info = endpoint.getInfo()
                if info.secure():
                    self.ssl_port = info.port
                else:
                    self.tcp_port = info.port
            self.adapter = adapter
            # BlitzGateway (secure=False, OMERO.web's default) moves to this router
            self.state.config["omero.router.insecure"] = (
                f"OMERO.Glacier2/router:tcp -p {self.tcp_port} -h @omero.host@"
            )

    def down(self) -> None:
        """Close every connection and refuse new ones, until up()."""
        with self._lock:
            if self.adapter is not None:
                self.adapter.destroy()
                self.adapter = None

    def hang(self) -> None:
        """Accept connections but answer nothing, until up()."""
        with self._lock:
            if self.adapter is not None:
                self.adapter.hold()

    def kill_session(self, key: str) -> bool:
        known = self.registry.peek(key) is not None
        close_connections(self.registry.kill(key))
        return known

    def reset(self) -> None:
        """Back to a fresh server: listening, no delay, no sessions, zero counters."""
        self.faults.delay = 0.0
        self.up()
        close_connections(self.registry.reset())

    def _reap(self) -> None:
        while not self._stop.wait(0.1):
            close_connections(self.registry.reap())

    def shutdown(self) -> None:
        self._stop.set()
        self.down()
        self.communicator.destroy()
