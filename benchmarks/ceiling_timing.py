"""How benchmarks.gpu_ceiling times its figures: bounded repeats, two stages on two threads
with a queue between them, and threads that hold the interpreter in bursts."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from queue import Queue
from typing import Any

import torchpipe_lite as tp
from benchmarks.ceiling_decoders import Step


@dataclass(frozen=True)
class Plan:
    """How long each figure runs: ``warmup`` batches, then ``repeats`` repeats of ``steps``
    batches each, a repeat ending early after ``max_repeat_s``."""

    warmup: int
    steps: int
    repeats: int
    max_repeat_s: float


FULL = Plan(warmup=3, steps=20, repeats=3, max_repeat_s=1.0)
QUICK = Plan(warmup=1, steps=3, repeats=2, max_repeat_s=0.3)


def repeat_ms(step: Step, plan: Plan) -> list[float]:
    """ms per call of ``step(k)`` in each repeat, after ``plan.warmup`` calls."""
    for k in range(plan.warmup):
        step(k)
    per_repeat = []
    for _ in range(plan.repeats):
        began = time.perf_counter()
        calls = 0
        while calls < plan.steps:
            step(calls)
            calls += 1
            if time.perf_counter() - began > plan.max_repeat_s:
                break
        per_repeat.append(1000 * (time.perf_counter() - began) / calls)
    return per_repeat


def model_batch(model: tp.Backend, items: list[dict[str, Any]]) -> Step:
    """A step running ``model`` on the same ``items`` every time."""
    return lambda k: model.forward(items)


def stage_batch(stage: tp.Backend, images: list, batch: int, k: int) -> list[dict[str, Any]]:
    """Run ``stage`` on batch ``k`` of ``images``; the items, each with its ``result``."""
    items = [{"data": images[(k * batch + i) % len(images)]} for i in range(batch)]
    stage.forward(items)
    return items


def run_threads(*targets) -> None:
    """Run each target on its own thread until all end; re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(target) -> None:
        try:
            target()
        except BaseException as error:  # handed to the caller below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class Burners:
    """``count`` threads that each run pure Python for ``burst_s`` at a time, then sleep(0)
    (which lets go of the interpreter lock), until the block ends."""

    def __init__(self, count: int, burst_s: float):
        self.count, self.burst_s = count, burst_s
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._burn, daemon=True) for _ in range(count)]

    def _burn(self) -> None:
        while not self.stop.is_set():
            until = time.perf_counter() + self.burst_s
            while time.perf_counter() < until:
                pass
            time.sleep(0)

    def __enter__(self) -> Burners:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def pipelined_ms(
    image_stage: tp.Backend, model: tp.Backend, images: list, batch: int, plan: Plan
) -> list[float]:
    """ms per batch through both stages on two threads with a queue of two batches between
    them, per repeat (after a warm-up run of ``plan.warmup`` batches)."""

    def once(steps: int) -> float:
        handoff: Queue = Queue(maxsize=2)
        deadline = time.perf_counter() + plan.max_repeat_s
        done = [0]

        def produce() -> None:
            try:
                for k in range(steps):
                    items = stage_batch(image_stage, images, batch, k)
                    handoff.put([{"data": item["result"]} for item in items])
                    if time.perf_counter() > deadline:
                        break
            finally:
                handoff.put(None)

        def consume() -> None:
            while (items := handoff.get()) is not None:
                model.forward(items)
                done[0] += 1

        began = time.perf_counter()
        run_threads(produce, consume)
        return 1000 * (time.perf_counter() - began) / max(done[0], 1)

    once(max(plan.warmup, 1))
    return [once(plan.steps) for _ in range(plan.repeats)]


def under_model_ms(
    image_stage: tp.Backend,
    model: tp.Backend,
    model_items: list,
    images: list,
    batch: int,
    plan: Plan,
) -> list[float]:
    """The image stage's ms per batch while another thread runs ``model`` nonstop."""
    stop = threading.Event()
    result: list[list[float]] = []

    def run_model() -> None:
        while not stop.is_set():
            model.forward(model_items)

    def measure() -> None:
        try:
            result.append(repeat_ms(lambda k: stage_batch(image_stage, images, batch, k), plan))
        finally:
            stop.set()

    run_threads(run_model, measure)
    return result[0]
