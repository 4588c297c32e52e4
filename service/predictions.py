"""Turns a model's logits into ranked, labelled predictions (softmax, top-k)."""

from __future__ import annotations

import torch

from service.gen.inference.ttypes import Prediction
from service.labels import label_of


def top_k(logits: torch.Tensor, k: int) -> list[Prediction]:
    """The ``k`` most probable classes (fewer if the model has fewer), most probable first.

    ``logits`` is one image's output, shaped ``(classes,)`` or ``(1, classes)``.
    """
    flat = logits.detach().reshape(-1).to(device="cpu", dtype=torch.float32)
    if flat.numel() == 0:
        raise ValueError("the model returned no logits")
    probabilities = torch.softmax(flat, dim=0)
    scores, indices = torch.topk(probabilities, min(k, flat.numel()))
    return [
        Prediction(index=index, label=label_of(index), score=score)
        for index, score in zip(indices.tolist(), scores.tolist(), strict=True)
    ]
