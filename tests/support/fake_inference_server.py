"""A stand-in InferenceService for the load tester's tests: real Thrift, answers from the bytes.

    python -m tests.support.fake_inference_server --port N [--bad-score]

JPEG payloads (FF D8 ...) get a deterministic label derived from their bytes and score 0.5;
anything else gets ``InferenceError(INVALID_IMAGE)``. ``--bad-score`` answers with score 1.5, a
broken response the load tester must count as an error; ``--device`` is what ``stats()`` says.
"""

from __future__ import annotations

import argparse
import logging
import sys
import zlib
from pathlib import Path

from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

from service.gen.inference import InferenceService, ttypes
from service.server_process import ServerProcess, free_port

JPEG_MAGIC = b"\xff\xd8"


class FakeHandler:
    """Answers every method of the IDL without a model."""

    def __init__(self, score: float, device: str = "none"):
        self.score = score
        self.device = device
        self.ok = 0
        self.failed = 0

    def ping(self) -> None:
        return None

    def _top(self, params: ttypes.InferenceParams) -> ttypes.Prediction:
        if not params.data.startswith(JPEG_MAGIC):
            self.failed += 1
            raise ttypes.InferenceError(
                code=ttypes.ErrorCode.INVALID_IMAGE, message="not a JPEG", uuid=params.uuid
            )
        self.ok += 1
        index = zlib.crc32(params.data) % 1000
        return ttypes.Prediction(index=index, label=f"{index} fake", score=self.score)

    def infer_batch(self, params: ttypes.InferenceParams) -> ttypes.InferenceResult:
        top = self._top(params)
        return ttypes.InferenceResult(label=top.label, score=top.score)

    def infer_topk(self, params: ttypes.InferenceParams, k: int) -> list[ttypes.Prediction]:
        return [self._top(params)]

    def infer_many(self, params: list[ttypes.InferenceParams], k: int) -> list[ttypes.ItemResult]:
        items = []
        for one in params:
            try:
                items.append(ttypes.ItemResult(uuid=one.uuid, predictions=[self._top(one)]))
            except ttypes.InferenceError as exc:
                items.append(ttypes.ItemResult(uuid=one.uuid, error=exc))
        return items

    def stats(self) -> ttypes.ServerStats:
        return ttypes.ServerStats(
            handler="fake",
            device=self.device,
            uptime_s=0.0,
            requests_ok=self.ok,
            requests_failed=self.failed,
            failures_by_code={},
            nodes=[],
        )


def start_fake_server(log_dir: Path, *extra_args: str) -> ServerProcess:
    """Starts this server on a free port as a subprocess; returns once it answers ping."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.support.fake_inference_server",
        "--port",
        str(port),
        *extra_args,
    ]
    server = ServerProcess(command, host="127.0.0.1", port=port, log_path=log_dir / "fake.log")
    return server.start(ready_timeout_s=60.0)


def main() -> None:
    """Serves on 127.0.0.1 until killed."""
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bad-score", action="store_true")
    parser.add_argument("--device", default="none", help="what stats() says the model runs on")
    args = parser.parse_args()
    handler = FakeHandler(score=1.5 if args.bad_score else 0.5, device=args.device)
    server = TServer.TThreadPoolServer(
        InferenceService.Processor(handler),
        TSocket.TServerSocket(host="127.0.0.1", port=args.port),
        TTransport.TBufferedTransportFactory(),
        TBinaryProtocol.TBinaryProtocolAcceleratedFactory(),
        daemon=True,
    )
    server.setNumThreads(32)
    server.serve()


if __name__ == "__main__":
    main()
