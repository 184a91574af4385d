"""The kubernetes target's name-collision check against brute force, for generated names.

No cluster needed: ``validate_set`` must refuse exactly the pairs of secrets whose Secret
names can ever meet. Brute force enumerates the first versions of both; the exact check must
agree with it for every naming template and every pair of (lossy) logical names.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from syncd.config import SecretSpec
from syncd.targets.kubernetes.naming import (
    KubernetesTargetConfig,
    collisions,
    dns_name,
    names_of,
    overlap,
    version_name,
)

TEMPLATES = [
    "{name}-v{version}",
    "{name}{version}",
    "{version}{name}",
    "{name}-{version}-{name}",
    "x{name}.{version}",
    "{name}.v{version}.x",
]
#: Enough versions for every alignment of names this short.
VERSIONS = range(1, 1200)


class _Ref(BaseModel):
    provider: str


def _spec(name: str, strategy: str) -> SecretSpec[Any]:
    return SecretSpec[_Ref].model_validate(
        {"name": name, "from": {"provider": "p"}, "strategy": strategy}
    )


def _all_names(naming: str, name: str, strategy: str) -> set[str]:
    if strategy == "in-place":
        return {dns_name(name)}
    return {version_name(naming, name, v) for v in VERSIONS}


names = st.text(alphabet="ab1_-.", min_size=1, max_size=4).filter(lambda n: bool(dns_name(n)))
strategies = st.sampled_from(["versioned", "in-place"])


@settings(max_examples=400, deadline=None)
@given(
    naming=st.sampled_from(TEMPLATES),
    first=names,
    second=names,
    first_strategy=strategies,
    second_strategy=strategies,
)
def test_overlap_is_exactly_brute_force(naming, first, second, first_strategy, second_strategy):
    config = KubernetesTargetConfig(type="kubernetes", naming=naming)
    a, b = _spec(first, first_strategy), _spec(second, second_strategy)
    meet = bool(
        _all_names(naming, first, first_strategy) & _all_names(naming, second, second_strategy)
    )
    assert overlap(names_of(a, config), names_of(b, config)) == meet
    if first != second:
        assert bool(collisions([a, b], config)) == meet


def test_one_clash_among_a_thousand_secrets_is_found_and_named():
    config = KubernetesTargetConfig(type="kubernetes")
    specs = [_spec(f"secret-{i}", "versioned") for i in range(1000)]
    assert collisions(specs, config) == []
    clash = [*specs, _spec("SECRET_7", "versioned")]
    ((index, problem),) = collisions(clash, config)
    assert index == 1000
    assert "'SECRET_7' (secret-7-v<N>) and 'secret-7' (secret-7-v<N>)" in problem
