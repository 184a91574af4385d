"""Workloads whose health a test controls: pods that never become Ready on a Secret of the
test's choosing, and the checks that tell a hung rollout from a finished one.

The test cluster's kwok runs the stage ``tools/kube/stages/pod-unready.yaml``: a pod whose spec
references the Secret named in its own annotation :data:`UNREADY_WITH` (through a ``secret``
or projected volume, ``envFrom[].secretRef`` or ``env[].valueFrom.secretKeyRef``, in a
container or an init container) goes Running but stays not Ready (``Ready=False``, reason
``ContainersNotReady``) until it is deleted. Every other pod becomes Ready as before. So a
template annotated ``{UNREADY_WITH: "app-v2"}`` rolls out on Secret ``app-v1`` and hangs
once repointed at ``app-v2``, like a release whose new Secret breaks the app.

What the cluster then does (measured on v1.37.2 with kwok v0.8.0): a Deployment with
``progressDeadlineSeconds: 10`` reports ``ProgressDeadlineExceeded`` 10.3-11.1 s after the
repoint, and once repointed at the good Secret is settled again within half a second (its old
pods never went away). A StatefulSet with the default ``OrderedReady`` policy recreates its
highest ordinal on the bad revision and, repointed back, stays stuck (3 minutes watched) until
that unready pod is deleted (:func:`unstick_statefulset`); then it settles in under a second.
A Job's pod held unready is still completed by kwok's ``pod-complete`` stage.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_until
from tests.integration.kube_util import container, deployment, rolled_out

#: The pod annotation the kwok stage reads: pods that reference the Secret it names never
#: become Ready.
UNREADY_WITH = "syncd-test/unready-with"

#: The name of the volume through which :func:`secret_pod_spec` mounts its Secret; a
#: strategic-merge patch that names it (:func:`repoint`) swaps the Secret.
SECRET_VOLUME = "app-secret"

#: The label the StatefulSet controller puts on each pod: the revision it runs.
REVISION_LABEL = "controller-revision-hash"


def secret_pod_spec(secret: str) -> dict[str, Any]:
    """A pod spec whose one container mounts Secret ``secret`` (volume :data:`SECRET_VOLUME`)."""
    mount = {"name": SECRET_VOLUME, "mountPath": "/etc/app", "readOnly": True}
    return {
        "containers": [container(volumeMounts=[mount])],
        "volumes": [{"name": SECRET_VOLUME, "secret": {"secretName": secret}}],
    }


def _template_metadata(name: str, unready_with: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {"app": name}}
    if unready_with is not None:
        meta["annotations"] = {UNREADY_WITH: unready_with}
    return meta


def health_deployment(
    namespace: str,
    name: str,
    secret: str,
    *,
    unready_with: str | None,
    replicas: int = 2,
    progress_deadline_seconds: int = 10,
) -> dict[str, Any]:
    """A Deployment of ``replicas`` pods mounting ``secret``, whose pods stay unready while
    they reference ``unready_with`` (None: no annotation, always Ready).

    A rolling update with ``maxUnavailable: 0, maxSurge: 1``: a bad Secret leaves one new,
    unready pod beside the old ones, and ``ProgressDeadlineExceeded`` after
    ``progress_deadline_seconds``.
    """
    manifest = deployment(
        name,
        secret_pod_spec(secret),
        replicas=replicas,
        progressDeadlineSeconds=progress_deadline_seconds,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
    )
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["template"]["metadata"] = _template_metadata(name, unready_with)
    return manifest


def health_statefulset(
    namespace: str,
    name: str,
    secret: str,
    *,
    unready_with: str | None,
    replicas: int = 2,
) -> dict[str, Any]:
    """A StatefulSet of ``replicas`` pods mounting ``secret``, whose pods stay unready while
    they reference ``unready_with`` (None: no annotation, always Ready).

    The defaults a chart usually keeps: ``OrderedReady`` pods and a ``RollingUpdate`` that
    replaces the highest ordinal first. ``serviceName`` names a Service nobody creates; kwok
    doesn't need it.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": _template_metadata(name, unready_with),
                "spec": secret_pod_spec(secret),
            },
        },
    }


