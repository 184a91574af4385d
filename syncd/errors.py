"""Error types with messages a user can act on.

Every message names where the problem is (config file and place, provider and path, or the
target object) and never carries a secret value: values only ever travel as ``bytes`` inside
the engine, and nothing here formats one.
"""

from __future__ import annotations

from dataclasses import dataclass


class SyncdError(Exception):
    """Base for every error syncd reports to a user."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        place = f" {self.location}:" if self.location else ""
        return f"{where}:{place} {self.message}"


class ConfigError(SyncdError):
    """The config is invalid; carries every issue found so a user can fix them in one go."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ProviderError(SyncdError):
    """A provider could not answer for one reference (auth, missing, network, throttled...)."""

    def __init__(self, provider: str, ref: str, message: str, *, transient: bool = False) -> None:
        self.provider = provider
        self.ref = ref
        #: what went wrong, without the provider and reference the full message starts with
        self.reason = message
        self.transient = transient
        super().__init__(f"provider {provider!r}, {ref}: {message}")


class TargetError(SyncdError):
    """The target refused or failed an operation."""

    @property
    def transient(self) -> bool:
        """Whether the failure may pass by itself (unreachable, throttled, restarting);
        subclasses that can tell say so."""
        return False


class ConvergenceError(TargetError):
    """A consumer did not converge on a new version (timeout, paused, rolled back).

    ``blame`` says whether the failure may be the version's: a rollout that failed or timed
    out may be, and is rolled back; one an operator paused (a paused Deployment, an Argo
    Rollout waiting for promotion) is not, and is only reported.
    """

    def __init__(self, message: str, *, blame: bool = True) -> None:
        super().__init__(message)
        self.blame = blame


class NotLeaderError(TargetError):
    """This process may not write now: it doesn't hold (or can't be sure it still holds) the
    leader lease."""
