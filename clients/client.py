"""One call: classifies one image file and prints its label and score.

python -m clients.client IMAGE [--host 127.0.0.1] [--port 8888] [--topk K]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TTransportException

from clients.calls import error_name
from service.gen.inference import ttypes
from service.thrift_client import connect


def classify(
    image: bytes, *, host: str, port: int, topk: int = 1, timeout_s: float = 30.0
) -> list[tuple[str, float]]:
    """The ``topk`` (label, score) pairs of ``image``, most probable first.

    ``topk == 1`` uses the reference call ``infer_batch``; more uses ``infer_topk``.
    Raises ``ttypes.InferenceError`` when the server refuses the image.
    """
    params = ttypes.InferenceParams(uuid=str(uuid.uuid4()), data=image)
    with connect(host, port, timeout_s=timeout_s) as connection:
        if topk == 1:
            result = connection.client.infer_batch(params)
            return [(result.label, result.score)]
        return [(p.label, p.score) for p in connection.client.infer_topk(params, topk)]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 on an answer, 1 on a refused image or no server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="an image file (JPEG, PNG...), sent as is")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--topk", type=int, default=1, help="how many classes to print")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    try:
        predictions = classify(
            args.image.read_bytes(),
            host=args.host,
            port=args.port,
            topk=args.topk,
            timeout_s=args.timeout_s,
        )
    except ttypes.InferenceError as exc:
        print(f"error {error_name(exc.code)}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, TTransportException, TApplicationException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for label, score in predictions:
        print(f"{label}\t{score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
