"""The ``swarm`` target: every content change becomes a new Docker Swarm secret.

Swarm secrets are immutable and can never be read back, so rotation works by new names:
version N+1 of ``openai_api_key`` is the secret ``openai_api_key-v4``; each consumer
service is repointed by one update that swaps the secret reference but keeps its target
file (``/run/secrets/openai_api_key`` stays put); syncd then waits for the rollout the way
``docker service update --detach=false`` does, and only afterwards removes old versions.

State lives in labels on the secrets (``syncd.*``), never a value, and every object carries
its installation's name (``syncd.instance``): several installations share one Swarm without
touching each other's objects. The fingerprint HMAC key can't live in a secret (unreadable),
so it is a Swarm *config* (readable back by managers) or, for a stricter setup, a key file.

The package is split by concern: ``settings`` (the config block), ``names`` (Swarm's naming
rules), ``labels`` (the state and who owns it), ``api`` (Docker calls), ``keys`` (the
fingerprint key), ``consumers`` (services, stuck rollouts, doctor), ``repoint`` (which
references one service update swaps), ``convergence`` (the rollout wait) and ``target`` (the
``Target`` interface tying them together).
"""

from syncd.targets.swarm.names import name_problem, object_name
from syncd.targets.swarm.settings import SwarmTargetConfig, SwarmTls
from syncd.targets.swarm.target import MAX_SECRET_BYTES, SwarmTarget

__all__ = [
    "MAX_SECRET_BYTES",
    "SwarmTarget",
    "SwarmTargetConfig",
    "SwarmTls",
    "name_problem",
    "object_name",
]
