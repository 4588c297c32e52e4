"""Backend-expression parser."""

import pytest

from torchpipe_lite.config.expression import (
    BackendSpec,
    ExpressionError,
    parse_backend_expression,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Identity", BackendSpec("Identity")),
        ("SyncTensor[TensorrtTensor]", BackendSpec("SyncTensor", (BackendSpec("TensorrtTensor"),))),
        (
            "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]",
            BackendSpec(
                "Sequential",
                (BackendSpec("ResizeMat"), BackendSpec("CvtColorMat"), BackendSpec("Mat2Tensor")),
            ),
        ),
        ("S[A, B]", BackendSpec("Sequential", (BackendSpec("A"), BackendSpec("B")))),
        (
            " A[ B[C] , D ] ",
            BackendSpec("A", (BackendSpec("B", (BackendSpec("C"),)), BackendSpec("D"))),
        ),
    ],
)
def test_parses_valid_expressions(text, expected):
    assert parse_backend_expression(text) == expected


def test_round_trips_to_text():
    text = "SyncTensor[Sequential[ResizeMat,Mat2Tensor]]"
    assert str(parse_backend_expression(text)) == text


@pytest.mark.parametrize(
    "text", ["", "  ", "A[", "A[]", "A[B", "A]B", "A[B,]", "[A]", "A B", "A[B]C", "A-B", "A[,B]"]
)
def test_rejects_malformed_expressions(text):
    with pytest.raises(ExpressionError):
        parse_backend_expression(text)


def test_walk_visits_every_backend_depth_first():
    spec = parse_backend_expression("A[B[C],D]")
    assert [part.name for part in spec.walk()] == ["A", "B", "C", "D"]
