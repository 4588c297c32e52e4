"""Parser for backend expressions such as ``SyncTensor[Sequential[ResizeMat,Mat2Tensor]]``.

A child of ``Sequential`` may carry a filter in parentheses, TorchPipe's form:
``S[(Run)DecodeMat,(swap)ResizeMat]``, ``S[DecodeMat,(or)OtherDecoder]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torchpipe_lite.errors import ConfigError

_TOKEN = re.compile(
    r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\[)|(\])|(,)|\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\))"
)

#: Short names accepted in expressions, as in TorchPipe.
ALIASES = {"S": "Sequential"}


@dataclass(frozen=True)
class BackendSpec:
    """One node of a parsed backend expression: a backend name and its children."""

    name: str
    children: tuple[BackendSpec, ...] = field(default=())
    #: The filter written before it, ``(or)X`` (None: the default of its place).
    filter: str | None = None

    def __str__(self) -> str:
        prefix = f"({self.filter})" if self.filter else ""
        if not self.children:
            return prefix + self.name
        return f"{prefix}{self.name}[{','.join(str(child) for child in self.children)}]"

    def walk(self):
        """Yield this spec and every descendant, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


class ExpressionError(ConfigError):
    """The text is not a valid backend expression."""


def parse_backend_expression(text: str) -> BackendSpec:
    """Parse ``A``, ``A[B]``, ``A[B,C]`` (nested to any depth) into a :class:`BackendSpec`."""
    tokens = _tokenize(text)
    spec, position = _parse(tokens, 0, text)
    if position != len(tokens):
        raise ExpressionError(f"unexpected {tokens[position][1]!r} in backend {text!r}")
    return spec


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    stripped_end = len(text.rstrip())
    while position < stripped_end:
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {text[position]!r} in backend {text!r}")
        name, opening, closing, comma, filter_name = match.groups()
        if name:
            tokens.append(("name", name))
        elif filter_name:
            tokens.append(("filter", filter_name))
        else:
            tokens.append(("punct", opening or closing or comma))
        position = match.end()
    if not tokens:
        raise ExpressionError("empty backend expression")
    return tokens


def _parse(tokens: list[tuple[str, str]], position: int, text: str) -> tuple[BackendSpec, int]:
    filter_name = None
    if position < len(tokens) and tokens[position][0] == "filter":
        filter_name = tokens[position][1]
        position += 1
    if position >= len(tokens) or tokens[position][0] != "name":
        found = tokens[position][1] if position < len(tokens) else "end of text"
        raise ExpressionError(f"expected a backend name, found {found!r} in {text!r}")
    name = ALIASES.get(tokens[position][1], tokens[position][1])
    position += 1
    if position >= len(tokens) or tokens[position][1] != "[":
        return BackendSpec(name, filter=filter_name), position
    children: list[BackendSpec] = []
    position += 1
    while True:
        child, position = _parse(tokens, position, text)
        children.append(child)
        if position >= len(tokens):
            raise ExpressionError(f"missing ']' in backend {text!r}")
        punct = tokens[position][1]
        position += 1
        if punct == "]":
            return BackendSpec(name, tuple(children), filter_name), position
        if punct != ",":
            raise ExpressionError(f"expected ',' or ']' but found {punct!r} in {text!r}")
