"""The one-call client against a live (fake) server: prints label and score, or the error."""

from __future__ import annotations

import pytest

from clients.client import classify, main
from clients.images import DEFAULT_IMG_DIR
from tests.support.fake_inference_server import start_fake_server

CAT = DEFAULT_IMG_DIR / "chelsea.jpg"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with start_fake_server(tmp_path_factory.mktemp("fake")) as server:
        yield server


def test_classify_returns_label_and_score(fake_server):
    ((label, score),) = classify(CAT.read_bytes(), host="127.0.0.1", port=fake_server.port)
    assert label.endswith(" fake") and score == 0.5
    topk = classify(CAT.read_bytes(), host="127.0.0.1", port=fake_server.port, topk=3)
    assert topk == [(label, score)]  # the fake server answers top-k with its one class


def test_cli_prints_the_answer(fake_server, capsys):
    assert main([str(CAT), "--port", str(fake_server.port)]) == 0
    label, score = capsys.readouterr().out.strip().split("\t")
    assert label.endswith(" fake") and score == "0.5000"


def test_cli_reports_a_refused_image(fake_server, capsys):
    not_an_image = DEFAULT_IMG_DIR / "LICENSES.md"
    assert main([str(not_an_image), "--port", str(fake_server.port)]) == 1
    assert "INVALID_IMAGE" in capsys.readouterr().err