def repoint(secret: str) -> dict[str, Any]:
    """A strategic-merge patch for a workload made here: mount ``secret`` instead."""
    volume = {"name": SECRET_VOLUME, "secret": {"secretName": secret}}
    return {"spec": {"template": {"spec": {"volumes": [volume]}}}}


def pod_ready(pod: Any) -> bool:
    """Whether a pod (a ``V1Pod``) has condition ``Ready=True``."""
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def held_unready(pod: Any) -> bool:
    """Whether the kwok stage holds the pod: Running, not Ready, and not being deleted."""
    return bool(
        pod.metadata.deletion_timestamp is None
        and pod.status.phase == "Running"
        and not pod_ready(pod)
    )


def workload_pods(api: Any, ns: str, name: str) -> list[Any]:
    """The pods of a workload made here (label ``app=name``), by name."""
    pods = api.CoreV1Api().list_namespaced_pod(ns, label_selector=f"app={name}").items
    return sorted(pods, key=lambda p: p.metadata.name)


def deadline_exceeded(api: Any, ns: str, name: str) -> bool:
    """Whether the Deployment reports ``Progressing=False``, reason ``ProgressDeadlineExceeded``."""
    d = api.AppsV1Api().read_namespaced_deployment(name, ns)
    return any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
        for c in (d.status.conditions or [])
    )


def deployment_settled(api: Any, ns: str, name: str) -> bool:
    """Rolled out (:func:`~tests.integration.kube_util.rolled_out`), every older ReplicaSet
    scaled to 0 and nothing but ``replicas`` Ready pods left: no rollout in flight at all."""
    if not rolled_out(api, ns, name):
        return False
    d = api.AppsV1Api().read_namespaced_deployment(name, ns)
    revision = (d.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
    for rs in api.AppsV1Api().list_namespaced_replica_set(ns, label_selector=f"app={name}").items:
        owners = {o.uid for o in rs.metadata.owner_references or []}
        current = (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
        if (
            d.metadata.uid in owners
            and current != revision
            and (rs.spec.replicas or rs.status.replicas)
        ):
            return False
    pods = [p for p in workload_pods(api, ns, name) if p.metadata.deletion_timestamp is None]
    return len(pods) == d.spec.replicas and all(pod_ready(p) for p in pods)


def statefulset_rolled_out(api: Any, ns: str, name: str) -> bool:
    """What ``kubectl rollout status statefulset`` waits for (RollingUpdate, no partition):
    every replica Ready and on the update revision."""
    s = api.AppsV1Api().read_namespaced_stateful_set(name, ns)
    st = s.status
    return bool(
        (st.observed_generation or 0) >= s.metadata.generation
        and (st.ready_replicas or 0) == s.spec.replicas
        and (st.updated_replicas or 0) == s.spec.replicas
        and st.update_revision is not None
        and st.current_revision == st.update_revision
    )


def statefulset_stuck_pods(api: Any, ns: str, name: str) -> list[str]:
    """The StatefulSet's pods that are not Ready and run another revision than the update
    revision: with ``OrderedReady`` the controller waits for them forever (it replaces a pod
    of an old revision only once every pod is Ready), so only deleting them moves it on."""
    update = api.AppsV1Api().read_namespaced_stateful_set(name, ns).status.update_revision
    return [
        p.metadata.name
        for p in workload_pods(api, ns, name)
        if p.metadata.deletion_timestamp is None
        and not pod_ready(p)
        and (p.metadata.labels or {}).get(REVISION_LABEL) != update
    ]


def unstick_statefulset(api: Any, ns: str, name: str) -> list[str]:
    """Delete :func:`statefulset_stuck_pods` (the documented way out of a bad rollout under
    ``OrderedReady``); the controller recreates them on the update revision. Their names."""
    stuck = statefulset_stuck_pods(api, ns, name)
    for pod in stuck:
        api.CoreV1Api().delete_namespaced_pod(pod, ns)
    return stuck


def web_unready_on_v2(api: Any, ns: str) -> None:
    """Deployment ``web`` on ``app-v1``, rolled out, whose pods never get ready on ``app-v2``:
    the failing rotation of the rollback, retry, status and Events tests."""
    api.AppsV1Api().create_namespaced_deployment(
        ns, health_deployment(ns, "web", "app-v1", unready_with="app-v2")
    )
    wait_until("web on v1", lambda: deployment_settled(api, ns, "web"), timeout=60)
