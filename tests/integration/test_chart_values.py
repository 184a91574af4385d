"""The chart's values, rendered by the test cluster's helm (``helm template`` and ``helm lint``
need no API server): each value changes what is rendered as it says, the monitoring parts
appear only where their CRDs are served, the alerting rules pass ``promtool check rules`` and
fire as ``promtool test rules`` expects, and every metric the rules and the dashboard query is
one syncd exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.config import load_config
from syncd.metrics import Metrics
from tests.conftest import ROOT
from tests.integration.kube_util import CHART, helm

pytestmark = pytest.mark.timeout(300)

SERVICE_MONITOR = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE = "monitoring.coreos.com/v1/PrometheusRule"
#: What ``rbac.create`` decides on.
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def _values(tmp_path: Path, **values: Any) -> Path:
    doc = {
        "config": {
            "providers": {"local": {"type": "file", "path": "/etc/syncd-keys/keys.yaml"}},
            "secrets": [{"name": "api-key", "from": {"provider": "local", "key": "api_key"}}],
        },
        **values,
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _render(
    kube_env: dict[str, str], tmp_path: Path, *args: str, **values: Any
) -> list[dict[str, Any]]:
    """``helm template rel`` in namespace ``apps`` with these values and extra arguments."""
    out = helm(
        kube_env,
        *("template", "rel", str(CHART), "-n", "apps"),
        *("-f", str(_values(tmp_path, **values)), *args),
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = _one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _configmap(docs: list[dict[str, Any]], name: str = "rel-syncd") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    return doc


# ---------------------------------------------------------------------- image and names


def test_default_image_is_what_build_image_makes(kube_env, tmp_path):
    """The chart installs as shipped on a cluster given ``scripts/build-image``'s image."""
    script = (ROOT / "scripts" / "build-image").read_text()
    built = re.search(r'^tag="\$\{1:-(?P<tag>[^}]+)\}"$', script, re.MULTILINE)
    assert built, "scripts/build-image no longer says its default tag as expected"
    docs = _render(kube_env, tmp_path)
    assert _pod(docs)["containers"][0]["image"] == built["tag"]
    assert _one(docs, "Pod")["spec"]["containers"][0]["image"] == built["tag"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    pinned = _render(kube_env, tmp_path, image={"repository": "registry.example/syncd", "tag": ""})
    assert _pod(pinned)["containers"][0]["image"] == f"registry.example/syncd:{app_version}"


def test_name_overrides(kube_env, tmp_path):
    default = _render(kube_env, tmp_path)
    assert {d["metadata"]["name"] for d in default if d["kind"] != "Service"} <= {
        "rel-syncd",
        "rel-syncd-doctor",
    }
    named = _render(kube_env, tmp_path, nameOverride="secrets")
    deployment = _one(named, "Deployment")
    assert deployment["metadata"]["name"] == "rel-secrets"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "secrets"
    full = _render(kube_env, tmp_path, fullnameOverride="vault-sync")
    names = {d["kind"]: d["metadata"]["name"] for d in full}
    assert names["Deployment"] == names["ConfigMap"] == names["ServiceAccount"] == "vault-sync"
    assert names["Service"] == "vault-sync-metrics"
    assert _pod(full)["serviceAccountName"] == "vault-sync"
    assert _pod(full)["volumes"][0]["configMap"]["name"] == "vault-sync"
    role = _one(full, "RoleBinding")
    assert role["roleRef"]["name"] == "vault-sync"
    assert role["subjects"][0]["name"] == "vault-sync"


def test_common_labels_are_on_every_object(kube_env, tmp_path):
    docs = _render(
        kube_env,
        tmp_path,
        *("--api-versions", SERVICE_MONITOR, "--api-versions", PROMETHEUS_RULE),
        commonLabels={"team": "payments", "app.kubernetes.io/name": "not-the-chart's"},
        namespaces=["other"],
        metrics={"serviceMonitor": {"enabled": True}},
        prometheusRule={"enabled": True},
        grafanaDashboard={"enabled": True},
    )
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "ClusterRole", "Pod"} <= kinds
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["team"] == "payments", doc["metadata"]
        assert labels["app.kubernetes.io/name"] != "not-the-chart's", doc["metadata"]
    template_labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert template_labels["team"] == "payments"
    assert template_labels["app.kubernetes.io/name"] == "syncd"


