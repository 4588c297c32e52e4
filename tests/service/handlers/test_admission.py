"""Admission: calls admitted whole or refused whole, by images and declared pixels."""

from __future__ import annotations

import pytest

from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.handlers.admission import Admission, AdmissionLimits, call_images
from tests.image_samples import IMAGES_DIR, jpeg_declaring, png_header_claiming


@pytest.fixture
def photo() -> bytes:
    return (IMAGES_DIR / "chelsea.jpg").read_bytes()


def test_a_call_is_admitted_whole_or_refused_whole_and_the_budget_comes_back(photo):
    admission = Admission(AdmissionLimits(max_images_in_flight=4))
    first = admission.admit([photo] * 3)
    with pytest.raises(InferenceError) as caught:
        admission.admit([photo] * 2)  # 5 > 4: none of the two is admitted
    assert caught.value.code == ErrorCode.OVERLOADED and "3 of 4 images" in caught.value.message
    assert admission.stats().images_in_flight == 3
    second = admission.admit([photo])  # one still fits
    first.release()
    first.release()  # a second release gives nothing back twice
    second.release()
    figures = admission.stats()
    assert (figures.images_in_flight, figures.megapixels_in_flight, figures.calls_refused) == (
        0,
        0.0,
        1,
    )


def test_declared_pixels_are_budgeted_per_call_and_in_flight(photo):
    limits = AdmissionLimits(max_megapixels_in_flight=100.0, max_megapixels_per_call=60.0)
    admission = Admission(limits)
    big = jpeg_declaring(photo, 7000, 7000)  # 49 MP
    with pytest.raises(InferenceError) as caught:
        admission.admit([big, big])  # 98 MP in one call
    assert caught.value.code == ErrorCode.TOO_LARGE
    held = [admission.admit([big]), admission.admit([big])]
    with pytest.raises(InferenceError) as caught:
        admission.admit([big])  # 147 MP in flight
    assert caught.value.code == ErrorCode.OVERLOADED and "megapixels" in caught.value.message
    for ticket in held:
        ticket.release()


def test_what_the_decoder_refuses_unread_weighs_nothing(photo):
    admission = Admission(AdmissionLimits(max_megapixels_per_call=1.0))
    bomb = png_header_claiming(100_000, 100_000)  # over max_pixels: refused by the decoder
    ticket = admission.admit([bomb, b"not an image", None])
    assert (ticket.images, ticket.pixels) == (3, 0)


def test_saturated_right_after_a_refusal_only(photo):
    admission = Admission(AdmissionLimits(max_images_in_flight=1))
    assert admission.saturated() is None
    ticket = admission.admit([photo])
    with pytest.raises(InferenceError):
        admission.admit([photo])
    assert "refusing calls" in admission.saturated()
    ticket.release()


def test_limits_that_could_never_admit_a_call_are_refused():
    with pytest.raises(ValueError, match="could never run"):
        AdmissionLimits(max_megapixels_in_flight=10.0, max_megapixels_per_call=20.0)


def test_the_images_of_each_call():
    params = InferenceParams(uuid="a", data=b"x")
    assert call_images("infer_batch", (params,), 8) == [b"x"]
    assert call_images("infer_topk", (params, 5), 8) == [b"x"]
    assert call_images("infer_many", ([params, params], 1), 8) == [b"x", b"x"]
    assert call_images("infer_many", ([params] * 9, 1), 8) is None  # TOO_LARGE from the handler
    assert call_images("ping", (), 8) is None and call_images("stats", (), 8) is None
