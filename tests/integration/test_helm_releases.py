"""The chart's releases on the real API server: one writer through ``helm upgrade``, and many
releases side by side.

kwok plays the kubelets, so a release's pods never run a process. Each pod is played by a real
syncd daemon started here the way the pod would start it: the config the release rendered
into its ConfigMap, the container's args, ``POD_NAME`` set to the pod's name, and the release
ServiceAccount's token, so RBAC is the chart's own. Only the API address (the kubeconfig points
at a counting proxy per process, which attributes every request to the process that sent it)
and the metrics port (every process shares this machine) differ from the pod.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.leader import LeaderElection
from tests.conftest import new_value, run, wait_until
from tests.integration.kube_util import (  # noqa: F401 - ns: a fixture
    CHART,
    Proxy,
    container,
    deployment,
    free_port,
    helm,
    leads,
    ns_fixture,
    rolled_out,
    sa_token,
    secret_names,
    template_secret_refs,
    write_kubeconfig,
)

pytestmark = pytest.mark.timeout(300)

#: The consumer's ``minReadySeconds``: kwok makes a pod ready at once, and this keeps a new
#: pod unavailable (the swap waiting) long enough to upgrade the release in the middle.
SLOW = 20
#: The convergence timeout of the release's config; the chart adds its margin for the pod's
#: ``terminationGracePeriodSeconds``.
TIMEOUT = 45


def _values(root: Path, keys: Path, **extra: Any) -> Path:
    """Chart values syncing one secret, ``api-key``, from ``keys`` every second; ``keep: 0``
    so any version left beside the current one is a leftover."""
    doc = {
        "config": {
            "providers": {"local": {"type": "file", "path": str(keys)}},
            "defaults": {"timeout": f"{TIMEOUT}s"},
            "secrets": [
                {
                    "name": "api-key",
                    "from": {"provider": "local", "key": "api_key"},
                    "refresh": "1s",
                    "keep": 0,
                }
            ],
        },
        **extra,
    }
    path = root / "values.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rendered_config(api: Any, ns: str, release: str) -> dict[str, Any]:
    configmap = api.CoreV1Api().read_namespaced_config_map(f"{release}-syncd", ns)
    config: dict[str, Any] = yaml.safe_load(configmap.data["syncd.yaml"])
    return config


def _ready_pods(api: Any, ns: str, release: str) -> set[str]:
    """The release's pods that are Ready and not being deleted."""
    pods = api.CoreV1Api().list_namespaced_pod(
        ns, label_selector=f"app.kubernetes.io/instance={release}"
    )
    return {
        p.metadata.name
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }


def _versions(api: Any, ns: str) -> set[str]:
    """The Secret names of the versions syncd holds in ``ns``."""
    return {
        s.metadata.name
        for s in api.CoreV1Api().list_namespaced_secret(ns, label_selector="syncd.io/role").items
        if s.metadata.labels["syncd.io/role"] == "version"
    }


def _exists(api: Any, ns: str, secret: str) -> bool:
    return secret in secret_names(api, ns)


def _only(api: Any, ns: str, secret: str) -> bool:
    """``secret`` is the only version left in ``ns``."""
    return _versions(api, ns) == {secret}


def _refs(api: Any, ns: str, name: str) -> set[str]:
    return template_secret_refs(api.AppsV1Api().read_namespaced_deployment(name, ns).spec.template)


def _on(api: Any, ns: str, secret: str) -> bool:
    """The consumer ``web`` references only ``secret`` and has rolled out."""
    return _refs(api, ns, "web") == {secret} and rolled_out(api, ns, "web")


def _consumer(api: Any, ns: str, secret: str) -> None:
    """``web``, one replica, no ReplicaSet history (so an old version is released at once)."""
    pod = {"containers": [container(envFrom=[{"secretRef": {"name": secret}}])]}
    api.AppsV1Api().create_namespaced_deployment(
        ns, deployment("web", pod, replicas=1, revisionHistoryLimit=0)
    )
    wait_until(f"web in {ns} rolled out", lambda: rolled_out(api, ns, "web"))


