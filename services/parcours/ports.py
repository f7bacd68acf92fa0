"""The local ports of the services started by `parcours up` (and an adapter run alone)."""

from __future__ import annotations

import socket

from parcours.errors import ParcoursError

ADAPTER_PORTS = {"dac": 8101, "cpts": 8102, "crt": 8103}
SERVICE_PORTS = {**ADAPTER_PORTS, "processor": 8104, "validator": 8105, "supervisor": 8100}
#: instance i of an adapter kind listens on its kind's port + i * this (8101, 8111, 8121 ... for the DAC)
INSTANCE_PORT_STEP = 10


def check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        # as uvicorn binds: a socket of a service that just stopped (TIME_WAIT) does not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ParcoursError(f"port {host}:{port} is already taken ({exc.strerror}); pass --port") from None
