"""Deployment files: YAML lint, Kubernetes schema validation (offline, kubernetes-validate),
the Helm chart rendered and validated, and one build recipe shared by README and Dockerfiles."""
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from helm_render import render_chart, render_text

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
CHART = ROOT / "deploy" / "helm" / "valley"
BIN = pathlib.Path(sys.executable).parent


def kubectl_validate(path):
    r = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def yamllint(path):
    r = subprocess.run([str(BIN / "python"), "-m", "yamllint", "-c",
                        str(ROOT / "deploy" / ".yamllint"), str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0 and "No module named yamllint" in r.stderr:
        r = subprocess.run(["yamllint", "-c", str(ROOT / "deploy" / ".yamllint"), str(path)],
                           capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_manifest_lints_and_validates(path):
    yamllint(path)
    kubectl_validate(path)


def test_manifest_set_is_complete():
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in K8S}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds


def test_deployment_probes_and_grace():
    d = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    cm = yaml.safe_load((ROOT / "deploy/k8s/configmap.yaml").read_text())
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] > int(cm["data"]["VALLEY_SHUTDOWN_TIMEOUT"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1


@pytest.mark.parametrize("overrides", [{}, {"tensorParallelSize": 4, "autoscaling.enabled": False,
                                            "apiKey.existingSecret": ""}],
                         ids=["defaults", "tp4-noautoscale-nokey"])
def test_chart_renders_and_validates(tmp_path, overrides):
    docs = render_chart(CHART, overrides=overrides)
    kinds = set()
    for name, text in docs:
        if not text.strip():
            continue
        out = tmp_path / name
        text = text.strip("\n") + "\n"
        out.write_text(text)
        yamllint(out)
        kubectl_validate(out)
        obj = yaml.safe_load(text)
        kinds.add(obj["kind"])
        if obj["kind"] == "Deployment":
            c = obj["spec"]["template"]["spec"]["containers"][0]
            gpus = c["resources"]["limits"]["nvidia.com/gpu"]
            assert gpus == overrides.get("tensorParallelSize", 1)
            has_key = any(e["name"] == "VALLEY_API_KEY" for e in c.get("env", []))
            assert has_key == bool(overrides.get("apiKey.existingSecret", "valley-api-key"))
    expect = {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "NetworkPolicy"}
    if overrides.get("autoscaling.enabled", True):
        expect.add("HorizontalPodAutoscaler")
    assert expect <= kinds


def test_chart_matches_plain_manifests():
    """The chart and deploy/k8s describe the same server: same env keys, probes, args."""
    docs = {yaml.safe_load(t)["kind"]: yaml.safe_load(t) for _, t in render_chart(CHART)
            if t.strip()}
    plain = {yaml.safe_load(p.read_text())["kind"]: yaml.safe_load(p.read_text()) for p in K8S}
    assert set(docs["ConfigMap"]["data"]) == set(plain["ConfigMap"]["data"])
    a = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    b = plain["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert a[probe]["httpGet"]["path"] == b[probe]["httpGet"]["path"]
    assert a["args"] == b["args"]


def test_renderer_rejects_unknown_syntax():
    with pytest.raises(ValueError):
        render_text("{{ include \"x\" . }}", {})
    with pytest.raises(KeyError):
        render_text("{{ .Values.nope }}", {"Values": {}})


def _shell_lines(text):
    return [l.strip() for l in text.splitlines()]


def test_one_build_recipe():
    """README and both Dockerfiles install with deploy/install-deps.sh and build with
    deploy/build.sh; no second recipe (raw cmake or apt-get lines) that could drift."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", readme, re.S)
    quick = next(b for b in blocks if "valley-server" in b and "install-deps.sh" in b)
    assert "deploy/install-deps.sh" in quick and "deploy/build.sh" in quick
    assert "cmake" not in quick
    for df in ("Dockerfile", "Dockerfile.cpu"):
        text = (ROOT / "deploy" / df).read_text()
        runs = [l for l in _shell_lines(text) if l.startswith("RUN ")]
        assert any("deploy/install-deps.sh" in r and "deploy/build.sh" in r for r in runs), df
        assert not re.search(r"\bcmake\b|apt-get", text), df
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(b for b in blocks if "tests/run.sh" in b)
    assert "tests/run.sh" in ci and "tests/run.sh" in test_cmd
