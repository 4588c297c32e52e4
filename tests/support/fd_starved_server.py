"""A Thrift server with few file descriptors (``RLIMIT_NOFILE``), for the descriptor tests.

    python -m tests.support.fd_starved_server --port N --max-fds 64 [--ops-port M]
        [--burn-fds K]

Its handler answers ``ping`` only. Once it listens it prints "ready" and the connection cap it
took from the file limit. ``--burn-fds`` opens that many descriptors after the cap was taken,
as other parts of a process may (so that ``accept()`` still runs out: the EMFILE test);
``--ops-port`` serves ``/health/live`` there.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import time
from typing import Any

from thrift.transport.TTransport import TTransportException

from service.handlers.blocking import BlockingHandler
from service.ops.ops_server import OpsServer, ServiceState
from service.rpc.server import ThriftServer, TransportLimits
from service.thrift_client import connect


class PingOnly(BlockingHandler):
    """No model: the connection layer is what is under test."""

    handler_name = "ping-only"

    def __init__(self) -> None:
        super().__init__(device="cpu")

    def classify(self, images):
        raise NotImplementedError

    def node_figures(self) -> list:
        return []


def spawn(port: int, max_fds: int, *flags: str, stderr: Any) -> subprocess.Popen[str]:
    """This server in a subprocess on ``port`` (its stdout a pipe: read the "ready" line)."""
    command = [sys.executable, "-m", __name__, "--port", str(port), "--max-fds", str(max_fds)]
    return subprocess.Popen([*command, *flags], stdout=subprocess.PIPE, stderr=stderr, text=True)


def ping_until_served(host: str, port: int, within_s: float) -> None:
    """Ping on new connections until one is answered; AssertionError after ``within_s``."""
    deadline_s = time.monotonic() + within_s
    while True:
        try:
            with connect(host, port, timeout_s=within_s) as connection:
                connection.client.ping()
            return
        except (TTransportException, OSError):
            assert time.monotonic() < deadline_s, "never served again"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-fds", type=int, required=True)
    parser.add_argument("--ops-port", type=int, default=0)
    parser.add_argument("--burn-fds", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.max_fds, args.max_fds))
    ops = None
    if args.ops_port:
        ops = OpsServer(ServiceState(), lambda: "", host="127.0.0.1", port=args.ops_port)
        ops.start()
    server = ThriftServer(PingOnly(), host="127.0.0.1", port=args.port, limits=TransportLimits())
    server.listen()
    burnt = [os.open(os.devnull, os.O_RDONLY) for _ in range(args.burn_fds)]
    print("ready", server.connection_stats().max_open, flush=True)
    try:
        server.serve()
    finally:
        for fd in burnt:
            os.close(fd)
        if ops is not None:
            ops.close()


if __name__ == "__main__":
    main()
