"""deploy/kubernetes, checked offline (no cluster is reachable from the tests).

Rendering: ``kubectl kustomize`` when a kubectl with kustomize v4 or newer is on PATH; otherwise this module's
own renderer of the few kustomize features the files use (``resources`` and strategic-merge ``patches``), which
refuses any other field rather than ignore it. Which one ran is in each test's id (``kubectl``/``builtin``); when
both are there, a test checks that they agree. Every rendered object (and every file under ``examples/``) is
validated, strictly (no unknown fields), against the Kubernetes API schemas that kubernetes-validate ships, for
an older and the newest version it knows. Then the properties the deployment promises are checked, and the
ConfigMap's variables are fed to the gateway's own configuration parser.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import Settings
from gateway.env_reader import parse_duration

from .support import ROOT

K8S = ROOT / "deploy" / "kubernetes"
TREES = {"base": K8S / "base", "redis": K8S / "overlays" / "redis"}
VERSIONS = ("1.30", kubernetes_validate.latest_version())
LABELS = {"app.kubernetes.io/name": "cognito-gateway", "app.kubernetes.io/component": "gateway"}
Obj = dict[str, Any]


def kubectl_with_kustomize() -> str | None:
    """kubectl, when its built-in kustomize is v4+ (Debian's kubernetes-client 1.20 has v2, without ``patches``)."""
    tool = shutil.which("kubectl")
    if tool is None:
        return None
    result = subprocess.run([tool, "version", "--client"], capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Kustomize Version: v(\d+)", result.stdout)
    return tool if match and int(match.group(1)) >= 4 else None


KUBECTL = kubectl_with_kustomize()
RENDERER = "kubectl" if KUBECTL else "builtin"  # in the test ids, so that every run says which one rendered


def render_with_kubectl(tree: Path) -> list[Obj]:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(tree)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _merge(live: Any, patch: Any) -> Any:
    """Strategic merge as our patches need it: maps merge, lists of named maps merge by name, the rest replaces."""
    if isinstance(live, dict) and isinstance(patch, dict):
        merged = dict(live)
        for key, value in patch.items():
            merged[key] = _merge(live[key], value) if key in live else copy.deepcopy(value)
        return merged
    if isinstance(live, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        merged_list = [copy.deepcopy(item) for item in live]
        for item in patch:
            target = next((i for i, old in enumerate(merged_list) if old.get("name") == item["name"]), None)
            if target is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[target] = _merge(merged_list[target], item)
        return merged_list
    return copy.deepcopy(patch)


def render_builtin(tree: Path) -> list[Obj]:
    """``resources`` (files, or directories with a kustomization) and ``patches: [{path}]``; nothing else."""
    kustomization = yaml.safe_load((tree / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    assert not unknown, f"the builtin renderer does not implement {sorted(unknown)}: install kubectl"
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = tree / entry
        if path.is_dir():
            objects.extend(render_builtin(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch_entry in kustomization.get("patches", []):
        assert set(patch_entry) == {"path"}, f"unsupported patch form {patch_entry}"
        patch = yaml.safe_load((tree / patch_entry["path"]).read_text())
        index = next(i for i, o in enumerate(objects) if _key(o) == _key(patch))
        objects[index] = _merge(objects[index], patch)
    return objects


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@functools.cache
def rendered(name: str) -> tuple[Obj, ...]:
    tree = TREES[name]
    return tuple(render_with_kubectl(tree) if KUBECTL else render_builtin(tree))


def find(objects: tuple[Obj, ...], kind: str, name: str = "cognito-gateway") -> Obj:
    matches = [o for o in objects if _key(o) == (kind, name)]
    assert len(matches) == 1, f"expected one {kind}/{name}"
    return matches[0]


def examples() -> list[Obj]:
    return [doc for path in sorted((K8S / "examples").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("tree", [*TREES, "examples"], ids=lambda tree: f"{tree}-{RENDERER}")
def test_every_object_is_valid_for_the_kubernetes_api(tree: str, version: str) -> None:
    objects = examples() if tree == "examples" else rendered(tree)
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{RENDERER}-rendered {tree}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_the_builtin_renderer_agrees_with_kubectl() -> None:
    if KUBECTL is None:
        pytest.skip("no kubectl with kustomize v4+ on PATH: only the builtin renderer ran")
    for tree in TREES.values():
        by_kubectl = {_key(o): o for o in render_with_kubectl(tree)}
        by_builtin = {_key(o): o for o in render_builtin(tree)}
        assert by_kubectl == by_builtin, tree


@pytest.mark.parametrize("tree", list(TREES), ids=lambda tree: f"{tree}-{RENDERER}")
def test_the_deployment_is_what_the_issue_asks_for(tree: str) -> None:
    objects = rendered(tree)
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert (
        deployment["spec"]["template"]["metadata"]["labels"] == LABELS == deployment["spec"]["selector"]["matchLabels"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_user() != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/oauth2/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/oauth2/readyz"
    (port,) = container["ports"]
    assert container["livenessProbe"]["httpGet"]["port"] == port["name"] == "http"
    config = find(objects, "ConfigMap")["data"]
    assert config["GATEWAY_LISTEN"].endswith(f":{port['containerPort']}")
    sources = [next(iter(source.items())) for source in container["envFrom"]]
    assert sources == [("configMapRef", {"name": "cognito-gateway"}), ("secretRef", {"name": "cognito-gateway"})]
    assert "env" not in container, "every setting comes from the ConfigMap or the Secret"


@pytest.mark.parametrize("tree", list(TREES), ids=lambda tree: f"{tree}-{RENDERER}")
def test_termination_grace_covers_the_prestop_sleep_and_the_gateway_drain(tree: str) -> None:
    objects = rendered(tree)
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = parse_duration(find(objects, "ConfigMap")["data"]["GATEWAY_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain + 5


@pytest.mark.parametrize("tree", list(TREES), ids=lambda tree: f"{tree}-{RENDERER}")
def test_service_budget_and_autoscaler_point_at_the_gateway(tree: str) -> None:
    objects = rendered(tree)
    service = find(objects, "Service")
    assert service["spec"]["selector"] == LABELS and service["spec"]["ports"][0]["targetPort"] == "http"
    budget = find(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == LABELS and budget["spec"]["maxUnavailable"] == 1
    autoscaler = find(objects, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cognito-gateway",
    }
    assert autoscaler["spec"]["minReplicas"] == 3 < autoscaler["spec"]["maxReplicas"]
    assert not [o for o in objects if o["kind"] == "Secret"], "secrets are created by hand, never committed"


def _gateway_settings(tree: str) -> Settings:
    """The ConfigMap, plus the two values the Secret holds, as the gateway itself parses them."""
    secret = {"GATEWAY_SESSION_SECRET": "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ=", "COGNITO_CLIENT_SECRET": "x"}
    return Settings.from_env({**find(rendered(tree), "ConfigMap")["data"], **secret})


def test_the_configmap_is_a_valid_gateway_configuration() -> None:
    settings = _gateway_settings("base")
    assert settings.session.store == "cookie" and settings.session.secure, "https public URL: Secure cookies"
    assert settings.public_url.scheme == "https"


def test_the_redis_overlay_runs_the_gateway_in_redis_store_mode() -> None:
    settings = _gateway_settings("redis")
    assert settings.session.store == "redis"
    objects = rendered("redis")
    redis_service = find(objects, "Service", "cognito-gateway-redis")
    assert settings.session.redis_url == f"redis://{redis_service['metadata']['name']}:6379/0"
    redis_pod = find(objects, "Deployment", "cognito-gateway-redis")["spec"]["template"]
    assert redis_service["spec"]["selector"] == redis_pod["metadata"]["labels"]
    policy = find(objects, "NetworkPolicy", "cognito-gateway-redis")["spec"]
    assert policy["podSelector"]["matchLabels"] == redis_pod["metadata"]["labels"]
    assert policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": LABELS}}], "only the gateway reaches Redis"
    assert redis_pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert redis_pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def image_user() -> int:
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    return int(users[-1])
