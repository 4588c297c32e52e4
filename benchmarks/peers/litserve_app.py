"""The LitServe peer: a ``LitAPI`` with LitServe's own batching, serving our engine over HTTP.

    python -m benchmarks.peers.litserve_app --port 8000 [--max-batch-size 8]
        [--batch-timeout-ms 5] [--workers-per-device 1] [--accelerator cpu|cuda]

POST a JPEG as the request body to ``/predict``; the answer is ``{"label": <class index>,
"probability": <softmax of that class>}``. Per request LitServe's inference worker calls
``decode_request`` (``Classifier.preprocess``: OpenCV decode, resize, BGR->RGB; with a GPU
image stage in the config, the header check only), collects up to ``max_batch_size`` requests
within ``batch_timeout``, then ``predict`` runs the batch through our image stage and engine
(``Classifier.classify``) and ``encode_response`` writes each answer.

LitServe answers every request of a batch with the error that one of its steps raises: an
image that fails to decode on the GPU (its header was sound) fails its whole batch with 400.
"""

# No ``from __future__ import annotations`` here: LitServe hands decode_request's annotation
# of ``request`` to FastAPI as the endpoint's parameter type, and it must be a real object.

import argparse
import logging
import os
import signal
import sys
from typing import Annotated, Any

import litserve as ls
from fastapi import Depends, HTTPException, Request

from benchmarks.peers.classifier import (
    Classifier,
    ClassifierSettings,
    NotAnImageError,
    Top1,
    settings_from_paths,
)
from torchpipe_lite import InvalidInputError
from torchpipe_lite.errors import RequestError

logger = logging.getLogger("benchmarks.peers.litserve_app")


async def _body(request: Request) -> bytes:
    """The raw request body: the JPEG itself, not JSON or a form."""
    return await request.body()


#: What ``decode_request`` receives: FastAPI reads the body in the API server process and
#: LitServe passes the bytes to the inference worker.
JpegBody = Annotated[bytes, Depends(_body)]


class ClassifierLitAPI(ls.LitAPI):
    """Decode and resize per request, our engine per batch, the top-1 class per answer."""

    def __init__(self, settings: ClassifierSettings, *, batch_timeout_ms: float):
        super().__init__(
            max_batch_size=settings.max_batch_size, batch_timeout=batch_timeout_ms / 1000.0
        )
        self.settings = settings
        self.classifier: Classifier | None = None

    def setup(self, device: str) -> None:
        """Builds our engine on the device LitServe gives this worker (``cpu``, ``cuda:0``)."""
        settings = ClassifierSettings(
            config=self.settings.config,
            model=self.settings.model,
            device=device,
            max_batch_size=self.settings.max_batch_size,
        )
        self.classifier = Classifier(settings)
        logger.info("LitServe worker ready: %s", self.classifier.describe())

    def decode_request(self, request: JpegBody) -> Any:
        """JPEG bytes -> uint8 1x3xHxW RGB tensor, or the checked bytes for the GPU image
        stage; 400 when they are not an image."""
        assert self.classifier is not None, "setup() has not run"
        try:
            return self.classifier.preprocess(request)
        except (NotAnImageError, InvalidInputError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    def batch(self, inputs: list[Any]) -> list[Any]:
        """The tensors as a list: the engine takes one request dict per image."""
        return list(inputs)

    def predict(self, x: list[Any]) -> list[Top1 | RequestError]:
        """The batch through our GPU image stage (if the config has one) and engine."""
        assert self.classifier is not None, "setup() has not run"
        return self.classifier.classify(x)

    def unbatch(self, output: list[Top1 | RequestError]) -> list[Top1 | RequestError]:
        """One answer per request, in order."""
        return list(output)

    def encode_response(self, output: Top1 | RequestError) -> dict[str, Any]:
        """The JSON answer: class index and its probability; 400 for an image the GPU image
        stage could not decode."""
        if isinstance(output, RequestError):
            raise HTTPException(status_code=400, detail=str(output))
        return {"label": output.label, "probability": output.probability}


def build_server(
    settings: ClassifierSettings,
    *,
    batch_timeout_ms: float,
    workers_per_device: int,
    accelerator: str,
    fast_queue: bool,
) -> ls.LitServer:
    """The LitServer of ``ClassifierLitAPI``, one device (``devices=1``)."""
    api = ClassifierLitAPI(settings, batch_timeout_ms=batch_timeout_ms)
    return ls.LitServer(
        api,
        accelerator=accelerator,
        devices=1,
        workers_per_device=workers_per_device,
        fast_queue=fast_queue,
        model_metadata={"engine": "torchpipe_lite " + settings.config},
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", help="our pipeline TOML (default: the service's)")
    parser.add_argument("--model", help="model file (default: the config's)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--workers-per-device", type=int, default=1)
    parser.add_argument(
        "--api-servers", type=int, default=1, help="LitServe's num_api_servers (uvicorn processes)"
    )
    parser.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--fast-queue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LitServe's ZeroMQ queues, which its docs advise above 100 requests/s",
    )
    return parser.parse_args(argv)


_MAIN_PID = os.getpid()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # LitServer.run shuts its workers down on KeyboardInterrupt; SIGTERM should do the same.
    # Its API server processes are forked from this one and inherit the handler: they just end.
    if os.getpid() != _MAIN_PID:
        raise SystemExit(0)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Runs the LitServe peer until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = settings_from_paths(args.config, args.model, None, args.max_batch_size)
    server = build_server(
        settings,
        batch_timeout_ms=args.batch_timeout_ms,
        workers_per_device=args.workers_per_device,
        accelerator=args.accelerator,
        fast_queue=args.fast_queue,
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=args.api_servers,
        generate_client_file=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
