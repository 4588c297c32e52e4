"""TorchPipe's other CPU stages (Tensor2Mat, AlignMat, DynamicResizeMat, ResizePadMat, CropMat,
PillowResizeMat/Tensor, Parallel, Mat2Tensor's data_format) give what OpenCV and Pillow give by
hand, and refuse bad input with typed errors."""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import torchpipe_lite as tp
from torchpipe_lite.backends.base import Backend
from torchpipe_lite.backends.image.mat_ops import aligned_width, fit_size
from torchpipe_lite.errors import ConfigError, InvalidInputError

RNG = np.random.default_rng(7)
PHOTO = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def run(expression: str, items: list[dict[str, Any]], **params: Any) -> list[dict[str, Any]]:
    """Run the requests as one batch through a freshly created backend."""
    tp.create_backend(expression, params).forward(items)
    return items


def one(expression: str, data: Any, **params: Any) -> dict[str, Any]:
    return run(expression, [{"data": data}], **params)[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_tensor2mat_copies_hwc_and_1chw_tensors(dtype: type) -> None:
    hwc = PHOTO.astype(dtype)
    for tensor in (
        torch.from_numpy(hwc.copy()),
        torch.from_numpy(hwc.copy()).permute(2, 0, 1)[None],
    ):
        mat = one("Tensor2Mat", tensor)["result"]
        assert isinstance(mat, np.ndarray) and mat.dtype == dtype
        np.testing.assert_array_equal(mat, hwc)
        tensor.zero_()  # a copy: the mat does not follow the tensor
        np.testing.assert_array_equal(mat, hwc)


@pytest.mark.parametrize(
    "data",
    [PHOTO, torch.zeros(5, 5), torch.zeros(2, 3, 4, 4), torch.zeros(4, 4, 2), torch.zeros(0, 4, 3)],
)
def test_tensor2mat_refuses_what_is_not_an_image_tensor(data: Any) -> None:
    with pytest.raises(InvalidInputError):
        one("Tensor2Mat", data)


def test_tensor2mat_refuses_other_dtypes() -> None:
    with pytest.raises(InvalidInputError, match="uint8 or float32"):
        one("Tensor2Mat", torch.zeros(4, 4, 3, dtype=torch.int64))


@pytest.mark.parametrize("data_format,shape", [("hwc", (37, 53, 3)), ("nchw", (1, 3, 37, 53))])
def test_mat2tensor_data_format(data_format: str, shape: tuple) -> None:
    for mat in (PHOTO, PHOTO.astype(np.float32)):
        item = one("Mat2Tensor", mat, data_format=data_format)
        assert tuple(item["result"].shape) == shape and item["data_format"] == data_format
        back = item["result"] if data_format == "hwc" else item["result"][0].permute(1, 2, 0)
        np.testing.assert_array_equal(back.numpy(), mat)


def test_mat2tensor_refuses_an_unknown_data_format() -> None:
    with pytest.raises(ConfigError, match="data_format"):
        tp.create_backend("Mat2Tensor", {"data_format": "chw"})


def test_aligned_width_by_hand() -> None:
    # 10 * 53 / 37 = 14.3 -> 14 -> 16 (align 8); the widest of the batch sets the width
    assert aligned_width(10, [(37, 53)], 8, 64) == 16
    assert aligned_width(10, [(37, 53), (10, 40)], 8, 64) == 40
    assert aligned_width(10, [(10, 400)], 8, 64) == 64  # capped at max_w
    assert aligned_width(1, [(300, 1)], 8, 64) == 8  # would round to 0


def test_align_then_dynamic_resize_gives_one_width_to_the_batch() -> None:
    items = [{"data": PHOTO}, {"data": PHOTO[:, :20]}]
    run("Sequential[AlignMat,DynamicResizeMat]", items, resize_h=10, max_w=64, align=8)
    expected = cv2.resize(PHOTO, (16, 10))
    np.testing.assert_array_equal(items[0]["result"], expected)
    assert items[1]["result"].shape == (10, 16, 3)
    assert items[0]["resize_w"] == items[1]["resize_w"] == 16


def test_align_mat_refuses_max_w_not_a_multiple_of_align() -> None:
    with pytest.raises(ConfigError, match="multiple of align"):
        tp.create_backend("AlignMat", {"resize_h": 8, "max_w": 100, "align": 32})


def test_dynamic_resize_reads_the_request_sizes() -> None:
    item = run("DynamicResizeMat", [{"data": PHOTO, "resize_h": 5, "resize_w": "9"}])[0]
    np.testing.assert_array_equal(item["result"], cv2.resize(PHOTO, (9, 5)))


@pytest.mark.parametrize(
    "sizes", [{}, {"resize_h": 0, "resize_w": 4}, {"resize_h": "x", "resize_w": 4}]
)
def test_dynamic_resize_refuses_missing_or_bad_sizes(sizes: dict) -> None:
    with pytest.raises(InvalidInputError):
        run("DynamicResizeMat", [{"data": PHOTO, **sizes}])


def test_fit_size_keeps_the_aspect_inside_the_box() -> None:
    assert fit_size(37, 53, 20, 20) == (14, 20)  # 20 / (53/37) = 13.96 -> 14
    assert fit_size(53, 37, 20, 20) == (20, 14)
    assert fit_size(10, 40, 20, 100) == (20, 80)


def test_resize_pad_mat_by_hand() -> None:
    item = one("ResizePadMat", PHOTO, max_h=20, max_w=20, pad_value="1,2,3")
    resized = cv2.resize(PHOTO, (20, 14), interpolation=cv2.INTER_LINEAR)
    expected = np.empty((20, 20, 3), np.uint8)
    expected[:] = (1, 2, 3)
    expected[:14] = resized
    np.testing.assert_array_equal(item["result"], expected)
    assert item["inverse_trans"](20, 14) == pytest.approx((53, 37))


def test_resize_pad_mat_refuses_a_float_image() -> None:
    with pytest.raises(InvalidInputError):
        one("ResizePadMat", PHOTO.astype(np.float32), max_h=20, max_w=20)


def test_crop_mat_is_the_box() -> None:
    item = run("CropMat", [{"data": PHOTO, "_box": [3, 4, 10, 20]}])[0]
    np.testing.assert_array_equal(item["result"], PHOTO[4:20, 3:10])


@pytest.mark.parametrize(
    "box", [[0, 0, 54, 10], [5, 5, 5, 10], [-1, 0, 4, 4], [0, 0, 4], [0, 0, 4.5, 4]]
)
def test_crop_mat_refuses_a_box_outside_or_malformed(box: list) -> None:
    with pytest.raises(InvalidInputError):
        run("CropMat", [{"data": PHOTO, "_box": box}])
    with pytest.raises(InvalidInputError, match="no '_box'"):
        run("CropMat", [{"data": PHOTO}])


@pytest.mark.parametrize("size_hw", [(1, 224), (224, 1), (20, 20), (1, 1), (43, 99)])
def test_pillow_resizes_give_pillows_pixels(size_hw: tuple) -> None:
    height, width = size_hw
    expected = np.asarray(Image.fromarray(PHOTO).resize((width, height), Image.Resampling.BILINEAR))
    mat = one("PillowResizeMat", PHOTO, resize_h=height, resize_w=width)["result"]
    np.testing.assert_array_equal(mat, expected)
    tensor = torch.from_numpy(PHOTO.copy()).permute(2, 0, 1)[None]
    out = one("PillowResizeTensor", tensor, resize_h=height, resize_w=width)["result"]
    assert out.dtype == torch.uint8 and tuple(out.shape) == (1, 3, height, width)
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), expected)


