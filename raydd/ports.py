"""Free TCP ports for servers this machine's other processes must not take first."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

from raydd.errors import RayddError


def ports_below_ephemeral(tries: int = 200) -> Iterator[int]:
    """Random ports below Linux's ephemeral range (32768 up) and above Ray's worker ports (10002-19999): no
    outgoing connection or Ray worker is given one of them while a server is about to listen on it."""
    yield from random.Random().sample(range(20000, 32768), tries)


def free_port() -> int:
    """A port of :func:`ports_below_ephemeral` that nothing listens on now."""
    for port in ports_below_ephemeral():
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RayddError("no free port in 20000-32767 on 127.0.0.1: free some, or pass --ray-address")
