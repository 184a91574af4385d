"""What each command does, once the command line has been parsed (``syncd.cli.parser``).

Heavy imports (the engine, pydantic, the SDKs) happen inside the commands, so ``--help``,
``version`` and completion stay fast.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

from syncd.cli.output import (
    print_errors,
    print_history,
    print_json,
    print_result,
    print_status,
    result_body,
)
from syncd.cli.parser import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Invocation
from syncd.display import shown

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.model import PlanItem

#: The extras a user installs for a provider or target (``pip install 'syncd[aws]'``).
_EXTRAS = ("vault", "aws", "azure", "kubernetes", "swarm")


def load(path: str) -> Config | None:
    """The config, or ``None`` after printing every issue as ``error: FILE:LINE: ...``."""
    from syncd.config import load_config
    from syncd.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return None


def cmd_check(path: str, config: Config | None, *, output: str) -> int:
    """Exit 0 when ``config`` loaded; the issues were printed by ``load`` otherwise."""
    if output == "json":
        print_json(
            "ConfigCheck",
            {
                "config": path,
                "valid": config is not None,
                "secrets": len(config.secrets) if config is not None else None,
            },
        )
    elif config is not None:
        print(f"{path}: ok ({len(config.secrets)} secrets)")
    return EXIT_OK if config is not None else EXIT_ERROR


def cmd_schema() -> int:
    """Print the config JSON Schema."""
    from syncd.config import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def installed_extras() -> dict[str, dict[str, str | None]]:
    """Per extra, each package it needs and its installed version (``None``: missing),
    read from syncd's own metadata so the list can't drift from ``pyproject.toml``."""
    from importlib import metadata

    found: dict[str, dict[str, str | None]] = {extra: {} for extra in _EXTRAS}
    for requirement in metadata.requires("syncd") or []:
        marker = re.search(r"""extra\s*==\s*["']([\w-]+)["']""", requirement)
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if marker is None or name is None or marker.group(1) not in found:
            continue
        try:
            version: str | None = metadata.version(name.group(0))
        except metadata.PackageNotFoundError:
            version = None
        found[marker.group(1)][name.group(0)] = version
    return found


def syncd_version() -> str:
    """The installed syncd's version (the source tree's when it isn't installed)."""
    from importlib import metadata

    try:
        return metadata.version("syncd")
    except metadata.PackageNotFoundError:  # run from a source tree that isn't installed
        from syncd import __version__

        return __version__


def cmd_version(*, output: str, short: bool = False) -> int:
    """syncd's version, Python's, and which extras can run here (``short``: ``--version``,
    the version alone)."""
    import platform

    if short:
        print(f"syncd {syncd_version()}")
        return EXIT_OK
    extras = installed_extras()
    python = platform.python_version()
    if output == "json":
        print_json(
            "Version",
            {
                "version": syncd_version(),
                "python": python,
                "implementation": platform.python_implementation(),
                "extras": {
                    extra: {
                        "installed": bool(packages) and None not in packages.values(),
                        "packages": packages,
                    }
                    for extra, packages in extras.items()
                },
            },
        )
        return EXIT_OK
    print(f"syncd {syncd_version()}")
    print(f"python {python} ({platform.python_implementation()})")
    for extra, packages in extras.items():
        state = ", ".join(f"{name} {version or 'missing'}" for name, version in packages.items())
        ok = bool(packages) and None not in packages.values()
        hint = "" if ok else f"   (pip install 'syncd[{extra}]')"
        print(f"{extra:<11} {state}{hint}")
    return EXIT_OK


def cmd_completion(shell: str) -> int:
    """Print the completion script (argcomplete's, which asks ``syncd`` itself for the
    words, so it always matches this version's commands and flags)."""
    from argcomplete.shell_integration import shellcode

    print(shellcode(["syncd"], shell=shell))
    return EXIT_OK


def cmd_names(config: Config, *, output: str) -> int:
    """Print ``<NAME>_SECRET=<name>-v<N>`` (or JSON) for every secret that has a version."""
    from syncd.engine import Engine
    from syncd.errors import SyncdError

    engine = Engine(config)
    try:
        existing = engine.target.list_versions([s.name for s in config.secrets])
        expansion = engine.expand(config.secrets, existing)
        current: dict[str, str] = {}
        missing = []
        for secret in expansion.secrets:
            versions = existing.get(secret.name)
            if versions:
                latest = max(versions, key=lambda v: v.version)
                current[secret.name] = engine.target.reference_name(latest)
            else:
                missing.append(secret.name)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        engine.close()
    print_errors(expansion.errors)
    if output == "json":
        print_json("Names", {"names": current, "missing": missing})
    else:
        variables: dict[str, str] = {}
        for name in current:
            variable = f"{env_var_name(name)}_SECRET"
            if variable in variables:
                print(
                    f"error: {variables[variable]!r} and {name!r} both become {variable}; "
                    "use -o json",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            variables[variable] = name
        for variable, name in variables.items():
            print(f"{variable}={current[name]}")
    for name in missing:
        print(
            f"error: {shown(name)}: no version exists yet (run syncd --once first)",
            file=sys.stderr,
        )
    return EXIT_ERROR if missing else EXIT_OK


def cmd_doctor(config: Config, *, output: str) -> int:
    """Print each problem, then each warning, with its subject and fix; exit 1 when there
    are problems (warnings, what doctor couldn't judge, don't fail it)."""
    from syncd.doctor import diagnose
    from syncd.errors import SyncdError

    try:
        findings = diagnose(config)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    problems = [f for f in findings if not f.warning]
    warnings = [f for f in findings if f.warning]
    if output == "json":
        print_json(
            "DoctorReport",
            {
                "problems": [
                    {"subject": f.subject, "problem": f.problem, "fix": f.fix} for f in problems
                ],
                "warnings": [
                    {"subject": f.subject, "warning": f.problem, "fix": f.fix} for f in warnings
                ],
            },
        )
        return EXIT_ERROR if problems else EXIT_OK
    for finding in problems:
        print(f"{finding.subject}: {finding.problem}\n  fix: {finding.fix}")
    for finding in warnings:
        print(f"warning: {finding.subject}: {finding.problem}\n  fix: {finding.fix}")
    if not problems:
        count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
        print("no problems found" + (f" ({count})" if warnings else ""))
    return EXIT_ERROR if problems else EXIT_OK


def cmd_import(config: Config, *, names: list[str] | None, trust: bool, output: str) -> int:
    """Adopt hand-made secrets; exit 1 when any secret could not be imported."""
    from syncd.engine import Engine

    engine = Engine(config)
    try:
        items = engine.import_existing(names=names, trust=trust)
    finally:
        engine.close()
    print_errors(items)
    if output == "json":
        print_json(
            "ImportResult",
            {
                "secrets": [
                    {
                        "name": i.name,
                        "action": i.action,
                        "version": i.version,
                        "error": i.error_document(),
                    }
                    for i in items
                ]
            },
        )
    for item in items if output == "text" else []:
        if item.error:
            continue
        if item.action == "import":
            print(f"* {shown(item.name)}: imported as v{item.version}")
        elif item.version is not None:
            print(f"= {shown(item.name)}: already managed (v{item.version})")
        else:
            print(f"= {shown(item.name)}: nothing named like it in the target")
    return EXIT_ERROR if any(i.error for i in items) else EXIT_OK


def cmd_status(config: Config, *, names: list[str] | None, output: str) -> int:
    """Per secret: version, source, consumers and why they wait; exit 1 if unreadable."""
    from syncd.errors import SyncdError
    from syncd.status import status

    try:
        found = status(config, names=names)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if output == "json":
        print_json("Status", {"secrets": [s.to_json() for s in found]})
        return EXIT_OK
    print_status(found)
    return EXIT_OK


def cmd_retry(config: Config, *, names: list[str], dry_run: bool, output: str) -> int:
    """Clear the failed mark of each named secret's newest version; exit 1 when any of them
    is unknown, has nothing to clear, or could not be cleared."""
    from syncd.errors import SyncdError
    from syncd.retry import retry

    try:
        results = retry(config, names, dry_run=dry_run)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for failed in (r for r in results if r.error):
        print(f"error: {shown(failed.name)}: {failed.error}", file=sys.stderr)
    if output == "json":
        print_json("RetryResult", {"secrets": [r.to_json() for r in results], "dry_run": dry_run})
    for done in results if output == "text" else []:
        if done.error:
            continue
        if done.cleared:
            print(
                f"{shown(done.name)}: v{done.version} was {done.state}; cleared, the next "
                "cycle rolls it out again"
            )
        else:
            print(f"{shown(done.name)}: would clear v{done.version} ({done.state})")
    return EXIT_ERROR if any(r.error for r in results) else EXIT_OK


def cmd_history(config: Config, *, name: str, output: str) -> int:
    """One secret's ledger; exit 1 if the target can't be read or holds no version of it."""
    from syncd.errors import SyncdError
    from syncd.history import read_history

    try:
        found = read_history(config, name)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if found is None:
        print(f"error: the target holds no version of {shown(name)}", file=sys.stderr)
        return EXIT_ERROR
    if found.ledger.problem:
        print(f"warning: {found.ledger.problem}", file=sys.stderr)
    if output == "json":
        print_json("History", found.to_json())
    else:
        print_history(found)
    return EXIT_OK


def env_var_name(name: str) -> str:
    """``openai_api_key`` / ``openai-api-key`` -> ``OPENAI_API_KEY``."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def cmd_once(config: Config, inv: Invocation, *, dry_run: bool) -> int:
    """Run one cycle (``plan``: a dry one) and report it."""
    from syncd.cli.bar import progress_bar
    from syncd.engine import Engine

    engine = Engine(config)
    try:
        with progress_bar(sys.stderr, output=inv.output, disabled=bool(inv.no_progress)) as hook:
            engine.progress = hook
            result = engine.run_cycle(
                dry_run=dry_run, names=inv.secret, ignore_window=bool(inv.ignore_window)
            )
    finally:
        engine.close()
    result.items += unknown_names(config, inv.secret, result.items)
    print_errors(result.items)
    if inv.output == "json":
        print_json("Plan" if dry_run else "CycleResult", result_body(result))
    else:
        print_result(result, verbose=bool(inv.verbose))
    if not result.ok:
        return EXIT_ERROR
    if dry_run and result.changed:
        return EXIT_CHANGES
    return EXIT_OK


def unknown_names(config: Config, names: list[str] | None, items: list[PlanItem]) -> list[PlanItem]:
    """An error item for each ``--secret`` neither the config nor a ``for_each`` made
    (unless a ``for_each`` failed to list, which may be why)."""
    from syncd.work import failed_item

    if not names or any(i.error_kind == "provider" and i.name in _templates(config) for i in items):
        return []
    known = {i.name for i in items} | {s.name for s in config.secrets}
    return [
        failed_item(
            name, f"no secret named {name!r} in {config.path}, nor made by a for_each", "input"
        )
        for name in sorted(set(names) - known)
    ]


def _templates(config: Config) -> set[str]:
    return {s.name for s in config.secrets if s.spec.for_each is not None}


def cmd_daemon(path: str, *, listen: str | None) -> int:
    """Run the scheduler until SIGTERM/SIGINT; SIGHUP reloads."""
    from syncd.daemon import Daemon
    from syncd.errors import ConfigError, SyncdError

    try:
        daemon = Daemon(path, listen=listen)
        daemon.install_signal_handlers()
        return daemon.run()
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def dispatch(inv: Invocation) -> int:
    """Run the parsed command."""
    if inv.command == "schema":
        return cmd_schema()
    if inv.command == "version":
        return cmd_version(output=inv.output, short=bool(inv.values.get("short")))
    if inv.command == "completion":
        return cmd_completion(inv.shell)
    from syncd.logs import setup_logging

    setup_logging(level=inv.log_level, fmt=inv.log_format)
    if not inv.config:
        print("error: no config given (use --config FILE or set SYNCD_CONFIG)", file=sys.stderr)
        return EXIT_ERROR
    config = load(inv.config)
    if inv.command == "check":
        return cmd_check(inv.config, config, output=inv.output)
    if config is None:
        return EXIT_ERROR
    handlers: dict[str, Any] = {
        "names": lambda: cmd_names(config, output=inv.output),
        "doctor": lambda: cmd_doctor(config, output=inv.output),
        "import": lambda: cmd_import(
            config, names=inv.secret, trust=bool(inv.trust_values), output=inv.output
        ),
        "plan": lambda: cmd_once(config, inv, dry_run=True),
        "status": lambda: cmd_status(config, names=inv.secret, output=inv.output),
        "retry": lambda: cmd_retry(
            config, names=inv.names, dry_run=bool(inv.dry_run), output=inv.output
        ),
        "history": lambda: cmd_history(config, name=inv.name, output=inv.output),
    }
    if inv.command in handlers:
        return int(handlers[inv.command]())
    if inv.once:
        return cmd_once(config, inv, dry_run=bool(inv.dry_run))
    return cmd_daemon(inv.config, listen=inv.listen)
