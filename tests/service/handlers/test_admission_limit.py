"""The admission limit that follows what the server clears, fed admissions and completions with
their times (no threads, no clock): it admits what clears within the target wait, no more."""

from __future__ import annotations

from collections import deque

import pytest

from service.handlers.admission import Admission, AdmissionLimits, clears
from service.handlers.admission_limit import ClearanceLimit, LimitSettings
from tests.image_samples import IMAGES_DIR
from torchpipe_lite.errors import InvalidInputError, RequestCancelledError, RequestTimeoutError

SETTINGS = LimitSettings(ceiling_images=512, floor_images=4, target_wait_s=2.0)


def measured(rate_per_s: float, settings: LimitSettings = SETTINGS) -> ClearanceLimit:
    """A limit that has seen the server clear ``rate_per_s`` images a second for 5 s while busy
    (one image always in flight), then go idle at t = 5."""
    limit = ClearanceLimit(settings, now_s=0.0)
    limit.took(1, 0.0)
    step_s = 1 / rate_per_s
    t = 0.0
    while t + step_s <= 5.0 + 1e-9:
        t += step_s
        limit.cleared(1, t)
    limit.gave_back(1, 5.0)
    return limit


def test_before_any_measurement_only_the_floor_is_admitted_and_idle_admits_anything():
    limit = ClearanceLimit(SETTINGS, now_s=0.0)
    assert limit.rate_per_s is None and limit.limit(0.0) == SETTINGS.floor_images
    big = limit.decide(images=100, window=None, now_s=0.0)
    assert big.admitted and big.reason == "idle"  # an idle server admits even past the floor
    for _ in range(4):
        decision = limit.decide(1, 16, 0.0)
        assert decision.admitted
        limit.took(decision.held, 0.0)
    refused = limit.decide(1, 16, 0.0)
    assert not refused.admitted and "rate unknown" in refused.reason


def test_the_limit_is_the_measured_rate_times_the_target_wait():
    limit = measured(rate_per_s=40.0)
    assert limit.rate_per_s == pytest.approx(40.0, rel=0.05)
    assert limit.limit(6.0) == pytest.approx(80, abs=4)  # 40/s x 2 s
    admitted = 0
    while (decision := limit.decide(1, 16, 6.0)).admitted:
        limit.took(decision.held, 6.0)
        admitted += 1
    assert admitted == pytest.approx(80, abs=4)
    assert decision.predicted_wait_s > SETTINGS.target_wait_s
    assert "predicted wait" in decision.reason and "clearing 40" in decision.reason


def test_idle_time_neither_raises_nor_lowers_the_rate():
    limit = measured(rate_per_s=40.0)
    before = limit.rate_per_s
    limit.took(1, 1000.0)  # 995 s idle
    limit.gave_back(1, 1000.001)
    assert limit.rate_per_s == before


def test_a_stall_drags_the_limit_down_to_the_floor():
    limit = measured(rate_per_s=40.0)
    limit.took(60, 6.0)
    before = limit.limit(6.0)
    assert before > 60
    assert limit.limit(7.0) < before  # one second busy, nothing cleared
    assert limit.limit(30.0) == SETTINGS.floor_images  # the server probes with the floor
    assert not limit.decide(1, 16, 30.0).admitted


def test_the_ceiling_holds_however_fast_the_server_clears():
    limit = measured(rate_per_s=100_000.0, settings=LimitSettings(ceiling_images=8, floor_images=4))
    assert limit.limit(6.0) == 8
    limit.took(8, 6.0)
    refused = limit.decide(1, 16, 6.0)
    assert not refused.admitted and refused.reason == "8 of 8 images in flight"


def test_static_settings_admit_up_to_the_ceiling_whatever_the_rate():
    static = LimitSettings(ceiling_images=64, floor_images=4, target_wait_s=0.0)
    limit = measured(rate_per_s=1.0, settings=static)
    assert limit.limit(6.0) == 64
    limit.took(63, 6.0)
    assert limit.decide(1, 16, 6.0).admitted


def test_a_large_call_holds_a_window_and_single_calls_are_admitted_beside_two():
    limit = measured(rate_per_s=400.0)  # limit 512: the ceiling
    for _ in range(2):
        big = limit.decide(images=256, window=16, now_s=6.0)
        assert big.admitted and big.held == 16
        # Fed 16 at a time among the others, its last image is answered after all of them.
        assert big.predicted_wait_s == pytest.approx(
            256 / 16 * (limit.in_flight + 16) / 400, rel=1e-3
        )
        limit.took(big.held, 6.0)
    single = limit.decide(1, 16, 6.0)
    assert single.admitted and single.held == 1


def test_a_large_call_that_would_not_clear_in_time_is_refused_not_admitted_to_time_out():
    limit = measured(rate_per_s=40.0)  # limit 80: 256 images take 6.4 s alone
    limit.took(20, 6.0)
    refused = limit.decide(images=256, window=16, now_s=6.0)
    assert not refused.admitted and refused.predicted_wait_s > SETTINGS.target_wait_s
    assert limit.decide(1, 16, 6.0).admitted  # a single image still clears in time


