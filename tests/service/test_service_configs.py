"""The shipped pipeline configs load cleanly and define one and the same engine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import torchpipe_lite as tp
from benchmarks.tune import render_toml
from service.app import build_handler, engine_precision
from service.core_split import FRONT_TAIL, CoreSplitError, split_tables
from service.service_config import (
    DEFAULT_CONFIG,
    SHIPPED_CONFIGS,
    ImageSettings,
    ServiceConfig,
    ServiceConfigError,
    load_service_config,
)
from tests.image_samples import png_of
from torchpipe_lite import register_backend
from torchpipe_lite.backends.image.image_header import DEFAULT_MAX_PIXELS
from torchpipe_lite.config import NODE_KEYS, Color, PipelineConfig, Precision, read_toml

CONFIGS = sorted(DEFAULT_CONFIG.parent.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_without_warnings(path: Path, caplog, tmp_path):
    # The model file need not exist: the service exports the shipped one after loading.
    with caplog.at_level(logging.WARNING):
        config = load_service_config(path, tmp_path / "model.onnx").pipeline
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(config.roots) == 1


def test_every_config_has_the_same_engine(tmp_path):
    model = tmp_path / "model.onnx"
    configs = [load_service_config(path, model) for path in CONFIGS]
    assert len(configs) >= 2
    # The engine's own parameters: what the scheduler reads (NODE_KEYS) may differ per config.
    engines = {
        (
            c.model_node,
            repr(sorted((k, v) for k, v in c.engine_params(1).items() if k not in NODE_KEYS)),
        )
        for c in configs
    }
    assert len(engines) == 1, engines
    assert configs[0].engine_backend == "SyncTensor[Sequential[TorchTensor,ClassScores]]"
    assert configs[0].model_path == model


@register_backend("TestJpegGate")
class JpegGate(tp.Backend):
    """Passes JPEG bytes on and gives nothing else a result: the CPU stand-in, here, for the
    nvJPEG decoder's ``cpu_fallback = false``."""

    def forward(self, batch):
        for item in batch:
            if bytes(item["data"][:3]) == b"\xff\xd8\xff":
                item["result"] = item["data"]


def test_the_gpu_decode_fallback_graph_sends_what_nvjpeg_refuses_to_the_cpu_decoder(
    resnet18_onnx, photos, tmp_path
):
    """The fallback config as shipped, its nvJPEG stage replaced by a CPU stand-in that
    decodes JPEGs only: a PNG of the same pixels takes the CPU path and gets the same scores."""
    fallback = DEFAULT_CONFIG.with_name("resnet50_gpu_decode_fallback.toml")
    tables = read_toml(fallback)
    stand_in = "Sequential[TestJpegGate,DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]"
    gpu_decoder = {k: v for k, v in tables["gpu_decoder"].items() if k != "cpu_fallback"}
    tables["gpu_decoder"] = {**gpu_decoder, "backend": stand_in}
    adjusted = tmp_path / fallback.name
    adjusted.write_text(render_toml(tables))
    pipeline = load_service_config(adjusted, resnet18_onnx).pipeline
    jpeg = photos["chelsea"]
    png = png_of(jpeg)
    with tp.pipe(pipeline) as model:
        from_jpeg, from_png = {"data": jpeg}, {"data": png}
        model([from_jpeg, from_png], strict=True)
        figures = model.stats()
    assert from_jpeg["result"].best_index == from_png["result"].best_index
    assert from_jpeg["result"].logits == pytest.approx(from_png["result"].logits, abs=1e-4)
    assert figures["gpu_decoder"].requests_no_result == 1  # the PNG
    assert figures["cpu_decoder"].inferences == 1  # ... decoded on the fallback path only
    assert figures["resnet18"].inferences == 2


def test_the_fallback_graph_is_what_its_comments_say(tmp_path):
    fallback = DEFAULT_CONFIG.with_name("resnet50_gpu_decode_fallback.toml")
    config = load_service_config(fallback, tmp_path / "resnet50.onnx").pipeline
    graph = config.graph
    assert graph.successors["gpu_decoder"] == ("cpu_decoder",)
    assert graph.successors["cpu_decoder"] == ("resnet50",)
    assert config.node("cpu_decoder").filter == "or"
    assert config.node("gpu_decoder").params["cpu_fallback"] is False


def test_the_summary_reports_the_precision_the_engine_runs(tmp_path):
    """No ``precision`` key: TorchTensor runs fp16 on CUDA and fp32 on the CPU, and the
    start-up summary says so (it used to say fp32 on CUDA too)."""
    model = tmp_path / "model.onnx"
    table = "[model]\nbackend = 'SyncTensor[TorchTensor]'\nmodel = '" + str(model) + "'\n"
    path = tmp_path / "no_precision.toml"
    path.write_text(table)
    config = load_service_config(path, model)
    assert engine_precision(config, on_gpu=True) == "fp16"
    assert engine_precision(config, on_gpu=False) == "fp32"
    path.write_text(table + "precision = 'half'\n")
    asked_fp16 = load_service_config(path, model)
    assert engine_precision(asked_fp16, on_gpu=False) == "fp32 (fp16 requested; CPU)"


def misspelt_colour(tmp_path: Path) -> Path:
    text = DEFAULT_CONFIG.read_text().replace('color = "rgb"', 'color = "rbg"')
    assert 'color = "rbg"' in text
    path = tmp_path / "misspelled.toml"
    path.write_text(text)
    return path