def _summary(writes: list[tuple[float, str, str]], ns: str) -> str:
    """``{'POST secrets': 1, 'PUT deployments/web': 1, ...}``: what a process wrote."""

    def what(path: str) -> str:
        return path.partition("?")[0].rpartition(f"/namespaces/{ns}/")[2]

    return str(dict(Counter(f"{method} {what(path)}" for _, method, path in writes)))


def _secrets(api: Any, ns: str) -> list[Any]:
    return list(api.CoreV1Api().list_namespaced_secret(ns).items)


class Pod:
    """A real syncd daemon playing one pod of a release, behind a counting proxy of its own."""

    def __init__(
        self,
        *,
        name: str,
        config: dict[str, Any],
        token: str,
        kube_env: dict[str, str],
        root: Path,
        container_args: list[str],
    ) -> None:
        self.name = name
        # only the token authenticates (no client certificate): RBAC is the release's
        self.proxy = Proxy(
            kube_env["SYNCD_KUBE_SERVER"],
            ssl.create_default_context(cafile=kube_env["SYNCD_KUBE_CA"]),
        )
        server = f"http://127.0.0.1:{self.proxy.start()}"
        config = {
            **config,
            "target": {
                **config["target"],
                "kubeconfig": write_kubeconfig(
                    root / f"{name}.kubeconfig", server=server, token=token
                ),
            },
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = root / f"{name}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "syncd"),
                    *(a for a in container_args if not a.startswith("--config=")),
                    *("--config", str(path), "--listen", f"127.0.0.1:{self.port}"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "POD_NAME": name},
            )

    def ready(self) -> bool:
        """What the chart's readiness probe asks (``/readyz``)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                return True
        except OSError:
            return False

    def messages(self) -> list[str]:
        """The daemon's log messages (the chart's args log JSON lines)."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line)["message"] for line in lines if line.startswith("{")]

    def close(self) -> None:
        """Kill the process if it still runs; the proxy keeps what it recorded."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proxy.stop()


def _container_args(api: Any, ns: str, release: str) -> list[str]:
    d = api.AppsV1Api().read_namespaced_deployment(f"{release}-syncd", ns)
    return list(d.spec.template.spec.containers[0].args)


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    """Every Pod a test starts, killed at the end whatever happened."""
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.close()


def _start(
    api: Any, kube_env: dict[str, str], *, root: Path, ns: str, release: str, name: str
) -> Pod:
    """The syncd process for pod ``name`` of ``release``, as the pod would run it."""
    return Pod(
        name=name,
        config=_rendered_config(api, ns, release),
        token=sa_token(api, ns, f"{release}-syncd"),
        kube_env=kube_env,
        root=root,
        container_args=_container_args(api, ns, release),
    )


# ---------------------------------------------------------------------- helm upgrade


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_helm_upgrade_during_a_slow_swap_keeps_one_writer(kube_env, api, ns, tmp_path, pods, stop):
    """Process A (the release's first pod) is waiting for a slow consumer to converge on v2
    when ``helm upgrade`` rolls the release. B (the new pod) starts beside it and the value
    changes again, so B has something to write. Once B is ready the old pod goes and A gets
    SIGTERM, as the kubelet would send it (or SIGKILL, a crash). A finishes its swap within
    the rendered grace period and hands the Lease over (or, killed, leaves B to repair it);
    B then rotates to v3. At no moment do both write, and nothing is left over."""
    apps = api.AppsV1Api()
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"api_key": new_value()}))
    helm(kube_env, "install", "rel", str(CHART), "-n", ns, "-f", str(_values(tmp_path, keys)))
    try:
        config = _rendered_config(api, ns, "rel")
        election = LeaderElection.model_validate(config["target"]["leader_election"])
        (first,) = wait_until("the release's pod", lambda: _ready_pods(api, ns, "rel"))
        a = _start(api, kube_env, root=tmp_path, ns=ns, release="rel", name=first)
        pods.append(a)
        wait_until("A leads", lambda: leads(a.port))
        wait_until("v1", lambda: "api-key-v1" in secret_names(api, ns))
        _consumer(api, ns, "api-key-v1")
        apps.patch_namespaced_deployment("web", ns, {"spec": {"minReadySeconds": SLOW}})

        keys.write_text(yaml.safe_dump({"api_key": new_value()}))
        wait_until("A repoints web to v2", lambda: _refs(api, ns, "web") == {"api-key-v2"})
        repointed = time.monotonic()
        helm(
            kube_env,
            *("upgrade", "rel", str(CHART), "-n", ns, "--reuse-values"),
            *("--set", "podAnnotations.rolled=again"),
        )
        (second,) = wait_until(
            "the upgrade's new pod ready", lambda: _ready_pods(api, ns, "rel") - {first}
        )
        b = _start(api, kube_env, root=tmp_path, ns=ns, release="rel", name=second)
        pods.append(b)
        wait_until("B ready", b.ready)
        # a change while both run: only the Lease holder may act on it
        keys.write_text(yaml.safe_dump({"api_key": new_value()}))
        # maxUnavailable 0: the old pod goes only once the new one is ready
        wait_until("the old pod stopping", lambda: first not in _ready_pods(api, ns, "rel"))
        pod_spec = apps.read_namespaced_deployment("rel-syncd", ns).spec.template.spec
        grace = pod_spec.termination_grace_period_seconds
        assert grace == TIMEOUT + 30
        assert not rolled_out(api, ns, "web"), "the swap must still be waiting at the stop"
        assert not leads(b.port)
        stopped = time.monotonic()
        if stop == "sigterm":
            a.proc.send_signal(signal.SIGTERM)
            assert a.proc.wait(timeout=grace) == 0  # the kubelet's kill deadline
        else:
            a.proc.kill()
            a.proc.wait()
        exited = time.monotonic()
        if stop == "sigterm":
            # A let its cycle finish: the consumer converged on v2 before A exited
            assert _on(api, ns, "api-key-v2")
            assert "api-key: update v2" in a.messages()
        wait_until("B leads", lambda: leads(b.port), timeout=election.duration + 15)
        takeover = time.monotonic() - exited
        lease = api.CoordinationV1Api().read_namespaced_lease("syncd-leader-rel", ns)
        assert lease.spec.holder_identity == second
        apps.patch_namespaced_deployment("web", ns, {"spec": {"minReadySeconds": 0}})
        wait_until("web on v3", lambda: _on(api, ns, "api-key-v3"), timeout=TIMEOUT)
        wait_until("only v3 left", partial(_only, api, ns, "api-key-v3"))
    finally:
        helm(kube_env, "uninstall", "rel", "-n", ns)

    a_writes, b_writes = a.proxy.writes(), b.proxy.writes()
    print(
        f"\n{stop}: A stopped {stopped - repointed:.1f}s into its wait for web "
        f"(minReadySeconds {SLOW}) and exited {exited - stopped:.1f}s later (grace {grace}s); "
        f"B led {takeover:.1f}s after A exited (lease {election.duration:g}s)\n"
        f"  A wrote {_summary(a_writes, ns)}\n  B wrote {_summary(b_writes, ns)}"
    )
    assert a_writes and b_writes
    # one writer at a time: all of A's writes, then all of B's, and none of B's while A lived
    assert max(t for t, _, _ in a_writes) < min(t for t, _, _ in b_writes)
    assert min(t for t, _, _ in b_writes) > exited
    v1 = ("DELETE", f"/api/v1/namespaces/{ns}/secrets/api-key-v1")
    if stop == "sigterm":
        assert exited - repointed > SLOW - 2, "A waited for the slow consumer before exiting"
        assert takeover < election.renew_every + 4, "a released Lease is taken at once"
    else:
        # killed mid-wait: A never collected v1; B waited out the Lease, then repaired
        assert v1 not in {(m, p) for _, m, p in a_writes}
        assert v1 in {(m, p) for _, m, p in b_writes}
        assert election.duration - election.renew_every < takeover
        assert takeover < election.duration + election.renew_every + 4


# ---------------------------------------------------------------------- many releases


def test_four_releases_rotate_at_once_each_in_its_own_namespace(kube_env, api, tmp_path, pods):
    """Four releases, one namespace each, each with a secret of the same logical name and a
    consumer. Their four daemons rotate at the same moment: each converges in its own
    namespace only, on its own value, under its own instance and Lease; and one release's
    token can't reach another's namespace."""
    core = api.CoreV1Api()
    tag = uuid.uuid4().hex[:6]
    releases = [(f"team{i}", f"team{i}-{tag}") for i in range(4)]
    keys = {release: tmp_path / release / "keys.yaml" for release, _ in releases}
    for release, ns in releases:
        core.create_namespace({"metadata": {"name": ns}})
        keys[release].parent.mkdir()
        keys[release].write_text(yaml.safe_dump({"api_key": new_value()}))
    try:
        with ThreadPoolExecutor(len(releases)) as pool:
            list(
                pool.map(
                    lambda r: helm(
                        kube_env,
                        *("install", r[0], str(CHART), "-n", r[1]),
                        *("-f", str(_values(keys[r[0]].parent, keys[r[0]]))),
                    ),
                    releases,
                )
            )
        by_release: dict[str, Pod] = {}
        for release, ns in releases:
            (name,) = wait_until(f"{release}'s pod", partial(_ready_pods, api, ns, release))
            by_release[release] = _start(
                api, kube_env, root=keys[release].parent, ns=ns, release=release, name=name
            )
            pods.append(by_release[release])
        for release, ns in releases:
            wait_until(f"{release} leads", partial(leads, by_release[release].port))
            wait_until(f"{release}'s v1", partial(_exists, api, ns, "api-key-v1"))
            _consumer(api, ns, "api-key-v1")

        values = {release: new_value() for release, _ in releases}
        started = time.monotonic()
        for release, value in values.items():
            keys[release].write_text(yaml.safe_dump({"api_key": value}))
        for release, ns in releases:
            wait_until(f"{release}'s web on v2", partial(_on, api, ns, "api-key-v2"))
        converged = time.monotonic() - started
        for release, ns in releases:
            wait_until(f"{release}'s v1 collected", partial(_only, api, ns, "api-key-v2"))

        for release, ns in releases:
            v2 = core.read_namespaced_secret("api-key-v2", ns)
            assert base64.b64decode(v2.data["api-key"]).decode() == values[release]
            managed = core.list_namespaced_secret(
                ns, label_selector="app.kubernetes.io/managed-by=syncd"
            ).items
            assert {s.metadata.name for s in managed} == {
                "api-key-v2",
                f"syncd-fingerprint-key-{release}",
            }
            assert {s.metadata.labels["syncd.io/instance"] for s in managed} == {release}
            lease = api.CoordinationV1Api().read_namespaced_lease(f"syncd-leader-{release}", ns)
            assert lease.spec.holder_identity == by_release[release].name
            requests = by_release[release].proxy.requests
            assert by_release[release].proxy.writes()
            strays = [p for _, _, p in requests if "/namespaces/" in p]
            assert all(f"/namespaces/{ns}/" in p for p in strays), strays

        # release 0's token, its config pointed at release 1's namespace: denied, nothing written
        (own, own_ns), (_, other_ns) = releases[0], releases[1]
        before = {s.metadata.name: s.metadata.resource_version for s in _secrets(api, other_ns)}
        proxy = Proxy(
            kube_env["SYNCD_KUBE_SERVER"],
            ssl.create_default_context(cafile=kube_env["SYNCD_KUBE_CA"]),
        )
        server = f"http://127.0.0.1:{proxy.start()}"
        try:
            config = _rendered_config(api, own_ns, own)
            config["target"]["namespace"] = other_ns
            config["target"]["kubeconfig"] = write_kubeconfig(
                tmp_path / "cross.kubeconfig",
                server=server,
                token=sa_token(api, own_ns, f"{own}-syncd"),
            )
            path = tmp_path / "cross.yaml"
            path.write_text(yaml.safe_dump(config))
            denied = run(path)
        finally:
            proxy.stop()
        assert "RBAC denied" in (denied.items[0].error or ""), denied.items
        assert proxy.requests, "the cycle did ask"
        assert proxy.writes() == []
        after = {s.metadata.name: s.metadata.resource_version for s in _secrets(api, other_ns)}
        assert after == before
    finally:
        for pod in pods:
            pod.close()
        for release, ns in releases:
            helm(kube_env, "uninstall", release, "-n", ns, check=False)
            core.delete_namespace(ns)
    print(
        f"\nfour releases rotated at once: all four consumers on v2 {converged:.1f}s after the "
        f"change; writes per process {[len(p.proxy.writes()) for p in pods]}"
    )


# ---------------------------------------------------------------------- helm test


def _pod_phase(api: Any, ns: str, name: str) -> str | None:
    pods = api.CoreV1Api().list_namespaced_pod(ns, field_selector=f"metadata.name={name}").items
    return pods[0].status.phase if pods else None


def test_helm_test_runs_doctor_as_the_release(kube_env, api, ns, tmp_path):
    """``helm test`` on an installed release. Its hook Pod is admitted with the release's
    ServiceAccount and scheduled; kwok plays the kubelet but runs no container, so the Pod's
    process is run here as the kubelet would run it: ``syncd doctor`` with the Pod's own
    args, the config the release rendered and a token of the Pod's ServiceAccount (RBAC is
    the chart's). Its exit code becomes the Pod's phase, as a kubelet reports it, and
    ``helm test`` reports that phase."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"api_key": new_value()}))
    helm(kube_env, "install", "rel", str(CHART), "-n", ns, "-f", str(_values(tmp_path, keys)))
    try:
        config = _rendered_config(api, ns, "rel")
        token = sa_token(api, ns, "rel-syncd")
        config["target"]["kubeconfig"] = write_kubeconfig(
            tmp_path / "sa.kubeconfig",
            server=kube_env["SYNCD_KUBE_SERVER"],
            token=token,
            ca=kube_env["SYNCD_KUBE_CA"],
        )
        path = tmp_path / "syncd.yaml"
        path.write_text(yaml.safe_dump(config))
        # what the release's own pod would have done by now: a first sync, and an app uses it
        assert run(path).ok
        _consumer(api, ns, "api-key-v1")
        test = subprocess.Popen(
            [
                *(kube_env["SYNCD_KUBE_HELM"], "--kubeconfig", kube_env["KUBECONFIG"]),
                *("test", "rel", "-n", ns, "--timeout", "120s"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            name = "rel-syncd-doctor"
            wait_until("the test pod running", lambda: _pod_phase(api, ns, name) == "Running")
            pod = api.CoreV1Api().read_namespaced_pod(name, ns)
            assert pod.metadata.annotations["helm.sh/hook"] == "test"
            assert pod.spec.service_account_name == "rel-syncd"
            assert pod.spec.node_name, "scheduled"
            (container,) = pod.spec.containers
            assert container.args[0] == "doctor"
            doctor = subprocess.run(
                [
                    *(sys.executable, "-m", "syncd"),
                    *(a for a in container.args if not a.startswith("--config=")),
                    *("--config", str(path)),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            assert "no problems found" in doctor.stdout
            api.CoreV1Api().patch_namespaced_pod_status(
                name, ns, {"status": {"phase": "Succeeded"}}
            )
            out, err = test.communicate(timeout=120)
        finally:
            if test.poll() is None:
                test.kill()
                test.wait()
        assert test.returncode == 0, out + err
        assert re.search(r"TEST SUITE:\s+rel-syncd-doctor", out), out
        assert re.search(r"Phase:\s+Succeeded", out), out
    finally:
        helm(kube_env, "uninstall", "rel", "-n", ns)
