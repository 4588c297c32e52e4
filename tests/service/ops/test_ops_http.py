"""The ops port's request parsing and answers, without sockets or threads."""

from __future__ import annotations

import http

import pytest

from service.ops.ops_http import (
    HttpRequest,
    HttpRequestError,
    http_response,
    parse_request_head,
    request_head_end,
)


def test_a_request_head_ends_at_its_blank_line_with_or_without_carriage_returns():
    assert request_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    assert request_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest") == 27
    assert request_head_end(b"GET / HTTP/1.0\n\n") == 16


def test_gets_and_heads_are_parsed_and_anything_else_is_a_typed_error():
    assert parse_request_head(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n") == HttpRequest(
        "GET", "/health/live"
    )
    assert parse_request_head(b"HEAD /metrics?x=1 HTTP/1.0\n\n").path == "/metrics?x=1"
    with pytest.raises(HttpRequestError) as caught:
        parse_request_head(b"POST /metrics HTTP/1.1\r\n\r\n")
    assert caught.value.status == http.HTTPStatus.NOT_IMPLEMENTED
    for bad in (b"\r\n\r\n", b"GET\r\n\r\n", b"GET / SPDY\r\n\r\n", b"\xff\xfe / HTTP/1.1 x\n\n"):
        with pytest.raises(HttpRequestError) as caught:
            parse_request_head(bad)
        assert caught.value.status == http.HTTPStatus.BAD_REQUEST


def test_answers_close_their_connection_and_a_head_answer_has_no_body():
    answer = http_response(200, "text/plain", b"live\n", with_body=True)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Content-Length: 5\r\n" in answer and b"Connection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\nlive\n")
    head_only = http_response(404, "text/plain", b"not found\n", with_body=False)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: 10" in head_only
