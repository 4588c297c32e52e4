"""Turns a model's logits into ranked, labelled predictions (softmax, top-k).

The service's model node computes each image's probabilities and top class once per batch
(``ClassScores``), so the common answer, the top class, is read off here with no arithmetic;
for logits from a model node without it, the softmax is computed here in NumPy.
"""

from __future__ import annotations

import numpy as np
import torch

from service.gen.inference.ttypes import Prediction
from service.handlers.class_scores import Scores
from service.handlers.labels import label_of


def top_k(outcome: Scores | torch.Tensor, k: int) -> list[Prediction]:
    """The ``k`` most probable classes (fewer if the model has fewer), most probable first.

    ``outcome`` is one image's ``Scores`` (the service's model node computes them per batch)
    or its logits, shaped ``(classes,)`` or ``(1, classes)``.
    """
    if isinstance(outcome, Scores):
        if k == 1:
            best = outcome.best_index
            return [Prediction(index=best, label=label_of(best), score=outcome.best_score)]
        probabilities = outcome.probabilities()
    else:
        probabilities = _softmax(outcome)
    if k == 1:
        best = int(probabilities.argmax())
        return [Prediction(index=best, label=label_of(best), score=float(probabilities[best]))]
    classes = probabilities.size
    count = min(k, classes)
    if count < classes:
        candidates = np.argpartition(probabilities, classes - count)[classes - count :]
    else:
        candidates = np.arange(classes)
    ranked = candidates[np.argsort(-probabilities[candidates], kind="stable")]
    return [
        Prediction(index=index, label=label_of(index), score=float(probabilities[index]))
        for index in ranked.tolist()
    ]


def _softmax(logits: torch.Tensor) -> np.ndarray:
    row = logits.detach()
    if row.device.type != "cpu" or row.dtype != torch.float32:
        row = row.to(device="cpu", dtype=torch.float32)
    values = row.reshape(-1).numpy()
    if values.size == 0:
        raise ValueError("the model returned no logits")
    shifted = np.exp(values - values.max(), dtype=np.float64)
    return shifted / shifted.sum()
