"""Admission: the work one server process holds is bounded, and a call is admitted whole or not.

Every call that carries images is weighed when it arrives, on the RPC loop thread, before any
of it runs: its images and the pixels their headers declare (a header read costs a few
microseconds; nothing is decoded). It is admitted only if the work already in flight plus its
own stays within the process's budget; otherwise it is answered OVERLOADED at once (retryable,
never run), so a flood gets a fast, explicit no rather than a queue that grows until callers
time out. A call declaring more pixels than one call may is TOO_LARGE whatever the load. The
budget is given back when the call's reply has been handed to its connection.

How much is admitted follows what the server clears (``admission_limit``): a call is refused
when the last of its images would be answered later than a fraction of the shortest deadline a
request meets, so an overload gets OVERLOADED at the door rather than TIMEOUT after the
deadline; ``max_images_in_flight`` stays the hard ceiling. A multi-image call holds at most a
window of the budget (the images it has in the pipeline at once), so no one call fills it.

This is Triton's queue policy at the door (``max_queue_size`` with REJECT): the pipeline's own
``max_queue_size`` per node stays as a second line, sized so that admitted work never meets it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.gen.inference.ttypes import AdmissionStats, ErrorCode, InferenceError
from service.handlers.admission_limit import ClearanceLimit, LimitSettings
from torchpipe_lite.errors import OverloadedError, RequestCancelledError, RequestTimeoutError
from torchpipe_lite.extend import DEFAULT_MAX_PIXELS, HEADER_KEY, ImageHeader, read_header

_MEGA = 1_000_000
#: Admission counts as saturated for this long after it last refused a call.
SATURATED_AFTER_REFUSAL_S = 1.0


@dataclass(frozen=True)
class RequestLimits:
    """What one call may ask of a handler; over these, the call gets TOO_LARGE."""

    max_image_bytes: int = 16 << 20
    max_images_per_call: int = 256
    #: Images of one call in the pipeline at once; the rest wait their turn, so that the calls
    #: of other clients interleave with a long one.
    call_window: int = 16


@dataclass(frozen=True)
class AdmissionLimits:
    """What one server process admits at once, and what one call may bring."""

    #: Images of the admitted calls not yet answered, whatever the server clears: the ceiling.
    max_images_in_flight: int = 512
    #: Images always admitted, whatever the server clears (at most the ceiling).
    min_images_in_flight: int = 16
    #: A call is admitted while the last of its images is predicted to be answered within this
    #: fraction of the shortest deadline (``request_timeout_s``, ``queue_timeout_s``); 0, or no
    #: deadline: the ceiling alone decides.
    wait_fraction: float = 0.5
    #: Largest fraction of the current limit one call may hold.
    max_call_share: float = 0.5
    #: Declared megapixels of those images (bounds the memory their decoding takes).
    max_megapixels_in_flight: float = 1000.0
    #: Declared megapixels one call may bring; more is TOO_LARGE.
    max_megapixels_per_call: float = 400.0
    #: Seconds from a call's arrival after which its images still waiting to run are dropped
    #: (TIMEOUT); 0: no deadline.
    request_timeout_s: float = 30.0
    #: The shortest time a request may wait in one of the pipeline's queues (its nodes'
    #: ``request_timeout``) before it is dropped (TIMEOUT); 0: none.
    queue_timeout_s: float = 0.0
    #: The decoders' ``max_pixels``: an image declaring more is refused by them before any
    #: decoding, so it weighs nothing here (and gets the decoder's INVALID_IMAGE).
    max_pixels_per_image: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_images_in_flight < 1:
            raise ValueError("max_images_in_flight must be at least 1")
        if self.min_images_in_flight < 1:
            raise ValueError("min_images_in_flight must be at least 1")
        if not 0 <= self.wait_fraction <= 1:
            raise ValueError("wait_fraction must be in 0..1")
        if self.max_megapixels_per_call > self.max_megapixels_in_flight:
            raise ValueError(
                f"a call may bring {self.max_megapixels_per_call:g} megapixels, more than the "
                f"{self.max_megapixels_in_flight:g} in flight: such a call could never run"
            )
        self.limit_settings()  # its own checks

    def target_wait_s(self) -> float:
        """The longest predicted wait of an image a call is admitted with (a fraction of the
        shortest deadline it meets); 0: no target (the ceiling alone decides)."""
        deadlines_s = [s for s in (self.request_timeout_s, self.queue_timeout_s) if s > 0]
        return self.wait_fraction * min(deadlines_s) if deadlines_s else 0.0

    def limit_settings(self) -> LimitSettings:
        return LimitSettings(
            ceiling_images=self.max_images_in_flight,
            floor_images=min(self.min_images_in_flight, self.max_images_in_flight),
            target_wait_s=self.target_wait_s(),
            # The call's last image: its own deadline bounds it (its images wait in the
            # pipeline's queues a window at a time, not all of it).
            target_call_s=self.wait_fraction * max(0.0, self.request_timeout_s),
            max_call_share=self.max_call_share,
        )


def clears(error: BaseException | None) -> bool:
    """Whether an image that ended with ``error`` was work the server cleared: not one it
    dropped unrun (deadline passed, client gone, queue full)."""
    return not isinstance(error, RequestTimeoutError | RequestCancelledError | OverloadedError)


class Ticket:
    """An admitted call's share of the budget. The handler reports each image that ends
    (``image_ended``); ``release()`` gives back what the call still holds (once)."""

    __slots__ = ("_admission", "_headers", "deadline_s", "ended", "held", "images", "pixels")

    def __init__(
        self,
        admission: Admission,
        images: int,
        held: int,
        pixels: int,
        deadline_s: float,
        headers: dict[int, ImageHeader | None] | None = None,
    ):
        self._admission: Admission | None = admission
        #: The headers read when the call was weighed, by ``id`` of the bytes they were read
        #: from (those bytes live as long as the call).
        self._headers = headers or {}
        self.images = images
        #: Images of the budget the call holds: at most the images it has in the pipeline at
        #: once (its window); fewer once fewer than that are left.
        self.held = held
        #: Images reported ended so far.
        self.ended = 0
        self.pixels = pixels
        #: ``time.monotonic()`` instant after which the call's waiting work is dropped.
        self.deadline_s = deadline_s

    def image_ended(self, error: BaseException | None = None) -> None:
        """One image of the call ended (``error``: how, None: answered)."""
        admission = self._admission
        if admission is not None:
            admission._image_ended(self, clears(error))

    def request(self, data: bytes) -> dict:
        """A pipeline request for ``data``, with the header read when it was weighed (so that
        the decoder reads none of its own: ``HEADER_KEY``)."""
        request: dict = {"data": data}
        if id(data) in self._headers:
            request[HEADER_KEY] = (data, self._headers[id(data)])
        return request

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self)

    def timeout_s(self) -> float | None:
        """Seconds left until the deadline (at least a millisecond), or None without one."""
        if self.deadline_s == float("inf"):
            return None
        return max(0.001, self.deadline_s - time.monotonic())


def call_images(method: str, args: tuple, max_images_per_call: int) -> list[object] | None:
    """The images a call of ``InferenceService`` carries, as admission weighs them (None: a
    call without images, or one its handler refuses on its own: not a list, too long)."""
    if method in ("infer_batch", "infer_topk"):
        return [getattr(args[0], "data", None)] if args else None
    if method == "infer_many":
        params_list = args[0] if args else None
        if not isinstance(params_list, list) or len(params_list) > max_images_per_call:
            return None
        return [getattr(params, "data", None) for params in params_list]
    return None


class Admission:
    """The budget of one server process. Thread-safe; ``admit`` runs on the RPC loop thread."""

    def __init__(
        self, limits: AdmissionLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ):
        self.limits = limits or AdmissionLimits()
        #: ``time.monotonic`` (tests pass a clock of their own).
        self._clock = clock
        self._max_pixels = int(self.limits.max_megapixels_in_flight * _MEGA)
        self._max_call_pixels = int(self.limits.max_megapixels_per_call * _MEGA)
        self._lock = threading.Lock()
        self._clearance = ClearanceLimit(self.limits.limit_settings(), clock())
        self._pixels = 0
        self._refused = 0
        self._last_refusal_s = -float("inf")

    def admit(self, datas: list[object], window: int | None = None) -> Ticket:
        """A ticket for a call carrying ``datas`` (its images' bytes; anything else weighs
        nothing, the handler refuses it), run ``window`` images at a time (None: all at once);
        ``InferenceError`` TOO_LARGE or OVERLOADED when the call cannot be admitted."""
        images = len(datas)
        pixels = 0
        per_image = self.limits.max_pixels_per_image
        headers: dict[int, ImageHeader | None] = {}
        for data in datas:
            if isinstance(data, bytes | bytearray):
                header = headers[id(data)] = read_header(data)
                if header is not None and header.pixels <= per_image:
                    pixels += header.pixels
        if pixels > self._max_call_pixels:
            raise InferenceError(
                code=ErrorCode.TOO_LARGE,
                message=f"the call's images declare {pixels / _MEGA:,.1f} megapixels; one call "
                f"may bring {self.limits.max_megapixels_per_call:g}",
            )
        limits = self.limits
        with self._lock:
            now_s = self._clock()
            decision = self._clearance.decide(images, window, now_s)
            over_pixels = self._pixels + pixels > self._max_pixels
            if not decision.admitted or over_pixels:
                self._refused += 1
                self._last_refusal_s = now_s
                held = (
                    f"{self._pixels / _MEGA:,.0f} of {limits.max_megapixels_in_flight:g} "
                    "megapixels in flight"
                    if decision.admitted
                    else decision.reason
                )
                raise InferenceError(
                    code=ErrorCode.OVERLOADED, message=f"server busy ({held}); retry later"
                )
            self._clearance.took(decision.held, now_s)
            self._pixels += pixels
        timeout_s = limits.request_timeout_s
        deadline_s = now_s + timeout_s if timeout_s > 0 else float("inf")
        return Ticket(self, images, decision.held, pixels, deadline_s, headers)

    def _image_ended(self, ticket: Ticket, cleared: bool) -> None:
        with self._lock:
            if ticket.ended >= ticket.images:
                return  # reported more often than the call has images: a handler bug, ignored
            ticket.ended += 1
            now_s = self._clock()
            if cleared and now_s <= ticket.deadline_s:
                self._clearance.cleared(1, now_s)
            left = ticket.images - ticket.ended
            if left < ticket.held:  # the call's last images: its spare slots go back
                self._clearance.gave_back(ticket.held - left, now_s)
                ticket.held = left

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            now_s = self._clock()
            unreported = ticket.images - ticket.ended
            ticket.ended = ticket.images
            if unreported and now_s <= ticket.deadline_s:  # a handler that reports only here
                self._clearance.cleared(unreported, now_s)
            self._clearance.gave_back(ticket.held, now_s)
            ticket.held = 0
            self._pixels -= ticket.pixels

    def saturated(self) -> str | None:
        """Why this process should get no new clients now (a balancer should send them
        elsewhere), or None: it refused a call within the last second."""
        with self._lock:
            if self._clock() - self._last_refusal_s < SATURATED_AFTER_REFUSAL_S:
                return (
                    f"saturated: refusing calls ({self._clearance.in_flight} of "
                    f"{self._clearance.limit(self._clock())} images in flight)"
                )
        return None

    def stats(self) -> AdmissionStats:
        """The budget and what holds it now, as ``stats()`` sends it."""
        with self._lock:
            return AdmissionStats(
                images_in_flight=self._clearance.in_flight,
                max_images_in_flight=self.limits.max_images_in_flight,
                megapixels_in_flight=self._pixels / _MEGA,
                max_megapixels_in_flight=self.limits.max_megapixels_in_flight,
                calls_refused=self._refused,
                images_limit=self._clearance.limit(self._clock()),
                images_cleared_per_s=self._clearance.rate_per_s,
            )