def test_a_large_calls_images_wait_behind_the_others_and_the_call_ends_by_its_deadline():
    settings = LimitSettings(floor_images=4, target_wait_s=2.0, target_call_s=10.0)
    limit = measured(rate_per_s=40.0, settings=settings)
    limit.took(4, 6.0)
    # Each image waits (4 + 16) / 40 = 0.5 s; the 256 take 16 windows of that: 8 s.
    admitted = limit.decide(images=256, window=16, now_s=6.0)
    assert admitted.admitted and admitted.predicted_wait_s == pytest.approx(8.0, rel=1e-3)
    limit.took(16, 6.0)
    refused = limit.decide(images=256, window=16, now_s=6.0)  # 16 x 36 / 40 = 14.4 s
    assert not refused.admitted and "predicted to take 14.4 s, over 10 s" in refused.reason


def test_one_call_holds_at_most_a_share_of_the_limit():
    limit = ClearanceLimit(LimitSettings(ceiling_images=64, floor_images=8), now_s=0.0)
    limit.took(1, 0.0)
    windowed = limit.decide(images=64, window=16, now_s=0.0)
    assert windowed.admitted and windowed.held == 4  # half the floor (the limit before a rate)
    all_at_once = limit.decide(images=6, window=None, now_s=0.0)
    assert not all_at_once.admitted and "one call may hold 4" in all_at_once.reason


def simulate(settings: LimitSettings, *, seconds: float) -> tuple[int, int, float]:
    """A FIFO server clearing one image every 50 ms (20/s) under 500 one-image calls a second:
    (admitted, refused, longest wait of an admitted call)."""
    limit = ClearanceLimit(settings, now_s=0.0)
    waiting: deque[float] = deque()
    admitted = refused = 0
    longest_wait_s = 0.0
    next_done_s = None
    for tick in range(int(seconds * 1000)):
        now_s = tick / 1000
        if tick % 2 == 0:  # one call every 2 ms
            decision = limit.decide(1, 16, now_s)
            if decision.admitted:
                limit.took(decision.held, now_s)
                waiting.append(now_s)
                admitted += 1
            else:
                refused += 1
        if next_done_s is None and waiting:
            next_done_s = now_s + 0.05
        if next_done_s is not None and now_s >= next_done_s:
            arrived_s = waiting.popleft()
            limit.cleared(1, now_s)
            limit.gave_back(1, now_s)
            longest_wait_s = max(longest_wait_s, now_s - arrived_s)
            next_done_s = now_s + 0.05 if waiting else None
    return admitted, refused, longest_wait_s


def test_under_overload_admitted_calls_wait_about_the_target_where_a_static_limit_waits_long():
    target_s = 2.0
    adaptive = LimitSettings(ceiling_images=512, floor_images=16, target_wait_s=target_s)
    admitted, refused, longest_wait_s = simulate(adaptive, seconds=30.0)
    assert longest_wait_s <= 1.1 * target_s
    assert refused > 20 * admitted  # 25x the capacity arrives
    assert admitted >= 0.9 * 20 * 30 - 512  # the server never starves either
    static = LimitSettings(ceiling_images=512, floor_images=16, target_wait_s=0.0)
    assert simulate(static, seconds=30.0)[2] > 10 * target_s  # 512 queued: 25 s


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def photo() -> bytes:
    return (IMAGES_DIR / "chelsea.jpg").read_bytes()


def test_images_dropped_unrun_or_answered_past_the_deadline_count_nothing_cleared():
    assert clears(None) and clears(InvalidInputError("not an image"))
    assert not clears(RequestTimeoutError("late")) and not clears(RequestCancelledError("gone"))
    clock = Clock()
    limits = AdmissionLimits(max_images_in_flight=64, min_images_in_flight=2, request_timeout_s=4)
    admission = Admission(limits, clock=clock)
    ticket = admission.admit([photo()], window=16)
    clock.now_s = 1.0
    ticket.image_ended(RequestCancelledError("gone"))
    ticket.release()
    late = admission.admit([photo()], window=16)
    clock.now_s = 5.0  # past its 4 s deadline
    late.release()
    assert admission.stats().images_cleared_per_s == 0.0  # 5 busy seconds, nothing cleared
    assert admission.stats().images_limit == 2  # the floor


def test_a_windowed_call_gives_its_slots_back_as_its_last_images_end():
    clock = Clock()
    admission = Admission(AdmissionLimits(max_images_in_flight=64), clock=clock)
    ticket = admission.admit([photo()] * 20, window=4)
    assert (ticket.images, ticket.held, admission.stats().images_in_flight) == (20, 4, 4)
    for ended in range(1, 21):
        clock.now_s = ended * 0.1
        ticket.image_ended(None)
        assert admission.stats().images_in_flight == min(4, 20 - ended)
    ticket.release()
    ticket.release()
    figures = admission.stats()
    assert figures.images_in_flight == 0 and figures.images_cleared_per_s == pytest.approx(
        10.0, rel=0.1
    )


def test_two_large_calls_leave_room_for_single_ones():
    # Each large call alone could fill the budget if it held all its images.
    limits = AdmissionLimits(max_images_in_flight=64, min_images_in_flight=64, max_call_share=0.5)
    admission = Admission(limits)
    big = [admission.admit([photo()] * 64, window=16) for _ in range(2)]
    assert [ticket.held for ticket in big] == [16, 16]
    singles = [admission.admit([photo()], window=16) for _ in range(8)]
    assert admission.stats().images_in_flight == 16 + 16 + 8
    for ticket in big + singles:
        ticket.release()
    assert admission.stats().images_in_flight == 0
