"""The wire contract: a reference-IDL-only client works, and service/gen is up to date."""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from thrift.Thrift import TApplicationException

from service.gen.inference.ttypes import InferenceParams

REPO = Path(__file__).resolve().parents[2]
REFERENCE_IDL = REPO / "tests" / "data" / "reference_inference.thrift"
GEN_DIR = REPO / "service" / "gen" / "inference"

THRIFT = shutil.which("thrift")
needs_compiler = pytest.mark.skipif(
    THRIFT is None, reason="the Apache Thrift compiler (`thrift`) is not installed"
)

# Uses nothing of this repository: the generated package `serve` and the thrift library only.
REFERENCE_CLIENT = textwrap.dedent(
    """
    import sys
    from serve import InferenceService
    from serve.ttypes import InferenceParams
    from thrift.Thrift import TApplicationException
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport

    port, image_path = int(sys.argv[1]), sys.argv[2]
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(60_000)
    transport = TTransport.TBufferedTransport(sock)
    client = InferenceService.Client(TBinaryProtocol.TBinaryProtocol(transport))
    transport.open()
    client.ping()
    result = client.infer_batch(InferenceParams(uuid="ref-1", data=open(image_path, "rb").read()))
    print("LABEL", result.label)
    print("SCORE", repr(result.score))
    try:
        client.infer_batch(InferenceParams(uuid="ref-bad", data=b"not an image"))
        print("BAD no error")
    except TApplicationException as error:
        print("BAD TApplicationException", error.type)
    client.ping()
    print("DONE ok")
    """
)


def generate(idl: Path, out_dir: Path, options: str = "py") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [THRIFT, "--gen", options, "-out", str(out_dir), str(idl)], check=True, timeout=60
    )


@needs_compiler
def test_reference_client_works(service, photos, tmp_path):
    generate(REFERENCE_IDL, tmp_path / "gen")
    script = tmp_path / "reference_client.py"
    script.write_text(REFERENCE_CLIENT)
    image = tmp_path / "chelsea.jpg"
    image.write_bytes(photos["chelsea"])
    run = subprocess.run(
        [sys.executable, str(script), str(service.port), str(image)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "gen")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    with service.connect() as connection:
        expected = connection.client.infer_batch(InferenceParams("full", photos["chelsea"]))
    assert lines["LABEL"] == expected.label
    assert float(lines["SCORE"]) == pytest.approx(expected.score, abs=1e-4)
    # The typed error is an extension this client cannot decode: it sees a missing result.
    assert lines["BAD"] == f"TApplicationException {TApplicationException.MISSING_RESULT}"
    assert lines["DONE"] == "ok"


def compiler_version() -> str:
    run = subprocess.run([THRIFT, "--version"], capture_output=True, text=True, timeout=60)
    return run.stdout.split()[-1]


@needs_compiler
def test_generated_code_is_current(tmp_path):
    header = (GEN_DIR / "ttypes.py").read_text()
    committed_version = re.search(r"Thrift Compiler \(([\d.]+)\)", header).group(1)
    if compiler_version() != committed_version:
        pytest.skip(f"thrift {compiler_version()} here; service/gen came from {committed_version}")
    generate(REPO / "idl" / "inference.thrift", tmp_path, "py:package_prefix=service.gen.")
    fresh = tmp_path / "inference"
    (fresh / "InferenceService-remote").unlink()
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in GEN_DIR.iterdir() if p.name != "__pycache__")
    _, mismatch, errors = filecmp.cmpfiles(fresh, GEN_DIR, names, shallow=False)
    assert not mismatch and not errors, f"service/gen is stale ({mismatch}): run `make gen`"
