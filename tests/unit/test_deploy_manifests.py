"""Deployment files: Kubernetes manifests against the Kubernetes schemas, Prometheus
configurations and the agent's web config through promtool, the Vagrantfile through
`vagrant validate`, and the agreements between them (capabilities, ports, labels, paths).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
FLEET = DEPLOY / "prometheus" / "fleet"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _daemonset() -> dict[str, Any]:
    (ds,) = [d for d in _docs(K8S / "fntax-agent.yaml") if d["kind"] == "DaemonSet"]
    return ds


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = []
    for doc in _docs(K8S / "fntax-agent.yaml"):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        kinds.append(doc["kind"])
    assert kinds == ["Namespace", "ServiceAccount", "ConfigMap", "Secret", "DaemonSet"]


def test_daemonset_has_what_the_probes_need() -> None:
    spec = _daemonset()["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    caps = set(container["securityContext"]["capabilities"]["add"])
    # The same capabilities as the systemd unit.
    unit = (DEPLOY / "fntax-agent.service").read_text()
    unit_caps = {c.removeprefix("CAP_") for line in unit.splitlines() if line.startswith("CapabilityBoundingSet=")
                 for c in line.split("=", 1)[1].split()}
    assert caps == unit_caps
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup",
            "/var/lib/fntax"} <= mounts
    annotations = _daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    (port,) = container["ports"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert f"--listen=0.0.0.0:{port['containerPort']}" in container["args"]
    # The rules in the ConfigMap are where --config points.
    (config_map,) = [d for d in _docs(K8S / "fntax-agent.yaml") if d["kind"] == "ConfigMap"]
    assert "rules" in yaml.safe_load(config_map["data"]["rules.yaml"])
    assert "--config=/etc/fntax/rules/rules.yaml" in container["args"]


def test_unit_and_daemonset_keep_the_same_capabilities_after_loading() -> None:
    """Both pass --keep-capabilities: the agent's default set, granted by both for loading."""
    from profiler.agent.privileges import DEFAULT_KEEP, parse_keep

    (container,) = _daemonset()["spec"]["template"]["spec"]["containers"]
    (k8s_flag,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--keep-capabilities=")]
    unit = (DEPLOY / "fntax-agent.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    (unit_flag,) = [a.split("=", 1)[1] for a in exec_start.split() if a.startswith("--keep-capabilities=")]
    kept = parse_keep(k8s_flag)
    assert kept == parse_keep(unit_flag) == frozenset(DEFAULT_KEEP)
    granted = {c.lower() for c in container["securityContext"]["capabilities"]["add"]}
    assert kept <= granted  # one cannot keep what one was not given
    unit_ambient = {c.removeprefix("CAP_").lower() for line in unit.splitlines()
                    if line.startswith("AmbientCapabilities=") for c in line.split("=", 1)[1].split()}
    assert kept <= unit_ambient


def test_podmonitor_selects_the_daemonset_pods() -> None:
    # No schema ships for the Prometheus Operator's CRDs: check it against the DaemonSet instead.
    (monitor,) = _docs(K8S / "podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    ds = _daemonset()
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["metadata"]["namespace"] == ds["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert endpoint["scheme"] == "https"
    assert {"targetLabel": "job", "replacement": "fntax"} in endpoint["relabelings"]


def _localise(text: str, root: Path) -> str:
    return text.replace("/etc/prometheus/", f"{root}/etc/prometheus/").replace("/etc/fntax/", f"{root}/etc/fntax/")


def _make_files(root: Path) -> None:
    """The files the fleet configs name, under root: fntax's rules, passwords, a real CA and certificates."""
    rules = root / "etc/prometheus/rules/fntax"
    rules.mkdir(parents=True)
    for path in (DEPLOY / "prometheus" / "rules").glob("*.yaml"):
        shutil.copy(path, rules)
    prom = root / "etc/prometheus/fntax"
    (prom / "targets").mkdir(parents=True)
    shutil.copy(FLEET / "targets" / "fntax-agents.yaml", prom / "targets")
    for name in ("agent-password", "remote-write-password"):
        (prom / name).write_text("change-me-fntax\n")
    tls = root / "etc/fntax/tls"
    tls.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fntax-ca",
            "-keyout", str(tls / "ca.key"), "-out", str(tls / "ca.crt"))
    for name, target in (("agent", tls), ("prometheus", prom)):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(target / f"{name}.key"),
                "-out", str(root / f"{name}.csr"))
        openssl("x509", "-req", "-in", str(root / f"{name}.csr"), "-CA", str(tls / "ca.crt"), "-CAkey",
                str(tls / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(target / f"{name}.crt"))
    shutil.copy(tls / "ca.crt", prom / "ca.crt")


@pytest.mark.skipif(shutil.which("promtool") is None or shutil.which("openssl") is None,
                    reason="promtool (Debian's prometheus package) and openssl are needed")
def test_fleet_prometheus_configs_and_agent_web_config(tmp_path: Path) -> None:
    _make_files(tmp_path)
    for name in ("prometheus-edge.yml", "prometheus-central.yml"):
        config = tmp_path / name
        config.write_text(_localise((FLEET / name).read_text(), tmp_path))
        result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    web = tmp_path / "web.yml"
    web.write_text(_localise((FLEET / "agent-web-config.yml").read_text(), tmp_path))
    result = subprocess.run(["promtool", "check", "web-config", str(web)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_fleet_configs_agree_with_the_agent_and_rules() -> None:
    edge = yaml.safe_load((FLEET / "prometheus-edge.yml").read_text())
    (job,) = edge["scrape_configs"]
    assert job["job_name"] == "fntax" and job["scheme"] == "https"
    web = yaml.safe_load((FLEET / "agent-web-config.yml").read_text())
    assert web["tls_server_config"]["client_auth_type"] == "RequireAndVerifyClientCert"
    assert job["tls_config"]["cert_file"]  # the client certificate the agent requires
    assert job["basic_auth"]["username"] in web["basic_auth_users"]
    import bcrypt  # the agent's own dependency
    assert bcrypt.checkpw(b"change-me-fntax", web["basic_auth_users"]["prometheus"].encode())
    (k8s_secret,) = [d for d in _docs(K8S / "fntax-agent.yaml") if d["kind"] == "Secret"]
    k8s_web = yaml.safe_load(k8s_secret["stringData"]["web.yml"])
    assert bcrypt.checkpw(b"change-me-fntax", k8s_web["basic_auth_users"]["prometheus"].encode())
    targets = yaml.safe_load((FLEET / "targets" / "fntax-agents.yaml").read_text())
    assert all(t.endswith(":9636") for group in targets for t in group["targets"])
    central = yaml.safe_load((FLEET / "prometheus-central.yml").read_text())
    assert [Path(p).name for p in central["rule_files"]] == ["fntax-fleet.yaml"]
    assert sorted(Path(p).name for p in edge["rule_files"]) == ["fntax-alerts.yaml", "fntax-recording.yaml"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is needed")
def test_vagrant_prometheus_config(tmp_path: Path) -> None:
    _make_files(tmp_path)
    config = tmp_path / "prometheus.yml"
    config.write_text(_localise((ROOT / "vagrant" / "prometheus.yml").read_text(), tmp_path))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (apt-get install vagrant)")
def test_vagrant_validate() -> None:
    result = subprocess.run(["vagrant", "validate"], cwd=ROOT / "vagrant", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrant_provisioning_reuses_the_project() -> None:
    provision = (ROOT / "vagrant" / "provision.sh").read_text()
    assert "make bootstrap" in provision  # the project's own bootstrap, not a copy of it
    assert "deploy/fntax-agent.service" in provision
    assert "dashboards/provisioning/" in provision and "dashboards/json/" in provision
    # The unit runs /opt/fntax/.venv/bin/fntax: the Vagrantfile puts the repository there.
    assert "/opt/fntax/.venv/bin/fntax" in (DEPLOY / "fntax-agent.service").read_text()
    assert '"/opt/fntax"' in (ROOT / "vagrant" / "Vagrantfile").read_text()
    for name in ("fntax-recording.yaml", "fntax-alerts.yaml", "fntax-fleet.yaml"):
        assert name in provision
