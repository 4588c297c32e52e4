"""The deployment files agree with the service: ports, health paths, flags, drain and grace times.

deploy/haproxy.cfg, the Dockerfile and deploy/kubernetes.yaml are read (not run: Docker and a
cluster are not available here); every command line they give the server is parsed by the
server's own argument parser, and the health paths are asked of the server's ops endpoint.
HAProxy validates its configuration where it is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.render_haproxy import (
    TEMPLATE_PATH,
    Layout,
    TemplateError,
    Upstream,
    directives,
    parse_layout,
    render,
)
from service.command_line import parse_args
from service.ops.ops_server import OpsServer, ServiceState

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
KUBERNETES = REPO / "deploy" / "kubernetes.yaml"

READY_PATH = "/health/ready"
LIVE_PATH = "/health/live"

DEFAULTS = parse_args([])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def dockerfile(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_instructions() if name == instruction]


def docker_server_args() -> Any:
    """The image's server command line, parsed by the server's parser."""
    (entrypoint,) = dockerfile("ENTRYPOINT")
    (cmd,) = dockerfile("CMD")
    assert json.loads(entrypoint) == ["python3", "-m", "service"]
    return parse_args(json.loads(cmd))  # exec form: a JSON array


def kubernetes_objects() -> dict[str, dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dev dependency) is not installed")
    objects = [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects), "one object of each kind expected"
    return by_kind


def server_container() -> dict:
    (container,) = kubernetes_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


# --- HAProxy -----------------------------------------------------------------------------------


def test_haproxy_template_renders_back_to_itself():
    template = TEMPLATE_PATH.read_text()
    assert render(template, parse_layout(template)) == template


def test_rendering_changes_only_addresses():
    template = TEMPLATE_PATH.read_text()
    servers = tuple(Upstream("127.0.0.1", 8891 + i, 9091 + i) for i in range(3))
    layout = Layout("127.0.0.1:7000", servers, "127.0.0.1:7001", "/tmp/t.sock")
    rendered = render(template, layout)
    assert parse_layout(rendered) == layout
    changed = set(rendered.splitlines()) - set(template.splitlines())
    assert len(changed) == 3 + 3  # the server lines, two binds, the socket
    for section in ("defaults", "backend thrift_servers"):
        kept = [words for words in directives(template, section) if words[0] != "server"]
        assert kept == [w for w in directives(rendered, section) if w[0] != "server"]


def test_renderer_refuses_what_it_cannot_place():
    template = TEMPLATE_PATH.read_text()
    with pytest.raises(TemplateError, match="BEGIN SERVERS"):
        parse_layout(template.replace("# BEGIN SERVERS", "#"))
    with pytest.raises(TemplateError, match="bind"):
        parse_layout(template.replace("    bind *:8888\n", ""))
    with pytest.raises(ValueError, match="at least one server"):
        render(template, Layout("*:1", (), "127.0.0.1:2", "/tmp/s"))
    assert Upstream.parse("gpu-1") == Upstream("gpu-1", 8888, 9090)
    assert Upstream.parse("10.0.0.2:8890:9091") == Upstream("10.0.0.2", 8890, 9091)
    for bad in ("", "h:x", "h:1:2:3", "h:70000"):
        with pytest.raises(ValueError):
            Upstream.parse(bad)


def test_haproxy_config_matches_the_service():
    text = TEMPLATE_PATH.read_text()
    layout = parse_layout(text)
    metrics_port = docker_server_args().metrics_port
    assert layout.bind.rsplit(":", 1)[1] == str(DEFAULTS.port)  # clients keep their port
    assert layout.servers and all(
        s.port == DEFAULTS.port and s.metrics_port == metrics_port for s in layout.servers
    )
    assert ["mode", "tcp"] in directives(text, "defaults")
    backend = directives(text, "backend thrift_servers")
    assert ["balance", "leastconn"] in backend
    assert ["option", "httpchk", "GET", READY_PATH] in backend
    (default_server,) = [words for words in backend if words[0] == "default-server"]
    settings = dict(zip(default_server[1::2], default_server[2::2], strict=False))
    assert settings["on-marked-down"] == "shutdown-sessions"
    # A draining server answers 404 (test_health_paths_are_the_services): HAProxy must take
    # that as "no new connections", not as a failed check that marks it down and, through
    # shutdown-sessions, cuts the calls it is finishing.
    assert ["http-check", "disable-on-404"] in backend
    assert ["http-check", "expect", "status", "200"] in backend
    # One connection per server thread: HAProxy must not hand a server more than it serves.
    assert int(settings["maxconn"]) == DEFAULTS.threads
    assert int(settings["fall"]) <= 3  # fast failover: a few failed checks, not tens


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_template_and_a_rendering(tmp_path):
    template = TEMPLATE_PATH.read_text()
    local = Layout(
        "127.0.0.1:8888",
        tuple(Upstream("127.0.0.1", 8891 + i, 9091 + i) for i in range(4)),
        "127.0.0.1:8404",
        str(tmp_path / "admin.sock"),
    )
    for name, text in (("template.cfg", template), ("local.cfg", render(template, local))):
        path = tmp_path / name
        path.write_text(text)
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, f"{name}:\n{check.stdout}{check.stderr}"
        assert "[WARNING]" not in check.stdout + check.stderr, check.stdout + check.stderr


# --- the service's health endpoints --------------------------------------------------------------


def test_health_paths_are_the_services():
    state = ServiceState()
    ops = OpsServer(state, lambda: "", host="127.0.0.1", port=0)
    try:
        assert ops.respond(LIVE_PATH)[0] == 200
        assert ops.respond(READY_PATH)[0] == 503  # loading: a failed check, not in the pool
        state.mark_ready()
        assert ops.respond(READY_PATH)[0] == 200
        state.mark_draining()
        # Draining: 404, which haproxy.cfg's `http-check disable-on-404` reads as "no new
        # connections, keep the open ones"; for Kubernetes any status from 400 on is not ready.
        status, _type, body = ops.respond(READY_PATH)
        assert (status, body) == (404, "draining: finishing in-flight requests\n")
        assert ops.respond("/health/nope")[0] == 404  # so a typo in a path would show
    finally:
        ops.close()


# --- Docker --------------------------------------------------------------------------------------


def test_dockerfile_runs_the_service_as_deployed():
    args = docker_server_args()
    assert args.handler == "pipelined"
    assert args.host == "0.0.0.0"  # reachable from outside the container
    assert args.metrics_port > 0
    exposed = {int(port) for line in dockerfile("EXPOSE") for port in line.split()}
    assert exposed == {args.port, args.metrics_port}
    (healthcheck,) = dockerfile("HEALTHCHECK")
    assert f"http://127.0.0.1:{args.metrics_port}{LIVE_PATH}" in healthcheck
    assert re.search(r"--start-period=(\d+)s", healthcheck)


def test_dockerfile_base_user_and_install():
    (base_arg,) = [a for a in dockerfile("ARG") if a.startswith("BASE_IMAGE=")]
    assert base_arg.startswith("BASE_IMAGE=nvcr.io/nvidia/tensorrt:")
    assert dockerfile("FROM") == ["${BASE_IMAGE}"]
    runs = dockerfile("RUN")
    assert any("pip install '.[gpu,trt]'" in run for run in runs)
    (user,) = dockerfile("USER")
    assert user not in ("root", "0")
    assert any("useradd" in run and f" {user}" in run for run in runs)
    # The model is exported to the path the default config names, relative to WORKDIR.
    assert dockerfile("WORKDIR") == ["/app"]
    assert any(
        "service.tools.export_model" in run and "models/resnet50.onnx" in run for run in runs
    )


def test_image_holds_every_package_the_server_imports():
    copied = {
        source.rstrip("/")
        for args in dockerfile("COPY")
        for source in [w for w in shlex.split(args) if not w.startswith("--")][:-1]
    }
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for path in copied:
        assert (REPO / path).exists(), f"the Dockerfile copies {path}, which is not in the repo"
        assert path not in ignored, f".dockerignore leaves {path} out of the build context"
    assert {".git", ".venv", "models"} <= ignored
    code = (
        "import sys, service.__main__, service.app, service.processes.workers, "
        "service.processes.core_process, "
        "service.tools.export_model; "
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    ours = {name for name in run.stdout.split() if (REPO / name / "__init__.py").is_file()}
    assert "service" in ours and "torchpipe_lite" in ours
    assert ours <= copied, f"imported but not copied into the image: {ours - copied}"


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_deployment_matches_the_service():
    container = server_container()
    args = parse_args(container["args"])
    assert args.host == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"thrift": args.port, "metrics": args.metrics_port}
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] == {"path": READY_PATH, "port": "metrics"}
    assert probes["livenessProbe"] == {"path": LIVE_PATH, "port": "metrics"}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": READY_PATH, "port": "metrics"}
    # Loading, converting and warming up the model can take minutes on a cold node.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1


def test_kubernetes_grace_period_covers_pre_stop_and_drain():
    container = server_container()
    pod = kubernetes_objects()["Deployment"]["spec"]["template"]["spec"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain_s = parse_args(container["args"]).drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain_s
    # The image's non-root user, by number (runAsNonRoot cannot check a user name).
    uid = re.search(r"--uid (\d+)", " ".join(dockerfile("RUN")))
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))


def test_kubernetes_service_reaches_the_pods():
    objects = kubernetes_objects()
    deployment, service = objects["Deployment"], objects["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    budget = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert budget.items() <= labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in server_container()["ports"]}
    service_ports = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    assert service_ports == container_ports  # 8888 and 9090 on the Service as in the pod
