"""ClassScores: the model stage's logits turned into the top class and its probability, per batch.

The service answers with softmax probabilities and the most probable class. Computing them per
request costs every request a handful of NumPy calls on its 1000 logits on the thread that
completes it; computed here, inside the model node after the model, they cost a few calls per
batch. The service's configs chain it after the engine:
``SyncTensor[Sequential[TorchTensor,ClassScores]]``; a model node without it still works (the
handler then scores each request's logits itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchpipe_lite import Backend, InvalidInputError, register_backend


@dataclass(frozen=True, slots=True)
class Scores:
    """One image's logits and its most probable class with that class's probability."""

    logits: np.ndarray  # float32, one per class
    best_index: int
    best_score: float

    def probabilities(self) -> np.ndarray:
        """The softmax of the logits (computed on demand: most calls need only the top)."""
        shifted = np.exp(self.logits - self.logits.max(), dtype=np.float64)
        return shifted / shifted.sum()

    def __reduce__(self) -> tuple:
        # Scores cross from the GPU core to the fronts pickled, a batch at a time: the logits
        # as raw bytes cost a fraction of NumPy's own array pickling, both ways.
        return (_unpickled_scores, (self.logits.tobytes(), self.best_index, self.best_score))


def _unpickled_scores(logits: bytes, best_index: int, best_score: float) -> Scores:
    return Scores(np.frombuffer(logits, dtype=np.float32), best_index, best_score)


@register_backend("ClassScores")
class ClassScores(Backend):
    """Each request's ``data`` (logits, 1 x classes or classes, CPU tensor or array) becomes
    ``Scores``: the logits, the top class and its softmax probability."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        rows = [item["data"] for item in batch]
        for index, row in enumerate(rows):
            if not isinstance(row, torch.Tensor | np.ndarray) or row.ndim > 2 or not row.shape:
                raise InvalidInputError(f"item {index}: expected a row of logits, got {row!r:.80}")
        if all(_host_tensor(row) for row in rows):
            # The model stage's rows: CPU tensors, read through NumPy views, since each torch
            # call would release the interpreter lock and queue to take it back.
            logits = np.stack([row.numpy().reshape(-1) for row in rows]).astype(
                np.float32, copy=False
            )
        elif all(isinstance(row, torch.Tensor) for row in rows):
            joined = torch.cat(rows) if rows[0].ndim == 2 else torch.stack(rows)
            logits = joined.float().cpu().numpy()
        else:
            logits = np.stack([np.asarray(row, dtype=np.float32).reshape(-1) for row in rows])
        best = logits.argmax(axis=1)
        # softmax(x)[best] = 1 / sum(exp(x - x[best])): the top score without normalising all.
        peaks = logits[np.arange(len(rows)), best]
        totals = np.exp(logits - peaks[:, None]).sum(axis=1)
        scores = (1.0 / totals).tolist()
        best = best.tolist()
        for position, item in enumerate(batch):
            item["result"] = Scores(logits[position], best[position], scores[position])


def _host_tensor(row: torch.Tensor) -> bool:
    """Whether NumPy can view ``row``'s memory: a CPU tensor of a NumPy dtype, without
    autograd history."""
    return (
        isinstance(row, torch.Tensor)
        and row.device.type == "cpu"
        and not row.requires_grad
        and row.dtype != torch.bfloat16
    )
