"""Admission: the work one server process holds is bounded, and a call is admitted whole or not.

Every call that carries images is weighed when it arrives, on the RPC loop thread, before any
of it runs: its images and the pixels their headers declare (a header read costs a few
microseconds; nothing is decoded). It is admitted only if the work already in flight plus its
own stays within the process's budget; otherwise it is answered OVERLOADED at once (retryable,
never run), so a flood gets a fast, explicit no rather than a queue that grows until callers
time out. A call declaring more pixels than one call may is TOO_LARGE whatever the load. The
budget is given back when the call's reply has been handed to its connection.

This is Triton's queue policy at the door (``max_queue_size`` with REJECT): the pipeline's own
``max_queue_size`` per node stays as a second line, sized so that admitted work never meets it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from service.gen.inference.ttypes import AdmissionStats, ErrorCode, InferenceError
from torchpipe_lite.backends.image.image_header import DEFAULT_MAX_PIXELS, read_header

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

    #: Images of the admitted calls not yet answered.
    max_images_in_flight: int = 512
    #: Declared megapixels of those images (bounds the memory their decoding takes).
    max_megapixels_in_flight: float = 1000.0
    #: Declared megapixels one call may bring; more is TOO_LARGE.
    max_megapixels_per_call: float = 400.0
    #: Seconds from a call's arrival after which its images still waiting to run are dropped
    #: (TIMEOUT); 0: no deadline.
    request_timeout_s: float = 30.0
    #: The decoders' ``max_pixels``: an image declaring more is refused by them before any
    #: decoding, so it weighs nothing here (and gets the decoder's INVALID_IMAGE).
    max_pixels_per_image: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_images_in_flight < 1:
            raise ValueError("max_images_in_flight must be at least 1")
        if self.max_megapixels_per_call > self.max_megapixels_in_flight:
            raise ValueError(
                f"a call may bring {self.max_megapixels_per_call:g} megapixels, more than the "
                f"{self.max_megapixels_in_flight:g} in flight: such a call could never run"
            )


class Ticket:
    """An admitted call's share of the budget; ``release()`` gives it back (once)."""

    __slots__ = ("_admission", "deadline_s", "images", "pixels")

    def __init__(self, admission: Admission, images: int, pixels: int, deadline_s: float):
        self._admission = admission
        self.images = images
        self.pixels = pixels
        #: ``time.monotonic()`` instant after which the call's waiting work is dropped.
        self.deadline_s = deadline_s

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self.images, self.pixels)

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

    def __init__(self, limits: AdmissionLimits | None = None):
        self.limits = limits or AdmissionLimits()
        self._max_pixels = int(self.limits.max_megapixels_in_flight * _MEGA)
        self._max_call_pixels = int(self.limits.max_megapixels_per_call * _MEGA)
        self._lock = threading.Lock()
        self._images = 0
        self._pixels = 0
        self._refused = 0
        self._last_refusal_s = -float("inf")

    def admit(self, datas: list[object]) -> Ticket:
        """A ticket for a call carrying ``datas`` (its images' bytes; anything else weighs
        nothing, the handler refuses it); ``InferenceError`` TOO_LARGE or OVERLOADED when the
        call cannot be admitted."""
        images = len(datas)
        pixels = 0
        per_image = self.limits.max_pixels_per_image
        for data in datas:
            if isinstance(data, bytes | bytearray):
                header = read_header(data)
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
            over_images = self._images + images > limits.max_images_in_flight
            if over_images or self._pixels + pixels > self._max_pixels:
                self._refused += 1
                self._last_refusal_s = time.monotonic()
                held = (
                    f"{self._images} of {limits.max_images_in_flight} images"
                    if over_images
                    else f"{self._pixels / _MEGA:,.0f} of {limits.max_megapixels_in_flight:g} "
                    "megapixels"
                )
                raise InferenceError(
                    code=ErrorCode.OVERLOADED,
                    message=f"server busy ({held} in flight); retry later",
                )
            self._images += images
            self._pixels += pixels
        timeout_s = limits.request_timeout_s
        deadline_s = time.monotonic() + timeout_s if timeout_s > 0 else float("inf")
        return Ticket(self, images, pixels, deadline_s)

    def _release(self, images: int, pixels: int) -> None:
        with self._lock:
            self._images -= images
            self._pixels -= pixels

    def saturated(self) -> str | None:
        """Why this process should get no new clients now (a balancer should send them
        elsewhere), or None: it refused a call within the last second."""
        with self._lock:
            if time.monotonic() - self._last_refusal_s < SATURATED_AFTER_REFUSAL_S:
                return (
                    f"saturated: refusing calls ({self._images} of "
                    f"{self.limits.max_images_in_flight} images in flight)"
                )
        return None

    def stats(self) -> AdmissionStats:
        """The budget and what holds it now, as ``stats()`` sends it."""
        with self._lock:
            return AdmissionStats(
                images_in_flight=self._images,
                max_images_in_flight=self.limits.max_images_in_flight,
                megapixels_in_flight=self._pixels / _MEGA,
                max_megapixels_in_flight=self.limits.max_megapixels_in_flight,
                calls_refused=self._refused,
            )
