"""The ``kubernetes`` target: immutable versioned Secrets, workload repointing, rollout wait.

Each change is a new ``immutable: true`` Secret ``<name>-v<N>`` (the name mapped to DNS-1123)
whose labels and annotations say what it is and which installation it belongs to; never a
value. Every consumer (Deployment, StatefulSet, DaemonSet, CronJob, and served custom
workloads such as Argo Rollouts) that references a version is repointed by rewriting every
Secret reference in its pod templates in one guarded update, then syncd waits as ``kubectl
rollout status`` does. A version stays while any pod spec in the namespace references it
(ReplicaSets and ControllerRevisions that ``kubectl rollout undo`` goes back to, Jobs, Pods,
PodTemplates): ``protected()`` scans them all by shape, not by a path per kind.

``strategy: in-place`` is for consumers that can't be repointed (a name baked into a chart):
one stable-name Secret is updated in place, keeping what syncd doesn't own, and its consumers
restarted through a pod-template annotation holding the version. Its "object names" carry
the version (``ns/name@v3``) so the engine's stale-consumer logic applies unchanged.

Object names are ``namespace/name`` so one config can span namespaces.

The package, by concern: ``naming`` (settings and offline rules), ``objects`` (labels,
annotations, ownership), ``podspec`` (references inside any object), ``rollout``
(convergence), ``versions`` (the Secrets), ``consumers`` (the workloads), ``target`` (the
Target interface).
"""

from syncd.targets.kubernetes.naming import KubernetesTargetConfig, dns_name
from syncd.targets.kubernetes.target import KubernetesTarget

__all__ = ["KubernetesTarget", "KubernetesTargetConfig", "dns_name"]
