"""Bad input gets a typed error and harms nothing: not the server, not the batch-mates."""

from __future__ import annotations

import random
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from thrift.Thrift import TType
from thrift.transport.TTransport import TTransportException

from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.handlers.admission import RequestLimits
from service.rpc.server import TransportLimits
from tests.image_samples import jpeg_declaring, png_header_claiming
from tests.support.live_service import WAIT_S, live_service
from tests.support.thrift_messages import raw_call

MAX_IMAGE_BYTES = 200_000
MAX_MESSAGE_BYTES = 1 << 20


def bad_payloads(photos) -> dict[str, bytes]:
    return {
        "empty": b"",
        "text": b"this is not an image",
        "random": random.Random(0).randbytes(5000),
        "jpeg-magic-then-junk": b"\xff\xd8\xff\xe0" + b"\x00" * 64,
        "png-bomb": png_header_claiming(100_000, 100_000),
        "jpeg-bomb": jpeg_declaring(photos["chelsea"], 60_000, 60_000),
    }


def test_bad_images_get_invalid_image(service, photos):
    with service.connect() as connection:
        for name, payload in bad_payloads(photos).items():
            with pytest.raises(InferenceError) as caught:
                connection.client.infer_batch(InferenceParams(uuid=name, data=payload))
            assert caught.value.code == ErrorCode.INVALID_IMAGE, name
            assert caught.value.uuid == name
            if "bomb" in name:
                assert "declares" in caught.value.message, name
        # The same connection still classifies a real photograph.
        result = connection.client.infer_batch(InferenceParams(uuid="ok", data=photos["coffee"]))
        assert 0 < result.score <= 1


def test_missing_arguments_get_invalid_argument(service):
    with service.connect() as connection:
        for call in (
            lambda: connection.client.infer_batch(None),
            lambda: connection.client.infer_topk(None, 3),
            lambda: connection.client.infer_many(None, 3),
        ):
            with pytest.raises(InferenceError) as caught:
                call()
            assert caught.value.code == ErrorCode.INVALID_ARGUMENT
        connection.client.ping()


def test_bad_images_do_not_disturb_concurrent_requests(pipelined_service, photos):
    """Good and bad requests from many clients at once share the pipeline's batches."""
    good = list(photos.items())[:4]
    with pipelined_service.connect() as connection:
        expected = {n: connection.client.infer_batch(InferenceParams(n, d)) for n, d in good}

    def client(worker: int) -> list[tuple[str, object]]:
        outcomes = []
        with pipelined_service.connect() as connection:
            for step in range(6):
                name, data = good[(worker + step) % len(good)]
                if step % 2:
                    name, data = f"bad-{worker}-{step}", b"\x89PNG broken"
                try:
                    outcomes.append(
                        (name, connection.client.infer_batch(InferenceParams(name, data)))
                    )
                except InferenceError as error:
                    outcomes.append((name, error))
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        results = [o for outcomes in pool.map(client, range(8)) for o in outcomes]
    assert len(results) == 48
    for name, outcome in results:
        if name.startswith("bad-"):
            assert isinstance(outcome, InferenceError) and outcome.code == ErrorCode.INVALID_IMAGE
        else:
            assert outcome.label == expected[name].label
            assert outcome.score == pytest.approx(expected[name].score, abs=1e-4)


@pytest.fixture(scope="module")
def limited_service(resnet18_onnx):
    """A baseline server with small limits, so that exceeding them is cheap."""
    with live_service(
        "baseline",
        resnet18_onnx,
        request_limits=RequestLimits(max_image_bytes=MAX_IMAGE_BYTES, max_images_per_call=4),
        transport_limits=TransportLimits(
            max_message_bytes=MAX_MESSAGE_BYTES, max_container_items=64, message_timeout_s=0.5
        ),
    ) as service:
        yield service


def assert_still_serving(service) -> None:
    with service.connect() as connection:
        connection.client.ping()


def test_too_large_image(limited_service, photos):
    big = photos["coffee"] + b"\0" * MAX_IMAGE_BYTES
    with limited_service.connect() as connection:
        with pytest.raises(InferenceError) as caught:
            connection.client.infer_batch(InferenceParams(uuid="big", data=big))
        assert caught.value.code == ErrorCode.TOO_LARGE
        result = connection.client.infer_many([InferenceParams("big", big)], 1)
        assert result[0].error.code == ErrorCode.TOO_LARGE
        connection.client.infer_batch(InferenceParams(uuid="ok", data=photos["coffee"]))


def test_too_many_images(limited_service, photos):
    items = [InferenceParams(uuid=str(i), data=photos["coins"]) for i in range(5)]
    with limited_service.connect() as connection:
        with pytest.raises(InferenceError) as caught:
            connection.client.infer_many(items, 1)
        assert caught.value.code == ErrorCode.TOO_LARGE
        assert len(connection.client.infer_many(items[:4], 1)) == 4


def test_oversized_message_closes_only_its_connection(limited_service):
    chunk = b"\xff\xd8" + b"\0" * (MAX_MESSAGE_BYTES // 2)
    with limited_service.connect() as connection, pytest.raises((TTransportException, OSError)):
        connection.client.infer_many([InferenceParams(str(i), chunk) for i in range(3)], 1)
    assert_still_serving(limited_service)


def huge_list_header(protocol) -> None:
    protocol.writeFieldBegin("params", TType.LIST, 1)
    protocol.writeListBegin(TType.STRUCT, 2**31 - 1)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(raw_call("infer_many", huge_list_header), id="list-of-2^31-items"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
        pytest.param(raw_call("infer_batch", lambda p: None)[:-3], id="stalled-message"),
    ],
)
def test_malformed_traffic_is_cut_off(limited_service, payload):
    with socket.create_connection(("127.0.0.1", limited_service.port), timeout=WAIT_S) as sock:
        sock.sendall(payload)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"", "the server should close the connection without answering"
    assert_still_serving(limited_service)
