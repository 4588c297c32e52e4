"""Process[X]: runs X in a child process of its own, so X's Python work holds another interpreter.

A stage whose backend holds the interpreter lock for part of each request (decoding with
OpenCV, checks in NumPy, per-item Python) caps the whole process, however many instances it
has: threads take turns at one lock. ``Process[X]`` gives each instance of the node a child
process (a fresh interpreter, never a fork: safe in a process with threads and CUDA) that
builds X from the same parameters and runs every batch; the instance's thread sends the batch
over a socket and waits, without the lock, for the reply. With ``instance_num = N`` the node's
work uses up to N cores, while one process keeps the RPC layer, the batching and the GPU.

What crosses the socket: each item's dict goes to the child (pickled; values must pickle), and
what X changed comes back: the keys it set or replaced, and the keys it removed, except
``data``, which stays what the request sent (a ``Sequential`` inside rewrites it step by step;
the next node receives ``result`` anyway). Failures come back typed: an ``InvalidInputError``
raised in the child is raised here as one; anything else as a ``BackendError`` naming its type.

A child that dies (a crash in native code, killed) fails the batch it was running with a
``BackendError`` saying so, and the next batch starts a fresh child: the server goes on.

Parameters: ``process_threads`` (default 1) is how many threads torch and OpenCV may use in
each child; the parallelism is meant to come from the instances. A child imports only what its
backends import: stages without torch (``Sequential[DecodeMat,ResizeMat,CvtColorMat]``) keep
it out of the child, which then stays a few tens of MiB.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ConfigError, InvalidInputError
from .base import Backend, param_int
from .registry import register_backend

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Seconds a child may take to import and initialise its backend (a model may load first).
START_TIMEOUT_S = 300.0
#: Seconds ``close`` waits for a child to finish before it is terminated.
STOP_TIMEOUT_S = 10.0
#: What the child process runs, with its end of the socket as the argument.
_CHILD_COMMAND = (
    "import sys; from torchpipe_lite.backends.process import child_main; "
    "child_main(int(sys.argv[1]))"
)
#: The key that never comes back from the child (see the module docstring).
_KEPT_KEY = "data"


# -- messages between the instance thread and its child (typed, never tuples) ------------------


@dataclass(frozen=True)
class BackendTree:
    """Where a backend class and its children live, so that a child process can import and
    build the same tree (classes registered in any importable module work)."""

    module: str
    qualname: str
    children: tuple[BackendTree, ...] = ()

    @classmethod
    def of(cls, backend: Backend) -> BackendTree:
        kind = type(backend)
        if kind.__module__ == "__main__" or "<locals>" in kind.__qualname__:
            raise ConfigError(
                f"Process[...] cannot run {kind.__qualname__} in a child process: it is defined "
                f"in {'__main__' if kind.__module__ == '__main__' else 'a function'}; define it "
                "at the top level of an importable module"
            )
        return cls(kind.__module__, kind.__qualname__, tuple(cls.of(c) for c in backend.children))

    def build(self) -> Backend:
        """The backend tree, created (not initialised), in this process."""
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        backend = target()
        backend.children = [child.build() for child in self.children]
        return backend


@dataclass(frozen=True)
class _Start:
    tree: BackendTree
    params: dict[str, Any]
    threads: int


@dataclass(frozen=True)
class _Ready:
    min_batch: int
    max_batch: int
    placement: str | None


@dataclass(frozen=True)
class _Batch:
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class _ItemChanges:
    updated: dict[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Done:
    changes: list[_ItemChanges]


@dataclass(frozen=True)
class _Failed:
    invalid_input: bool  # an InvalidInputError: the request's own fault
    text: str


@dataclass(frozen=True)
class _Stop:
    pass


@dataclass(frozen=True)
class _Tensor:
    """A CPU tensor on its way through the socket: its memory as a NumPy array, dimensions in
    memory order (outermost first), so the other side rebuilds the same layout (channels-last
    stays channels-last) without torch's own pickling, which is many times slower."""

    array: Any
    memory_order: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> _Tensor:
        order = tuple(sorted(range(tensor.dim()), key=lambda dim: -tensor.stride(dim)))
        return cls(tensor.permute(order).contiguous().numpy(), order)

    def tensor(self) -> torch.Tensor:
        import torch

        inverse = [0] * len(self.memory_order)
        for position, dim in enumerate(self.memory_order):
            inverse[dim] = position
        return torch.from_numpy(self.array).permute(inverse)


def _outbound(value: Any) -> Any:
    """``value`` as it crosses the socket (a CPU tensor as a ``_Tensor``)."""
    torch = sys.modules.get("torch")  # no tensor exists before torch is imported
    if torch is None or not isinstance(value, torch.Tensor):
        return value
    if value.device.type == "cpu" and not value.requires_grad:
        return _Tensor.of(value)
    return value


def _inbound(value: Any) -> Any:
    return value.tensor() if isinstance(value, _Tensor) else value


def _send(connection: Any, message: Any) -> None:
    # Plain pickle, not multiprocessing's: torch registers reductions there that move every
    # tensor through shared memory, slower still for the small images of a pipeline.
    connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(connection: Any) -> Any:
    return pickle.loads(connection.recv_bytes())


def _failure(error: BaseException) -> _Failed:
    if isinstance(error, InvalidInputError):
        return _Failed(invalid_input=True, text=str(error))
    return _Failed(invalid_input=False, text=f"{type(error).__name__}: {error}")


