"""The ``syncd`` command line.

``syncd --config F`` runs the daemon; ``--once`` runs one cycle (exit 0 in sync, 1 on any
failure); ``--once --dry-run`` prints the plan and writes nothing (exit 0 nothing to do,
2 changes pending, 1 error). ``check``, ``schema``, ``names``, ``doctor`` and ``import`` are
subcommands. A usage error (an unknown or misplaced flag) exits 64, a code of its own, so
``--dry-run || test $? -eq 2`` can't pass on a typo. Every failure ends in ``error: ...`` and
an exit code, never a traceback. Heavy imports happen inside the commands so ``syncd --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from syncd.display import shown
from syncd.model import ROLLOUT_STATES

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.engine import CycleResult

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
#: sysexits.h EX_USAGE: the command line itself is wrong.
EXIT_USAGE = 64

_SYMBOL = {
    "create": "+",
    "update": "~",
    "repoint": ">",
    "delete": "-",
    "unchanged": "=",
    "error": "!",
}
#: A swap that didn't simply converge has its own symbol in the plan.
_OUTCOME_SYMBOL = {
    "rolled-back": "<",
    "rolling-back": "<",
    "held": "#",
    "waiting-window": "@",
    "settled": "&",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits ``EXIT_USAGE`` (argparse's 2 means "changes")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        parser.add_argument(
            "--config",
            "-c",
            default=os.environ.get("SYNCD_CONFIG"),
            help="config file (default: $SYNCD_CONFIG)",
        )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (any case)",
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="log line format"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render the CLI reference)."""
    parser = _Parser(
        prog="syncd",
        description="Sync secrets from Vault/OpenBao, AWS and Azure into Docker Swarm, "
        "Kubernetes or files, with versioned zero-downtime swaps.",
        epilog="Commands: check, schema, names, doctor, import. "
        "Run 'syncd COMMAND --help' for each.",
    )
    _common(parser)
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="with --once: print the plan, write nothing"
    )
    parser.add_argument("--output", default="text", choices=["text", "json"], help="--once output")
    parser.add_argument("--secret", action="append", metavar="NAME", help="only these secrets")
    parser.add_argument(
        "--ignore-window",
        action="store_true",
        help="with --once: repoint consumers even outside their rotation window",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="daemon: serve /metrics, /healthz, /readyz here (overrides daemon.listen; '' = off)",
    )
    return parser


