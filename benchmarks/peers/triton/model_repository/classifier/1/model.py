"""The Triton peer's Python backend: our decode, resize, RGB and engine, one batch per execute.

Triton's dynamic batcher (``config.pbtxt``) hands ``execute`` the requests it gathered (up to
``max_batch_size``, waiting up to ``max_queue_delay_microseconds``); each carries one JPEG as a
BYTES element of input ``IMAGE``. Each is decoded and resized (``Classifier.preprocess``; with a
GPU image stage in the config, only its header is checked), the batch runs once through our
image stage and engine (``Classifier.classify``), and each request gets ``LABEL`` (the class
index, INT64) and ``PROB`` (its softmax probability, FP32); a request whose bytes are not an
image gets an error of its own, the others are answered.

The stub's interpreter must import this project and its dependencies. Triton's Python backend
does not pass ``PYTHONPATH`` on, so this file prepends ``TORCHPIPE_LITE_SYS_PATH`` (folders
separated by ``os.pathsep``) and the repository root (the config's ``repo_root``, else the
folder six levels above this file) to ``sys.path``.
"""

import json
import os
import sys
from pathlib import Path

sys.path[:0] = [p for p in os.environ.get("TORCHPIPE_LITE_SYS_PATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402  (after the path above)
import triton_python_backend_utils as pb_utils  # noqa: E402


def _parameter(config: dict, key: str, default: str | None = None) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    """One model instance (``instance_group``): our engine on its device."""

    def initialize(self, args: dict) -> None:
        """Builds our engine on this instance's device (``instance_group``'s kind and id)."""
        config = json.loads(args["model_config"])
        root = _parameter(config, "repo_root") or str(Path(__file__).resolve().parents[6])
        if root not in sys.path:
            sys.path.insert(0, root)
        from benchmarks.peers.classifier import Classifier, ClassifierSettings
        from service.service_config import DEFAULT_CONFIG

        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        settings = ClassifierSettings(
            config=_parameter(config, "torchpipe_config", str(DEFAULT_CONFIG)),
            model=_parameter(config, "model"),
            device=device,
            max_batch_size=int(config.get("max_batch_size") or 1),
        )
        self.classifier = Classifier(settings)
        pb_utils.Logger.log_info(f"classifier ready: {self.classifier.describe()}")

    def execute(self, requests: list) -> list:
        """One response per request, in order; undecodable images fail alone."""
        responses: list = [None] * len(requests)
        prepared, positions = [], []
        for position, request in enumerate(requests):
            data = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            try:
                prepared.append(self.classifier.preprocess(bytes(data[0])))
                positions.append(position)
            except Exception as exc:  # not an image, too many pixels...: this request alone
                responses[position] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(exc))
                )
        for position, top1 in zip(positions, self.classifier.classify(prepared), strict=True):
            if isinstance(top1, Exception):  # the GPU image stage could not decode it
                responses[position] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(top1))
                )
                continue
            responses[position] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("LABEL", np.array([[top1.label]], dtype=np.int64)),
                    pb_utils.Tensor("PROB", np.array([[top1.probability]], dtype=np.float32)),
                ]
            )
        return responses

    def finalize(self) -> None:
        """Frees the engine."""
        self.classifier.close()
