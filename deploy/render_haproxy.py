"""Rewrites deploy/haproxy.cfg for another set of servers and ports (the file stays the template).

    python deploy/render_haproxy.py --bind '*:8888' \\
        --server 127.0.0.1:8891:9091 --server 127.0.0.1:8892:9092 > /etc/haproxy/haproxy.cfg

Only the marked places change: the Thrift frontend's ``bind``, the server lines between
``# BEGIN SERVERS`` and ``# END SERVERS``, the stats page's ``bind`` and the ``stats socket``
path. Everything else (balancing, health checks, timeouts) comes from the template unchanged, so
the file and every rendered copy, the tests' included, share one source of truth.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

#: The committed configuration, which is also the template.
TEMPLATE_PATH = Path(__file__).resolve().with_name("haproxy.cfg")

BEGIN_SERVERS = "# BEGIN SERVERS"
END_SERVERS = "# END SERVERS"
THRIFT_FRONTEND = "frontend thrift_in"
STATS_FRONTEND = "frontend stats"

_SERVER_LINE = re.compile(
    r"^(?P<indent>\s*)server\s+(?P<name>\S+)\s+(?P<host>[^\s:]+):(?P<port>\d+)"
    r"\s+check\s+port\s+(?P<metrics_port>\d+)\s*$"
)
_SECTION_HEADER = re.compile(r"^(global|defaults|frontend|backend|listen|resolvers|peers)\b")


class TemplateError(ValueError):
    """The template lacks a place this renderer rewrites, or has it more than once."""


@dataclass(frozen=True)
class Upstream:
    """One Thrift server behind HAProxy: its Thrift address and its metrics (health) port."""

    host: str
    port: int = 8888
    metrics_port: int = 9090

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``HOST``, ``HOST:PORT`` or ``HOST:PORT:METRICS_PORT`` (IPv4 address or host name)."""
        parts = text.split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ValueError(f"expected HOST[:PORT[:METRICS_PORT]], got {text!r}")
        try:
            ports = [int(part) for part in parts[1:]]
        except ValueError:
            raise ValueError(f"ports must be numbers in {text!r}") from None
        if not all(0 < port < 65536 for port in ports):
            raise ValueError(f"ports must be in 1..65535 in {text!r}")
        return cls(parts[0], *ports)


@dataclass(frozen=True)
class Layout:
    """The places of the template that differ between deployments."""

    bind: str  # the Thrift frontend's address, e.g. "*:8888"
    servers: tuple[Upstream, ...]
    stats_bind: str  # the stats page and Prometheus endpoint
    stats_socket: str  # the admin socket's path


def _section_of_each_line(lines: list[str]) -> list[str]:
    """The section header (e.g. ``frontend stats``) each line belongs to ('' before any)."""
    section, sections = "", []
    for line in lines:
        if _SECTION_HEADER.match(line):
            section = " ".join(line.split())
        sections.append(section)
    return sections


def directives(text: str, section: str) -> list[list[str]]:
    """The words of each directive line of ``section`` (e.g. ``backend thrift_servers``)."""
    lines = text.splitlines()
    return [
        line.split()
        for line, owner in zip(lines, _section_of_each_line(lines), strict=True)
        if owner == section
        and line.strip()
        and not line.lstrip().startswith("#")
        and " ".join(line.split()) != section
    ]


def _find_one(lines: list[str], section: str, keyword: str) -> int:
    """The index of the only line of ``section`` whose first words are ``keyword``."""
    sections = _section_of_each_line(lines)
    found = [
        i
        for i, line in enumerate(lines)
        if sections[i] == section and line.split()[: len(keyword.split())] == keyword.split()
    ]
    if len(found) != 1:
        raise TemplateError(f"expected one '{keyword}' line in '{section}', found {len(found)}")
    return found[0]


def _server_block(lines: list[str]) -> tuple[int, int]:
    """Indices of the BEGIN and END marker lines."""
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN_SERVERS)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(END_SERVERS)]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise TemplateError(f"expected one '{BEGIN_SERVERS}' line, then one '{END_SERVERS}' line")
    return begins[0], ends[0]


def parse_layout(template: str) -> Layout:
    """Reads the rewritable places out of a configuration."""
    lines = template.splitlines()
    begin, end = _server_block(lines)
    servers = []
    for line in lines[begin + 1 : end]:
        match = _SERVER_LINE.match(line)
        if match is None:
            raise TemplateError(f"not a 'server NAME HOST:PORT check port N' line: {line!r}")
        servers.append(Upstream(match["host"], int(match["port"]), int(match["metrics_port"])))
    socket_words = lines[_find_one(lines, "global", "stats socket")].split()
    return Layout(
        bind=lines[_find_one(lines, THRIFT_FRONTEND, "bind")].split()[1],
        servers=tuple(servers),
        stats_bind=lines[_find_one(lines, STATS_FRONTEND, "bind")].split()[1],
        stats_socket=socket_words[2],
    )


def _with_word(line: str, index: int, word: str) -> str:
    """``line`` with its ``index``-th word replaced, indentation and the rest kept."""
    indent = line[: len(line) - len(line.lstrip())]
    words = line.split()
    words[index] = word
    return indent + " ".join(words)


def render(template: str, layout: Layout) -> str:
    """The template with its marked places set from ``layout``."""
    if not layout.servers:
        raise ValueError("at least one server is needed")
    lines = template.splitlines()
    begin, end = _server_block(lines)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    server_lines = [
        f"{indent}server tp{i} {s.host}:{s.port} check port {s.metrics_port}"
        for i, s in enumerate(layout.servers, start=1)
    ]
    lines[begin + 1 : end] = server_lines
    for section, keyword, index, value in (
        (THRIFT_FRONTEND, "bind", 1, layout.bind),
        (STATS_FRONTEND, "bind", 1, layout.stats_bind),
        ("global", "stats socket", 2, layout.stats_socket),
    ):
        i = _find_one(lines, section, keyword)
        lines[i] = _with_word(lines[i], index, value)
    return "\n".join(lines) + "\n"


def _upstream_arg(text: str) -> Upstream:
    try:
        return Upstream.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        type=_upstream_arg,
        metavar="HOST[:PORT[:METRICS_PORT]]",
        help="a Thrift server (ports default to 8888 and 9090); repeat for each",
    )
    parser.add_argument("--bind", help="the Thrift frontend's address (template: *:8888)")
    parser.add_argument("--stats-bind", help="stats page address (template: 127.0.0.1:8404)")
    parser.add_argument("--stats-socket", help="admin socket path")
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the rendered configuration."""
    args = _parse_args(argv)
    template = args.template.read_text()
    layout = parse_layout(template)
    changes = {"servers": tuple(args.server)}
    for field in ("bind", "stats_bind", "stats_socket"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    sys.stdout.write(render(template, replace(layout, **changes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
