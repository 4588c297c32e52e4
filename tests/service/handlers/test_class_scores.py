"""ClassScores: the top class and its softmax probability per row, whatever form the rows take."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from service.handlers.class_scores import ClassScores

CLASSES = 10


def _scored(rows: list[object]) -> list[object]:
    batch = [{"data": row} for row in rows]
    backend = ClassScores()
    backend.init({})
    backend.forward(batch)
    return [item["result"] for item in batch]


def _expected(logits: np.ndarray) -> tuple[int, float]:
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return int(probabilities.argmax()), float(probabilities.max())


@pytest.mark.parametrize(
    "form",
    ["views of one tensor", "float16 tensors", "bfloat16 tensors", "arrays", "1-d tensors"],
)
def test_each_row_gets_its_top_class_and_probability(form: str) -> None:
    generator = torch.Generator().manual_seed(7)
    output = torch.randn(3, CLASSES, generator=generator) * 4
    rows = {
        "views of one tensor": [output[i : i + 1] for i in range(3)],
        "float16 tensors": [output[i : i + 1].half() for i in range(3)],
        "bfloat16 tensors": [output[i : i + 1].bfloat16() for i in range(3)],
        "arrays": [output[i].numpy() for i in range(3)],
        "1-d tensors": [output[i] for i in range(3)],
    }[form]
    for row, scores in zip(rows, _scored(rows), strict=True):
        logits = torch.as_tensor(row).float().reshape(-1).numpy()
        best, probability = _expected(logits)
        assert scores.best_index == best
        assert scores.best_score == pytest.approx(probability, rel=1e-5)
        assert scores.probabilities().sum() == pytest.approx(1.0)
        np.testing.assert_allclose(scores.logits, logits)


def test_a_row_that_is_not_logits_is_refused_as_invalid_input() -> None:
    with pytest.raises(tp.InvalidInputError, match="item 1"):
        _scored([torch.zeros(1, CLASSES), "not logits"])


def test_scores_survive_pickling_as_the_core_sends_them():
    logits = torch.tensor([[0.5, 3.0, -1.0], [2.0, 0.0, 1.0]])
    batch = [{"data": row} for row in logits.split(1)]
    ClassScores().forward(batch)
    for item in batch:
        sent = item["result"]
        received = pickle.loads(pickle.dumps(sent, protocol=pickle.HIGHEST_PROTOCOL))
        assert received.best_index == sent.best_index
        assert received.best_score == sent.best_score
        assert np.array_equal(received.logits, sent.logits)
        assert received.logits.dtype == np.float32
        assert np.allclose(received.probabilities(), sent.probabilities())