def build_subparsers() -> dict[str, argparse.ArgumentParser]:
    """One parser per subcommand."""
    check = _Parser(prog="syncd check", description="Validate a config file.")
    _common(check)
    schema = _Parser(prog="syncd schema", description="Print the JSON Schema of the config file.")
    names = _Parser(
        prog="syncd names",
        description="Print the current versioned name of every secret (for stack pinning).",
    )
    _common(names)
    names.add_argument("--format", default="env", choices=["env", "json"])
    doctor = _Parser(
        prog="syncd doctor",
        description="Check how consumers use the managed secrets (read-only). "
        "Exit 0 when clean, 1 when problems were found.",
    )
    _common(doctor)
    doctor.add_argument("--output", default="text", choices=["text", "json"])
    adopt = _Parser(
        prog="syncd import",
        description="Adopt secrets made by hand in the target (named like each secret) as "
        "version 1, without restarting their consumers.",
    )
    _common(adopt)
    adopt.add_argument("--secret", action="append", metavar="NAME", help="only these secrets")
    adopt.add_argument(
        "--trust-values",
        action="store_true",
        help="Swarm: accept the existing data unchecked (Swarm can't give it back to compare)",
    )
    return {"check": check, "schema": schema, "names": names, "doctor": doctor, "import": adopt}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncd`` console script: every failure is one ``error:`` line."""
    from syncd.errors import SyncdError
    from syncd.redact import REDACTOR

    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (syncd schema | head): not an error of ours; keep Python from
        # complaining again while it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except SyncdError as exc:
        print(f"error: {REDACTOR.redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug must still end in one line, never quoting a value
        import logging

        logging.getLogger("syncd").debug("internal error", exc_info=True)
        detail = REDACTOR.redact(f"{type(exc).__name__}: {exc}")
        print(
            f"error: internal error ({detail}); run with --log-level debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    subparsers = build_subparsers()
    if args_list and args_list[0] in subparsers:
        command = args_list.pop(0)
        args = subparsers[command].parse_args(args_list)
    else:
        command = "run"
        args = build_parser().parse_args(args_list)
    if command == "schema":
        return cmd_schema()
    from syncd.logs import setup_logging

    setup_logging(level=args.log_level, fmt=args.log_format)
    if not args.config:
        print("syncd: no config given (use --config FILE or set SYNCD_CONFIG)", file=sys.stderr)
        return EXIT_ERROR
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    if command == "check":
        print(f"{args.config}: ok ({len(config.secrets)} secrets)")
        return EXIT_OK
    if command == "names":
        return cmd_names(config, fmt=args.format)
    if command == "doctor":
        return cmd_doctor(config, output=args.output)
    if command == "import":
        return cmd_import(config, names=args.secret, trust=args.trust_values)
    if not args.once:
        misplaced = [
            flag
            for flag, given in (
                ("--dry-run", args.dry_run),
                ("--output", args.output != "text"),
                ("--secret", bool(args.secret)),
                ("--ignore-window", args.ignore_window),
            )
            if given
        ]
        if misplaced:
            print(f"syncd: {', '.join(misplaced)} needs --once", file=sys.stderr)
            return EXIT_USAGE
    elif args.listen is not None:
        print("syncd: --listen is for the daemon; it doesn't apply with --once", file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        return cmd_once(
            config,
            dry_run=args.dry_run,
            output=args.output,
            names=args.secret,
            ignore_window=args.ignore_window,
        )
    return cmd_daemon(args.config, listen=args.listen)


def _load(path: str) -> Config | None:
    from syncd.config import load_config
    from syncd.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return None


def cmd_schema() -> int:
    """Print the config JSON Schema."""
    from syncd.config import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_names(config: Config, *, fmt: str) -> int:
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
    for item in expansion.errors:
        print(f"error: {shown(item.name)}: {item.error}", file=sys.stderr)
    if fmt == "json":
        print(json.dumps(current, indent=2, sort_keys=True))
    else:
        variables: dict[str, str] = {}
        for name in current:
            variable = f"{env_var_name(name)}_SECRET"
            if variable in variables:
                print(
                    f"error: {variables[variable]!r} and {name!r} both become {variable}; "
                    "use --format json",
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
    """Print each problem with its subject and fix; exit 1 when there are any."""
    from dataclasses import asdict

    from syncd.doctor import diagnose
    from syncd.errors import SyncdError

    try:
        findings = diagnose(config)
    except SyncdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if output == "json":
        print(json.dumps({"problems": [asdict(f) for f in findings]}, indent=2))
    elif not findings:
        print("no problems found")
    for finding in findings if output == "text" else []:
        print(f"{finding.subject}: {finding.problem}\n  fix: {finding.fix}")
    return EXIT_ERROR if findings else EXIT_OK


def cmd_import(config: Config, *, names: list[str] | None, trust: bool) -> int:
    """Adopt hand-made secrets; exit 1 when any secret could not be imported."""
    from syncd.engine import Engine

    engine = Engine(config)
    try:
        items = engine.import_existing(names=names, trust=trust)
    finally:
        engine.close()
    for item in items:
        if item.error:
            print(f"error: {shown(item.name)}: {item.error}", file=sys.stderr)
        elif item.action == "import":
            print(f"* {shown(item.name)}: imported as v{item.version}")
        elif item.version is not None:
            print(f"= {shown(item.name)}: already managed (v{item.version})")
        else:
            print(f"= {shown(item.name)}: nothing named like it in the target")
    return EXIT_ERROR if any(i.error for i in items) else EXIT_OK


def env_var_name(name: str) -> str:
    """``openai_api_key`` / ``openai-api-key`` -> ``OPENAI_API_KEY``."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def cmd_once(
    config: Config,
    *,
    dry_run: bool,
    output: str,
    names: list[str] | None,
    ignore_window: bool = False,
) -> int:
    """Run one cycle and report it."""
    from syncd.engine import Engine

    unknown = sorted(set(names or []) - {s.name for s in config.secrets})
    if unknown:
        print(f"error: no secret named {', '.join(unknown)} in {config.path}", file=sys.stderr)
        return EXIT_ERROR
    engine = Engine(config)
    try:
        result = engine.run_cycle(dry_run=dry_run, names=names, ignore_window=ignore_window)
    finally:
        engine.close()
    _report(result, output=output)
    if not result.ok:
        return EXIT_ERROR
    if dry_run and result.changed:
        return EXIT_CHANGES
    return EXIT_OK


def _report(result: CycleResult, *, output: str) -> None:
    for item in result.items:
        if item.error:
            print(f"error: {shown(item.name)}: {item.error}", file=sys.stderr)
    if output == "json":
        print(json.dumps(result.to_json(), indent=2))
        return
    verb = "would " if result.dry_run else ""
    for item in result.items:
        symbol = _OUTCOME_SYMBOL.get(item.outcome or "", _SYMBOL[item.action])
        line = f"{symbol} {shown(item.name)}: "
        if item.outcome in ROLLOUT_STATES:
            line += f"v{item.failed_version} {item.outcome}" + (
                f" (serving v{item.version})" if item.version else ""
            )
        elif item.action == "error":
            line += "failed" + (f" (serving v{item.version})" if item.version else "")
        else:
            line += "unchanged" if item.action == "unchanged" else f"{verb}{item.action}"
            if item.version is not None:
                line += f" v{item.version}"
        if item.changed_keys and item.action in ("create", "update"):
            line += f" (keys: {', '.join(item.changed_keys)})"
        if item.consumers:
            line += f" (consumers: {', '.join(item.consumers)})"
        if item.deleted:
            line += f" (deleted: {', '.join(item.deleted)})"
        if item.outcome == "waiting-window":
            line += f" (waiting for window until {item.until})"
        elif item.outcome == "rolling-back" and item.until:
            line += f" (retrying at {item.until})"
        print(line)
        for note in item.notes:
            print(f"    note: {note}")


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
