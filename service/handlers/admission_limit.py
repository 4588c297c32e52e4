"""How much work admission lets in: a limit that follows what the server clears, a pure decision.

A call admitted is a promise to answer it before its deadline. The server clears images at a
rate it measures itself (images finished per second while it had work: busy time only, so an
idle spell neither raises nor lowers the figure), and by Little's law the last of the images in
flight is answered ``in_flight / rate`` seconds from now. A call is admitted while that
predicted wait, its own images included, stays within the target (a fraction of the shortest
deadline a request meets): past it, admitting only turns a fast OVERLOADED into a slow TIMEOUT.

A call holds at most ``window`` images of the budget (the images it has in the pipeline at once:
a multi-image call is fed a window at a time, its next image taking the slot of one that ended)
and at most a share of the limit, so no single call takes the whole budget and one-image calls
keep being admitted beside large ones. Fed a window at a time among ``in_flight`` others, each
image of a call waits ``(in_flight + held) / rate`` (bounded by ``target_wait_s``: the pipeline's
queue deadlines), and the call gets ``held / (in_flight + held)`` of the rate: its last image is
answered ``images / held`` times that from now (bounded by ``target_call_s``: its own deadline).
A call that cannot be fed a window at a time holds all its images, and may hold no more than
the share.

Three rules keep this honest: an idle server always admits (and so does one below
``floor_images``: before the first measurement, or when a stall has dragged the rate down, the
floor keeps the server probing); the static ceiling is never passed; and an image that ended
past its call's deadline, or that was dropped unrun, counts as nothing cleared.

Not thread-safe: ``Admission`` calls it under its lock, and tests feed it times directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LimitSettings:
    """What shapes the limit. ``target_wait_s`` 0: a static limit (the ceiling)."""

    #: Images held at once, whatever was measured (``--max-in-flight``).
    ceiling_images: int = 512
    #: Images always admitted, whatever was measured (``--min-in-flight``).
    floor_images: int = 16
    #: Longest predicted wait of one image behind the others in flight (what the pipeline's
    #: queue deadlines bound).
    target_wait_s: float = 5.0
    #: Longest predicted time until the last image of a call is answered (what the call's own
    #: deadline bounds); 0: ``target_wait_s``.
    target_call_s: float = 0.0
    #: Largest fraction of the current limit one call may hold.
    max_call_share: float = 0.5
    #: Busy seconds over which one throughput sample is taken.
    sample_s: float = 0.5
    #: Weight of the newest sample in the throughput estimate (the rest is its history).
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.ceiling_images < 1:
            raise ValueError("the ceiling must be at least 1 image")
        if not 1 <= self.floor_images <= self.ceiling_images:
            raise ValueError(
                f"the floor ({self.floor_images} images) must be in 1..{self.ceiling_images} "
                "(the ceiling)"
            )
        if self.target_wait_s < 0 or self.target_call_s < 0:
            raise ValueError("target_wait_s and target_call_s must be 0 or more")
        if not 0 < self.max_call_share <= 1:
            raise ValueError("max_call_share must be in (0, 1]")
        if self.sample_s <= 0 or not 0 < self.smoothing <= 1:
            raise ValueError("sample_s must be positive and smoothing in (0, 1]")

    @property
    def adaptive(self) -> bool:
        return self.target_wait_s > 0


@dataclass(frozen=True)
class Decision:
    """Whether a call is admitted, the images it would hold, and why."""

    admitted: bool
    held: int
    #: Seconds until the call's last image would be answered (None: nothing measured yet).
    predicted_wait_s: float | None
    reason: str


class ClearanceLimit:
    """The images in flight, the measured clearing rate, and the decision for the next call."""

    def __init__(self, settings: LimitSettings, now_s: float):
        self.settings = settings
        #: Images the admitted calls hold.
        self.in_flight = 0
        self._rate_per_s: float | None = None
        self._last_s = now_s
        self._sample_busy_s = 0.0
        self._sample_cleared = 0

    # -- what happens -------------------------------------------------------------------------

    def took(self, held: int, now_s: float) -> None:
        """A call was admitted holding ``held`` images."""
        self._advance(now_s)
        self.in_flight += held

    def gave_back(self, held: int, now_s: float) -> None:
        """``held`` images' slots were given back."""
        self._advance(now_s)
        self.in_flight = max(0, self.in_flight - held)

    def cleared(self, images: int, now_s: float) -> None:
        """``images`` were answered in time (counted in the clearing rate)."""
        self._advance(now_s)
        self._sample_cleared += images

    # -- what it says -------------------------------------------------------------------------

    @property
    def rate_per_s(self) -> float | None:
        """Images cleared per busy second (None: not measured yet)."""
        return self._rate_per_s

    def limit(self, now_s: float) -> int:
        """Images the server holds at once now: the rate times the target wait, between the
        floor and the ceiling (the floor until a rate is measured; the ceiling if static)."""
        self._advance(now_s)
        return self._limit()

    def decide(self, images: int, window: int | None, now_s: float) -> Decision:
        """Whether a call of ``images``, fed at most ``window`` at a time (None: all at once),
        is admitted now. Changes nothing but the measurement's clock: ``took`` records an
        admission."""
        self._advance(now_s)
        settings = self.settings
        limit = self._limit()
        share = max(1, int(settings.max_call_share * limit))
        # A call run all at once (no window) holds all its images, and may not hold more than
        # a share; one fed a window at a time holds no more than that share.
        held = max(1, images if window is None else min(images, window, share))
        after = self.in_flight + held
        wait_s = self._predicted_wait_s(after)
        call_s = None if wait_s is None else images / held * wait_s
        if after > settings.ceiling_images:
            reason = f"{self.in_flight} of {settings.ceiling_images} images in flight"
            return Decision(False, held, call_s, reason)
        if self.in_flight == 0:
            return Decision(True, held, call_s, "idle")
        if held > share:
            reason = f"a call of {images} images at once; one call may hold {share} now"
            return Decision(False, held, call_s, reason)
        if after <= settings.floor_images or not settings.adaptive:
            return Decision(True, held, call_s, "within the floor or the static limit")
        if wait_s is None or call_s is None:
            return Decision(False, held, None, f"{self.in_flight} images in flight, rate unknown")
        in_flight = f"{self.in_flight} images in flight, clearing {self._rate_per_s:.1f}/s"
        if wait_s > settings.target_wait_s:
            reason = f"{in_flight}: predicted wait {wait_s:.1f} s over {settings.target_wait_s:g} s"
            return Decision(False, held, call_s, reason)
        target_call_s = settings.target_call_s or settings.target_wait_s
        if call_s > target_call_s:
            reason = (
                f"{in_flight}: the call's {images} images predicted to take {call_s:.1f} s, "
                f"over {target_call_s:g} s"
            )
            return Decision(False, held, call_s, reason)
        return Decision(True, held, call_s, "predicted wait within the target")

    # -- inside ---------------------------------------------------------------------------------

    def _predicted_wait_s(self, in_flight: int) -> float | None:
        """Seconds until the last of ``in_flight`` images is answered, at the measured rate."""
        rate = self._rate_per_s
        if rate is None:
            return None
        if rate <= 0:
            return float("inf")
        return in_flight / rate

    def _limit(self) -> int:
        settings = self.settings
        if not settings.adaptive:
            return settings.ceiling_images
        if self._rate_per_s is None:
            return settings.floor_images
        clears = int(self._rate_per_s * settings.target_wait_s)
        return max(settings.floor_images, min(settings.ceiling_images, clears))

    def _advance(self, now_s: float) -> None:
        """Count busy time up to ``now_s``; take a sample once enough has passed."""
        elapsed_s = now_s - self._last_s
        if elapsed_s <= 0:
            return  # a time read before another thread's: nothing to add
        self._last_s = now_s
        if self.in_flight == 0:
            return  # idle: no busy time to count
        self._sample_busy_s += elapsed_s
        if self._sample_busy_s < self.settings.sample_s:
            return
        sample = self._sample_cleared / self._sample_busy_s
        if self._rate_per_s is None:
            self._rate_per_s = sample
        else:
            # A long stretch between two events weighs as the samples it spans: a stall of
            # several sample periods drags the rate down as far as several empty samples would.
            samples = int(self._sample_busy_s / self.settings.sample_s)
            weight = 1 - (1 - self.settings.smoothing) ** samples
            self._rate_per_s += weight * (sample - self._rate_per_s)
        self._sample_busy_s = 0.0
        self._sample_cleared = 0