# ---------------------------------------------------------------------- RBAC and config


def test_rbac_create_false_renders_no_rbac(kube_env, tmp_path):
    for namespaces in ([], ["other"]):
        with_rbac = _render(kube_env, tmp_path, namespaces=namespaces)
        assert RBAC_KINDS & {d["kind"] for d in with_rbac}
        without = _render(kube_env, tmp_path, namespaces=namespaces, rbac={"create": False})
        assert not RBAC_KINDS & {d["kind"] for d in without}
        assert "ServiceAccount" in {d["kind"] for d in without}


def test_existing_configmap_replaces_the_rendered_one(kube_env, tmp_path):
    docs = _render(kube_env, tmp_path, existingConfigMap="my-syncd-config")
    assert "ConfigMap" not in {d["kind"] for d in docs}
    deployment = _one(docs, "Deployment")["spec"]["template"]
    assert deployment["spec"]["volumes"][0] == {
        "name": "config",
        "configMap": {"name": "my-syncd-config"},
    }
    # nothing of the chart's config to checksum: syncd reloads the mounted file itself
    assert "checksum/config" not in (deployment["metadata"].get("annotations") or {})
    assert _one(docs, "Pod")["spec"]["volumes"][0]["configMap"]["name"] == "my-syncd-config"
    rendered = _render(kube_env, tmp_path)
    assert _pod(rendered)["volumes"][0]["configMap"]["name"] == "rel-syncd"
    assert (
        "checksum/config"
        in _one(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    )


# ---------------------------------------------------------------------- the pod


def test_pod_values(kube_env, tmp_path):
    default = _pod(_render(kube_env, tmp_path))
    for key in ("imagePullSecrets", "priorityClassName", "topologySpreadConstraints"):
        assert key not in default
    assert "initContainers" not in default
    assert [c["name"] for c in default["containers"]] == ["syncd"]
    args = default["containers"][0]["args"]

    pod = _pod(
        _render(
            kube_env,
            tmp_path,
            imagePullSecrets=["regcred", {"name": "mirror"}],
            priorityClassName="platform-critical",
            topologySpreadConstraints=[
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {
                    "maxSkew": 2,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"tier": "secrets"}},
                },
            ],
            extraArgs=["--ignore-window"],
            extraContainers=[{"name": "vault-agent", "image": "vault-agent:1"}],
            extraInitContainers=[{"name": "wait", "image": "busybox:1"}],
            podLabels={"azure.workload.identity/use": "true"},
        )
    )
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert pod["priorityClassName"] == "platform-critical"
    zone, host = pod["topologySpreadConstraints"]
    # a constraint without a selector spreads this release's pods; one with its own keeps it
    assert zone["labelSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "syncd", "app.kubernetes.io/instance": "rel"}
    }
    assert host["labelSelector"] == {"matchLabels": {"tier": "secrets"}}
    assert pod["containers"][0]["args"] == [*args, "--ignore-window"]
    assert [c["name"] for c in pod["containers"]] == ["syncd", "vault-agent"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait"]


def test_probes_and_their_timings(kube_env, tmp_path):
    container = _pod(_render(kube_env, tmp_path))["containers"][0]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["periodSeconds"] == 20
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    timings = {
        "initialDelaySeconds": 3,
        "periodSeconds": 7,
        "timeoutSeconds": 2,
        "failureThreshold": 9,
    }
    changed = _pod(
        _render(
            kube_env,
            tmp_path,
            livenessProbe=timings,
            readinessProbe=timings | {"periodSeconds": 11},
            startupProbe=timings | {"failureThreshold": 100},
        )
    )["containers"][0]
    assert {k: changed["livenessProbe"][k] for k in timings} == timings
    assert changed["readinessProbe"]["periodSeconds"] == 11
    assert changed["startupProbe"]["failureThreshold"] == 100
    off = _pod(_render(kube_env, tmp_path, startupProbe={"enabled": False}))["containers"][0]
    assert "startupProbe" not in off
    assert "livenessProbe" in off


def test_a_probe_timing_of_zero_period_is_refused(kube_env, tmp_path):
    run = helm(
        kube_env,
        *("template", "rel", str(CHART)),
        *("-f", str(_values(tmp_path, livenessProbe={"periodSeconds": 0}))),
        check=False,
    )
    assert run.returncode != 0
    assert "periodSeconds" in run.stderr


# ---------------------------------------------------------------------- monitoring


def test_service_monitor_only_where_its_crd_is_served(kube_env, tmp_path):
    monitor = {
        "enabled": True,
        "namespace": "monitoring",
        "scrapeTimeout": "10s",
        "relabelings": [{"targetLabel": "team", "replacement": "payments"}],
        "labels": {"release": "kube-prometheus-stack"},
    }
    absent = _render(kube_env, tmp_path, metrics={"serviceMonitor": monitor})
    assert "ServiceMonitor" not in {d["kind"] for d in absent}
    served = _render(
        kube_env, tmp_path, "--api-versions", SERVICE_MONITOR, metrics={"serviceMonitor": monitor}
    )
    sm = _one(served, "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["apps"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"] == monitor["relabelings"]
    service = _one(served, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    off = _render(kube_env, tmp_path, "--api-versions", SERVICE_MONITOR)
    assert "ServiceMonitor" not in {d["kind"] for d in off}


def _rule_docs(kube_env: dict[str, str], tmp_path: Path, **rule: Any) -> list[dict[str, Any]]:
    return _render(
        kube_env,
        tmp_path,
        "--api-versions",
        PROMETHEUS_RULE,
        prometheusRule={"enabled": True, **rule},
    )


def test_prometheus_rule_only_where_its_crd_is_served(kube_env, tmp_path):
    absent = _render(kube_env, tmp_path, prometheusRule={"enabled": True})
    assert "PrometheusRule" not in {d["kind"] for d in absent}
    assert "PrometheusRule" not in {
        d["kind"] for d in _render(kube_env, tmp_path, "--api-versions", PROMETHEUS_RULE)
    }
    rule = _one(
        _rule_docs(
            kube_env,
            tmp_path,
            namespace="monitoring",
            labels={"release": "kube-prometheus-stack"},
            alertLabels={"team": "payments"},
            staleAfterSeconds=7200,
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == {
        "SyncdSecretStale",
        "SyncdConvergenceFailed",
        "SyncdRolledBack",
        "SyncdFailedVersion",
        "SyncdLeaderCount",
        "SyncdConfigReloadFailed",
        "SyncdSecretExpiring",
    }
    for alert in rules.values():
        assert alert["labels"]["team"] == "payments"
        assert alert["labels"]["severity"] in {"warning", "critical"}
        # this release's series only, as its ServiceMonitor labels them
        assert 'namespace="apps", job="rel-syncd-metrics"' in alert["expr"]
    assert "> 7200" in rules["SyncdSecretStale"]["expr"]
    own = _one(
        _rule_docs(kube_env, tmp_path, selector='cluster="eu", app="syncd"'), "PrometheusRule"
    )
    for group in own["spec"]["groups"]:
        for alert in group["rules"]:
            assert 'cluster="eu", app="syncd"' in alert["expr"]


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool as ``scripts/install-promtool`` builds it (the test command runs that first)."""
    path = subprocess.run(
        [str(ROOT / "scripts" / "install-promtool"), "--print-path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not os.access(path, os.X_OK):
        message = f"promtool is not built (run scripts/install-promtool): {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _check_rules(promtool: str, groups: list[dict[str, Any]], path: Path) -> Any:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_rules_pass_promtool(kube_env, tmp_path, promtool):
    for values in ({}, {"selector": 'cluster="eu"', "alertLabels": {"team": "x"}}):
        rule = _one(_rule_docs(kube_env, tmp_path, **values), "PrometheusRule")
        run = _check_rules(promtool, rule["spec"]["groups"], tmp_path / "rules.yaml")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS: 7 rules found" in run.stdout, run.stdout


def test_rules_fire_when_they_should(kube_env, tmp_path, promtool):
    """``promtool test rules`` on made-up series of this release and of another one (same
    metrics, another job): each alert fires when its condition has held for its ``for``, for
    this release's series only, and not before. Annotations are left out here (promtool
    compares them whole); ``check rules`` above validates their templates."""
    rule = _one(_rule_docs(kube_env, tmp_path), "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:
        for alert in group["rules"]:
            alert.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    own, other = 'namespace="apps", job="rel-syncd-metrics"', 'namespace="apps", job="other"'
    series = [
        # one leader for 10 minutes, then none
        (f'syncd_leader{{{own}, pod="a"}}', "1x10 0x30"),
        (f'syncd_leader{{{other}, pod="z"}}', "1x40"),
        # last synced at time 0, never again; so did the other release's
        (f'syncd_last_success_timestamp_seconds{{{own}, secret="api-key"}}', "0x80"),
        (f'syncd_last_success_timestamp_seconds{{{other}, secret="api-key"}}', "0x80"),
        # one convergence failure at minute 11
        (f'syncd_convergence_failures_total{{{own}, secret="db"}}', "0x10 1x60"),
        # one key expires two hours after time 0, the other in 30 days: the soonest counts,
        # once per secret; a secret expiring in 30 days and the other release's don't fire
        (f'syncd_secret_expiry_timestamp_seconds{{{own}, secret="tls", key="crt"}}', "7200x80"),
        (f'syncd_secret_expiry_timestamp_seconds{{{own}, secret="tls", key="ca"}}', "2592000x80"),
        (f'syncd_secret_expiry_timestamp_seconds{{{own}, secret="far", key="far"}}', "2592000x80"),
        (f'syncd_secret_expiry_timestamp_seconds{{{other}, secret="tls", key="crt"}}', "7200x80"),
    ]

    def expect(alert: str, at: str, *fired: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [{"exp_labels": labels} for labels in fired],
        }

    warning = {"namespace": "apps", "severity": "warning"}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    expect("SyncdLeaderCount", "10m"),
                    expect("SyncdLeaderCount", "14m"),
                    expect("SyncdLeaderCount", "17m", {"severity": "critical"}),
                    expect("SyncdSecretStale", "60m"),
                    expect("SyncdSecretStale", "70m", warning | {"secret": "api-key"}),
                    expect("SyncdConvergenceFailed", "10m"),
                    expect("SyncdConvergenceFailed", "15m", warning | {"secret": "db"}),
                    expect("SyncdConvergenceFailed", "50m"),
                    expect("SyncdRolledBack", "15m"),
                    expect("SyncdSecretExpiring", "5m"),
                    expect("SyncdSecretExpiring", "15m", warning | {"secret": "tls"}),
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_promtool_refuses_a_broken_rule(kube_env, tmp_path, promtool):
    """The check above can fail: one rule with a PromQL error and one with a bad template."""
    rule = _one(_rule_docs(kube_env, tmp_path), "PrometheusRule")
    groups = rule["spec"]["groups"]
    groups[0]["rules"][0]["expr"] = "sum by (secret) (syncd_leader{"
    groups[0]["rules"][1]["annotations"]["description"] = "{{ $labels.secret "
    run = _check_rules(promtool, groups, tmp_path / "broken.yaml")
    assert run.returncode != 0
    assert "FAILED" in run.stdout + run.stderr


# ---------------------------------------------------------------------- metric names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*\w+\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, keywords)."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _RANGE.sub("", expr)
    expr = _GROUPING.sub("", expr)
    names = set()
    for match in _IDENT.finditer(expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_are_found():
    """The extractor the next test relies on (it can't pass by finding nothing)."""
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, secret) (rate(a_bucket{x="y{z}"}[$__rate_interval])))'
        " / on (secret) group_left b_total offset 5m > bool 1e3 or vector(0)"
        ' and time() - c{namespace=~"$namespace"} unless d:recorded'
    ) == {"a_bucket", "b_total", "c", "d:recorded"}


def exported_series() -> set[str]:
    """Every series name syncd's registry exports, by each metric's type."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "syncd.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable
            queries.append(match["expr"])
    return queries


def test_rules_and_dashboard_query_only_metrics_syncd_exports(kube_env, tmp_path):
    exported = exported_series()
    assert {"syncd_syncs_total", "syncd_leader", "syncd_cycle_duration_seconds_bucket"} <= exported
    rule = _one(_rule_docs(kube_env, tmp_path), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    queries = _dashboard_queries()
    used = set()
    for expr in [a["expr"] for a in alerts] + queries:
        names = metric_names(expr)
        assert names, expr
        unknown = names - exported
        assert not unknown, f"{expr!r} queries {sorted(unknown)}, which syncd doesn't export"
        used |= names
    assert {
        "syncd_last_success_timestamp_seconds",
        "syncd_leader",
        "syncd_secret_expiry_timestamp_seconds",
    } <= used


def test_grafana_dashboard_configmap(kube_env, tmp_path):
    assert "syncd-dashboard" not in str(_render(kube_env, tmp_path))
    docs = _render(kube_env, tmp_path, grafanaDashboard={"enabled": True})
    dashboard = _configmap(docs, "rel-syncd-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["syncd.json"]) == json.loads(
        (CHART / "dashboards" / "syncd.json").read_text()
    )
    custom = _configmap(
        _render(
            kube_env,
            tmp_path,
            grafanaDashboard={
                "enabled": True,
                "namespace": "grafana",
                "labelKey": "dashboards",
                "labelValue": "syncd",
                "annotations": {"grafana_folder": "Secrets"},
            },
        ),
        "rel-syncd-dashboard",
    )
    assert custom["metadata"]["namespace"] == "grafana"
    assert custom["metadata"]["labels"]["dashboards"] == "syncd"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["annotations"] == {"grafana_folder": "Secrets"}


# ---------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"colour": "red"}, "colour"),
        ({"defaults": {"keeep": 2}}, "keeep"),
        ({"target": {"namspace": "x"}}, "namspace"),
        ({"secrets": [{"name": "a", "frm": {"provider": "local", "key": "k"}}]}, "frm"),
    ],
)
def test_helm_refuses_a_config_typo(kube_env, tmp_path, config, where):
    values = yaml.safe_load(_values(tmp_path).read_text())
    values["config"] |= config
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(values))
    for command in (("lint", "--strict", str(CHART)), ("template", "rel", str(CHART))):
        run = helm(kube_env, *command, "-f", str(path), check=False)
        assert run.returncode != 0, command
        assert where in run.stdout + run.stderr, command


def test_helm_accepts_the_shipped_examples(kube_env, tmp_path):
    examples = sorted((CHART / "ci").glob("*-values.yaml"))
    assert examples
    for example in examples:
        lint = helm(kube_env, "lint", "--strict", str(CHART), "-f", str(example))
        assert "0 chart(s) failed" in lint.stdout
        out = helm(
            kube_env,
            *("template", "rel", str(CHART), "-n", "apps", "-f", str(example)),
            *("--api-versions", SERVICE_MONITOR, "--api-versions", PROMETHEUS_RULE),
        ).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        path = tmp_path / "syncd.yaml"
        path.write_text(_configmap(docs)["data"]["syncd.yaml"])
        assert load_config(path).secrets
    lint = helm(kube_env, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in lint.stdout


# ---------------------------------------------------------------------- helm test


def test_helm_test_pod_runs_doctor_as_the_release(kube_env, tmp_path):
    docs = _render(kube_env, tmp_path, extraEnv=[{"name": "VAULT_ADDR", "value": "https://v"}])
    pod = _one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec, syncd = pod["spec"], _pod(docs)
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == syncd["serviceAccountName"]
    assert spec["volumes"] == syncd["volumes"]
    (doctor,) = spec["containers"]
    assert doctor["args"][:2] == ["doctor", "--config=/etc/syncd/syncd.yaml"]
    assert doctor["volumeMounts"] == syncd["containers"][0]["volumeMounts"]
    assert doctor["env"] == [{"name": "VAULT_ADDR", "value": "https://v"}]
    assert doctor["securityContext"]["readOnlyRootFilesystem"] is True
    # neither the metrics Service nor the PDB counts it as one of the release's pods
    labels = pod["metadata"]["labels"]
    for selector in (
        _one(docs, "Service")["spec"]["selector"],
        _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items()
    without = _render(kube_env, tmp_path, helmTest={"enabled": False})
    assert "Pod" not in {d["kind"] for d in without}