def test_the_baseline_refuses_a_misspelled_colour(resnet18_onnx, tmp_path):
    """``color = "rbg"`` used to mean BGR in the baseline, silently."""
    with pytest.raises(tp.ConfigError, match="color"):
        build_handler("baseline", misspelt_colour(tmp_path), model=resnet18_onnx)


def test_a_misspelled_colour_is_refused_when_the_config_loads(tmp_path):
    """Before any handler, engine or model file: the loader types ``color`` once."""
    with pytest.raises(tp.ConfigError) as caught:
        load_service_config(misspelt_colour(tmp_path), tmp_path / "absent.onnx")
    assert (caught.value.node, caught.value.key) == ("cpu_posdecoder", "color")
    assert 'must be "rgb" or "bgr", got \'rbg\'' in str(caught.value)


def test_the_service_config_is_typed_once(tmp_path):
    config = load_service_config(DEFAULT_CONFIG, tmp_path / "resnet50.onnx")
    assert isinstance(config.pipeline, PipelineConfig)
    assert config.model is config.pipeline.node("resnet50")
    assert config.model.params["precision"] is Precision.FP16
    assert config.images == ImageSettings((224, 224), Color.RGB, DEFAULT_MAX_PIXELS)
    assert config.engine_params(4)["precision"] is Precision.FP16
    assert (config.engine_params(4)["min"], config.engine_params(4)["max"]) == (4, 4)


def test_a_front_of_the_gpu_core_keeps_the_cpu_stages_and_sends_the_model_node_there(tmp_path):
    config = load_service_config(DEFAULT_CONFIG, tmp_path / "resnet50.onnx")
    assert config.front_pipeline() is config.pipeline  # no core: as loaded
    front = config.with_core("/run/core.sock")
    built = front.front_pipeline()
    assert isinstance(built, PipelineConfig)
    assert [n.name for n in built.nodes] == ["cpu_decoder", "cpu_posdecoder", FRONT_TAIL]
    assert built.node("cpu_decoder") == config.pipeline.node("cpu_decoder")
    tail = built.node(FRONT_TAIL)
    assert str(tail.backend) == "Remote" and tail.params["address"] == "/run/core.sock"
    assert (tail.max_queue_size, tail.request_timeout_ms) == (512, 10000.0)  # limits kept
    core = front.core_pipeline()
    assert [n.name for n in core.nodes] == ["resnet50"]
    assert core.node("resnet50").params["precision"] is Precision.FP16


def test_the_gpu_core_runs_every_stage_of_the_gpu_decode_config(tmp_path):
    config = load_service_config(SHIPPED_CONFIGS / "resnet50_gpu_decode.toml", tmp_path / "m.onnx")
    front = config.with_core("/run/core.sock")
    assert front.front_pipeline() is None  # the front calls the core directly
    assert [n.name for n in front.core_pipeline().nodes] == ["gpu_decoder", "m"]


def test_a_core_stage_that_feeds_a_cpu_stage_is_refused():
    tables = {
        "decode": {"backend": "DecodeTensor", "next": "model"},
        "model": {"backend": "TorchTensor", "model": "m.onnx", "next": "post"},
        "post": {"backend": "Identity"},
    }
    with pytest.raises(CoreSplitError, match=r"\[model\].*\[post\]"):
        split_tables(tables, "model", "/run/core.sock")


@pytest.mark.slow
def test_the_process_decode_config_classifies_as_the_default_one(resnet18_onnx, photos, tmp_path):
    """Decoding in child processes (``Process[...]``) changes where the work runs, not its
    result: the same scores as the default config's in-process decoders."""
    text = DEFAULT_CONFIG.with_name("resnet50_process_decode.toml").read_text()
    path = tmp_path / "process_decode.toml"
    path.write_text(text.replace("instance_num = 8", "instance_num = 2"))  # 2 cores here
    images = [photos["chelsea"], photos["astronaut"], b"not an image"]
    outcomes = {}
    for config in (DEFAULT_CONFIG, path):
        handler, _ = build_handler("pipelined", config, model=resnet18_onnx)
        try:
            outcomes[config] = handler.classify(images)
        finally:
            handler.close()
    in_process, in_children = outcomes.values()
    for ours, theirs in zip(in_process[:2], in_children[:2], strict=True):
        assert theirs.best_index == ours.best_index
        assert theirs.logits == pytest.approx(ours.logits, abs=1e-4)
    # not an image: no result, the same way on both
    assert isinstance(in_process[2], tp.errors.NoResultError)
    assert type(in_children[2]) is type(in_process[2])


def test_the_service_refuses_a_pipeline_whose_first_stage_is_inline():
    """An inline first stage would run on the thread that submits: the RPC loop thread."""
    from service.handlers.main_torchpipe import PipelinedHandler

    pipeline = {
        "decode": {"backend": "Identity", "inline": True, "next": "model"},
        "model": {"backend": "Identity"},
    }
    config = ServiceConfig(
        Path("inline.toml"), pipeline, model_node="model", images=ImageSettings()
    )
    with pytest.raises(ServiceConfigError, match=r"node \[decode\] is inline and first"):
        PipelinedHandler(config, device="cpu")
    queued = {**pipeline, "decode": {"backend": "Identity", "next": "model"}}
    queued_config = ServiceConfig(
        Path("queued.toml"), queued, model_node="model", images=ImageSettings()
    )
    PipelinedHandler(queued_config, device="cpu").close()
