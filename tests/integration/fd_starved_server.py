"""A Thrift server with few file descriptors (``RLIMIT_NOFILE``), for the EMFILE test.

    python -m tests.integration.fd_starved_server --port N --max-fds 64

Its handler answers ``ping`` only; it prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import logging
import resource

from service.handlers.handler import ClassifierHandler
from service.rpc.server import ThriftServer, TransportLimits


class PingOnly(ClassifierHandler):
    """No model: the connection layer is what is under test."""

    handler_name = "ping-only"

    def __init__(self) -> None:
        super().__init__(device="cpu")

    def classify(self, images):
        raise NotImplementedError

    def node_figures(self) -> list:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-fds", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.max_fds, args.max_fds))
    server = ThriftServer(
        PingOnly(), host="127.0.0.1", port=args.port, threads=2, limits=TransportLimits()
    )
    server.listen()
    print("ready", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