def _changes(sent: dict[str, Any], item: dict[str, Any]) -> _ItemChanges:
    """What the backend did to ``item``, which arrived as ``sent`` (compared by identity)."""
    updated = {
        key: _outbound(value)
        for key, value in item.items()
        if key != _KEPT_KEY and (key not in sent or sent[key] is not value)
    }
    removed = tuple(key for key in sent if key not in item and key != _KEPT_KEY)
    return _ItemChanges(updated, removed)


def _limit_threads(threads: int) -> None:
    """OpenCV's and torch's thread pools in the child, once its backend is initialised; only
    those the backend imported (a child without torch stays a few tens of MiB)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def child_main(fd: int) -> None:
    """The child process, on its end of the socket ``fd``: build and initialise the tree it is
    sent, then run batches until told to stop (or the socket closes: the parent is gone)."""
    connection = Connection(fd)
    try:
        start = _receive(connection)
        backend = start.tree.build()
        backend.init(start.params)
        _limit_threads(start.threads)
        _send(connection, _Ready(backend.min(), backend.max(), backend.placement()))
    except BaseException as error:  # everything goes back to the parent, typed
        _send(connection, _failure(error))
        return
    try:
        while True:
            try:
                message = _receive(connection)
            except EOFError:
                return
            if isinstance(message, _Stop):
                return
            batch = [
                {key: _inbound(value) for key, value in item.items()} for item in message.items
            ]
            sent = [dict(item) for item in batch]
            try:
                backend.forward(batch)
            except Exception as error:
                _send(connection, _failure(error))
                continue
            changes = [_changes(before, item) for before, item in zip(sent, batch, strict=True)]
            _send(connection, _Done(changes))
    finally:
        backend.close()


@register_backend("Process")
class Process(Backend):
    """Runs its one child backend in a child process per instance; see the module docstring."""

    PARAMS = frozenset({"process_threads"})
    MAX_CHILDREN = 1

    def init(self, params: dict[str, Any]) -> None:
        if len(self.children) != 1:
            raise ConfigError("Process needs exactly one child backend: Process[X]")
        self._tree = BackendTree.of(self.children[0])
        self._params = dict(params)
        self._threads = param_int(params, "process_threads", 1)
        if self._threads < 1:
            raise ConfigError(f"must be at least 1, got {self._threads}", key="process_threads")
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None
        ready = self._start()
        self._min, self._max, self._placement = ready.min_batch, ready.max_batch, ready.placement

    def _start(self) -> _Ready:
        ours, theirs = socket.socketpair()
        # A fresh interpreter that imports only what it runs: not this program's __main__
        # (multiprocessing's spawn would re-run a script without a __main__ guard), with this
        # process's import path, so the backends' modules import the same way there.
        command = [sys.executable, "-c", _CHILD_COMMAND, str(theirs.fileno())]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        try:
            process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env)
        finally:
            theirs.close()  # ours alone now: a read sees EOF when the child dies
        ours = Connection(ours.detach())
        self._process, self._connection = process, ours
        _send(ours, _Start(self._tree, self._params, self._threads))
        if not ours.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"the child process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            reply = _receive(ours)
        except EOFError:
            code = self._reap()
            raise RuntimeError(
                f"the child process died while starting (exit code {code})"
            ) from None
        if isinstance(reply, _Failed):
            self._reap()
            raise RuntimeError(f"in the child process: {reply.text}")
        return reply

    def forward(self, batch: list[dict[str, Any]]) -> None:
        if self._process is None:  # the last child died: this batch gets a fresh one
            logger.warning("Process[%s]: starting a new child process", self._tree.qualname)
            try:
                self._start()
            except RuntimeError as error:
                raise BackendError(f"Process[{self._tree.qualname}]: {error}") from error
        try:
            items = [{key: _outbound(value) for key, value in item.items()} for item in batch]
            _send(self._connection, _Batch(items))
        except (pickle.PicklingError, TypeError, AttributeError) as error:  # cannot pickle
            raise InvalidInputError(
                f"cannot send the request to a child process: {error}"
            ) from None
        except OSError:
            pass  # the child is gone: recv() below says so
        try:
            reply = _receive(self._connection)
        except (EOFError, OSError):
            code = self._reap()
            raise BackendError(
                f"the child process running {self._tree.qualname} died (exit code {code}); "
                "the next batch starts a new one"
            ) from None
        if isinstance(reply, _Failed):
            if reply.invalid_input:
                raise InvalidInputError(reply.text)
            raise BackendError(reply.text)
        for item, changes in zip(batch, reply.changes, strict=True):
            for key in changes.removed:
                item.pop(key, None)
            item.update({key: _inbound(value) for key, value in changes.updated.items()})

    def min(self) -> int:
        return self._min

    def max(self) -> int:
        return self._max

    def placement(self) -> str | None:
        return self._placement

    def close(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(OSError):  # the child is gone already
            _send(self._connection, _Stop())
        self._reap()  # waits STOP_TIMEOUT_S for it to finish, then kills it

    def _kill(self) -> None:
        self._process.kill()
        self._reap()

    def _reap(self) -> int | None:
        """Forget the child (dead or being killed); its exit code."""
        process, self._process = self._process, None
        self._connection.close()
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