def test_pillow_resize_is_not_opencvs() -> None:
    """The check above can tell the two apart: shrinking, Pillow averages the whole footprint."""
    pillow = one("PillowResizeMat", PHOTO, resize_h=9, resize_w=13)["result"]
    assert not np.array_equal(pillow, cv2.resize(PHOTO, (13, 9)))


def test_pillow_resizes_refuse_what_pillow_cannot_take() -> None:
    with pytest.raises(InvalidInputError):
        one("PillowResizeMat", PHOTO.astype(np.float32), resize_h=4, resize_w=4)
    with pytest.raises(InvalidInputError):
        one("PillowResizeTensor", torch.zeros(1, 3, 4, 4), resize_h=4, resize_w=4)
    with pytest.raises(ConfigError):
        tp.create_backend("PillowResizeMat", {"resize_h": 0, "resize_w": 4})


@tp.register_backend("PairsOnlyForParallel")
class PairsOnly(Backend):
    """Records the batch sizes it is given; accepts at most two."""

    calls: ClassVar[list[int]] = []

    def forward(self, batch: list[dict[str, Any]]) -> None:
        PairsOnly.calls.append(len(batch))
        for item in batch:
            item["result"] = item["data"]

    def max(self) -> int:
        return 2


def test_parallel_cuts_a_batch_into_pieces_its_child_accepts() -> None:
    backend = tp.create_backend("Parallel[PairsOnlyForParallel]", {})
    assert backend.max() > 2
    items = [{"data": index} for index in range(5)]
    PairsOnly.calls = []
    backend.forward(items)
    assert PairsOnly.calls == [2, 2, 1]
    assert [item["result"] for item in items] == list(range(5))


def test_parallel_needs_one_child() -> None:
    with pytest.raises((ConfigError, ValueError)):
        tp.create_backend("Parallel", {})
