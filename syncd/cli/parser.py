"""The command line's grammar: commands, flags, their ``SYNCD_*`` variables, and usage errors.

The conventions are kubectl's and helm's: global flags (``--config``, ``--log-level``,
``--log-format``) go before or after the command; one ``-o/--output`` flag on every command
that prints a document; no abbreviated flags (a script that works today must not break when
a flag is added). Every flag has a ``SYNCD_*`` variable, read only where the flag applies, so
one environment can serve every command; an explicit flag where it doesn't apply is a usage
error (exit 64), never silently ignored. ``SYNCD_DRY_RUN`` is the one variable that is never
ignored: a daemon refuses to start with it, since ignoring it would write.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
#: sysexits.h EX_USAGE: the command line itself is wrong.
EXIT_USAGE = 64

#: Accepted spellings of a boolean variable (any case).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

COMMANDS = (
    "plan",
    "status",
    "history",
    "check",
    "doctor",
    "names",
    "import",
    "retry",
    "schema",
    "version",
    "completion",
)


class UsageError(Exception):
    """The command line (or a ``SYNCD_*`` variable standing for it) is wrong: exit 64."""


@dataclass(frozen=True)
class Flag:
    """One flag: its spellings, variable, the commands it belongs to, and argparse details."""

    names: tuple[str, ...]
    dest: str
    env: str
    help: str
    #: "run" is ``syncd`` itself (the daemon, or ``--once``)
    commands: tuple[str, ...]
    kind: str = "value"  # "value", "bool" or "list" (repeatable; the variable is comma-separated)
    choices: tuple[str, ...] | None = None
    convert: Callable[[str], str] | None = None
    metavar: str | None = None
    #: the value when neither the flag nor its variable is given
    default: Any = None

    @property
    def shown(self) -> str:
        return "/".join(self.names)


_GLOBAL = ("run", *COMMANDS)
_WITH_CONFIG = ("run", "plan", "status", "history", "check", "doctor", "names", "import", "retry")

FLAGS: tuple[Flag, ...] = (
    Flag(
        ("-c", "--config"),
        "config",
        "SYNCD_CONFIG",
        "the config file",
        _WITH_CONFIG,
        metavar="FILE",
    ),
    Flag(
        ("--log-level",),
        "log_level",
        "SYNCD_LOG_LEVEL",
        "log verbosity (any case)",
        _GLOBAL,
        choices=("debug", "info", "warning", "error"),
        convert=str.lower,
        default="info",
    ),
    Flag(
        ("--log-format",),
        "log_format",
        "SYNCD_LOG_FORMAT",
        "log line format: text, or json (one object per line, for log shippers)",
        _GLOBAL,
        choices=("text", "json"),
        convert=str.lower,
        default="text",
    ),
    Flag(
        ("-o", "--output"),
        "output",
        "SYNCD_OUTPUT",
        "what to print: text for people, json for programs (names: env or json)",
        (
            "run",
            "plan",
            "status",
            "history",
            "check",
            "doctor",
            "names",
            "import",
            "retry",
            "version",
        ),
        choices=("text", "json", "env"),
        convert=str.lower,
    ),
    Flag(
        ("-v", "--verbose"),
        "verbose",
        "SYNCD_VERBOSE",
        "list every secret, not only the changed and failed ones",
        ("run", "plan"),
        kind="bool",
        default=False,
    ),
    Flag(
        ("--secret",),
        "secret",
        "SYNCD_SECRET",
        "only this secret (repeatable; a name a for_each makes is fine; the variable takes "
        "a comma-separated list)",
        ("run", "plan", "status", "import"),
        kind="list",
        metavar="NAME",
    ),
    Flag(
        ("--once",),
        "once",
        "SYNCD_ONCE",
        "run one cycle and exit: 0 in sync, 1 on any failure",
        ("run",),
        kind="bool",
        default=False,
    ),
    Flag(
        ("--dry-run",),
        "dry_run",
        "SYNCD_DRY_RUN",
        "write nothing, print what would be done (syncd: with --once, the same as syncd plan)",
        ("run", "retry"),
        kind="bool",
        default=False,
    ),
    Flag(
        ("--ignore-window",),
        "ignore_window",
        "SYNCD_IGNORE_WINDOW",
        "repoint consumers even outside their rotation window",
        ("run", "plan"),
        kind="bool",
        default=False,
    ),
    Flag(
        ("--no-progress",),
        "no_progress",
        "SYNCD_NO_PROGRESS",
        "draw no progress bar (one is drawn only when stderr is a terminal, with text output)",
        ("run", "plan"),
        kind="bool",
        default=False,
    ),
    Flag(
        ("--listen",),
        "listen",
        "SYNCD_LISTEN",
        "daemon: serve /metrics, /healthz, /readyz on HOST:PORT (overrides daemon.listen; "
        "'' turns it off)",
        ("run",),
        metavar="HOST:PORT",
    ),
    Flag(
        ("--trust-values",),
        "trust_values",
        "SYNCD_TRUST_VALUES",
        "Swarm: adopt the existing data unchecked (Swarm can't give it back to compare)",
        ("import",),
        kind="bool",
        default=False,
    ),
)

#: Flags that were renamed, so an old script gets the new spelling, not a guess.
RENAMED = {"--format": "-o/--output"}

#: Flags of ``syncd`` itself that only make sense with ``--once`` / only without it.
ONCE_ONLY = ("dry_run", "output", "secret", "ignore_window", "verbose", "no_progress")
DAEMON_ONLY = ("listen",)

_DESCRIPTIONS = {
    "run": "Sync secrets from Vault/OpenBao, AWS and Azure into Docker Swarm, Kubernetes or "
    "files, with versioned zero-downtime swaps. Without a command, syncd runs the daemon "
    "(or one cycle with --once).",
    "plan": "Show what one cycle would do, writing nothing: by default the changes and one "
    "summary line, with -v every secret.",
    "status": "Show what the target holds: per secret the current version, its source "
    "version, when it was made, each consumer and the version it runs, failed versions and "
    "why consumers wait. Read from the target alone (no provider is contacted), so it works "
    "from any machine that can read the target.",
    "history": "Show the ledger of one secret's versions: per version the upstream version it "
    "was made from, when, the consumers moved to it, how its rollout ended and when it was "
    "collected (the last 50). Kept in the target, so it is the same from every machine; read "
    "from the target alone.",
    "check": "Validate a config file (no provider or target is contacted).",
    "doctor": "Check, read-only, that every provider answers for every reference (without "
    "reading a value) and how consumers use the managed secrets.",
    "names": "Print the current versioned name of every secret (for stack or manifest pinning).",
    "import": "Adopt secrets made by hand in the target (named like each secret) as version 1, "
    "without restarting their consumers.",
    "retry": "Clear the failed mark of each named secret's newest version (rolled back, held "
    "or rolling back), so the next cycle rolls it out again: once the cause (a bad probe, a "
    "missing key) is fixed. Only this installation's objects are touched.",
    "schema": "Print the JSON Schema of the config file (for editors and CI linters).",
    "version": "Print syncd's version, Python's, and which provider/target extras are installed.",
    "completion": "Print a shell completion script: source it, or install it where your shell "
    "looks for completions.",
}

_EXAMPLES = {
    "run": """\
  syncd --config syncd.yaml                      run the daemon
  syncd --config syncd.yaml --once               one cycle (CI, cron, an init container)
  syncd --config syncd.yaml --once -o json       the same, with a JSON report
  SYNCD_CONFIG=syncd.yaml syncd --once --secret db_password""",
    "plan": """\
  syncd plan --config syncd.yaml                 changes only, and a summary line
  syncd plan -c syncd.yaml -v                    every secret
  syncd plan -c syncd.yaml -o json | jq '.secrets[] | select(.action != "unchanged")'""",
    "status": """\
  syncd status --config syncd.yaml
  syncd status -c syncd.yaml --secret db_password -o json""",
    "history": """\
  syncd history db_password --config syncd.yaml
  syncd history db_password -c syncd.yaml -o json | jq '.entries[-1].outcome'""",
    "check": """\
  syncd check --config syncd.yaml
  syncd check -c syncd.yaml -o json""",
    "doctor": """\
  syncd doctor --config syncd.yaml
  syncd doctor -c syncd.yaml -o json | jq '.problems'""",
    "names": """\
  export $(syncd names --config syncd.yaml)      OPENAI_API_KEY_SECRET=openai_api_key-v4
  syncd names -c syncd.yaml -o json""",
    "import": """\
  syncd import --config syncd.yaml --secret db_password
  syncd import -c swarm.yaml --trust-values""",
    "retry": """\
  syncd retry --config syncd.yaml db_password    the next cycle rolls its failed version out
  syncd retry -c syncd.yaml db_password api_key --dry-run -o json""",
    "schema": """\
  syncd schema > syncd.schema.json""",
    "version": """\
  syncd version
  syncd version -o json""",
    "completion": """\
  source <(syncd completion bash)
  syncd completion zsh > "${fpath[1]}/_syncd"
  syncd completion fish > ~/.config/fish/completions/syncd.fish""",
}

_EXIT_CODES = {
    "run": "  0 in sync (daemon: stopped cleanly)   1 a secret failed   64 usage error\n"
    "  with --dry-run: 0 nothing to do   2 changes pending   1 error",
    "plan": "  0 nothing to do   2 changes pending   1 a secret failed   64 usage error",
    "status": "  0 the target was read   1 it could not be read   64 usage error",
    "history": "  0 the target was read   1 it could not be read, or holds no version of NAME   "
    "64 usage error",
    "check": "  0 the config is valid   1 it is not   64 usage error",
    "doctor": "  0 no problems   1 problems found   64 usage error",
    "names": "  0 every secret has a version   1 one has none, or two share a variable   64 usage",
    "import": "  0 every secret imported or already managed   1 one failed   64 usage error",
    "retry": "  0 every mark cleared (--dry-run: would be)   64 usage error\n"
    "  1 a secret is unknown, has no failed version, or could not be cleared",
    "schema": "  0 printed   64 usage error",
    "version": "  0 printed   64 usage error",
    "completion": "  0 printed   64 usage error",
}


def flags_for(command: str) -> list[Flag]:
    """The flags ``command`` takes, in the order ``--help`` lists them."""
    return [f for f in FLAGS if command in f.commands]


def suggest(word: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for a near miss, else ''."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (exit 64, argparse's 2 means "changes") and adds
    "did you mean" to an unknown command or choice."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            word, hint = choice.group(1), suggest(choice.group(1), options)
            if message.startswith("argument COMMAND"):
                message = f"unknown command {word!r}{hint}"
            else:
                message += hint
        raise UsageError(f"{self.prog}: {message}")


def _wrapped(text: str) -> str:
    """A description, wrapped (the raw formatter that keeps the examples' layout doesn't)."""
    return textwrap.fill(text, width=min(shutil.get_terminal_size().columns, 100) - 2)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _epilog(command: str) -> str:
    text = f"examples:\n{_EXAMPLES[command]}\n\nexit codes:\n{_EXIT_CODES[command]}"
    if command == "run":
        text += (
            f"\n\ncommands:\n  {', '.join(COMMANDS)}\n  run 'syncd COMMAND --help' for each"
            "\n\nevery flag has a SYNCD_* variable (see --help of each command); a flag "
            "given on the command line wins"
        )
    return text


def _add_flags(parser: argparse.ArgumentParser, command: str, *, suppress: bool) -> None:
    """Add ``command``'s flags. ``suppress``: an absent flag leaves the namespace alone, so a
    global flag given before the command isn't reset by the command's parser."""
    for flag in flags_for(command):
        kwargs: dict[str, Any] = {
            "dest": flag.dest,
            "help": f"{flag.help} [${flag.env}]",
            "default": argparse.SUPPRESS if suppress else None,
        }
        if flag.kind == "bool":
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        elif flag.kind == "list":
            kwargs["action"] = "append"
            kwargs["metavar"] = flag.metavar
        else:
            kwargs["metavar"] = flag.metavar or (
                "{" + ",".join(_choices(flag, command)) + "}" if flag.choices else None
            )
        parser.add_argument(*flag.names, **kwargs)


def _choices(flag: Flag, command: str) -> tuple[str, ...]:
    """The values ``flag`` takes on ``command`` (``names`` prints env, not text)."""
    if flag.dest == "output":
        if command == "names":
            return ("env", "json")
        return ("text", "json")
    return flag.choices or ()


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar: ``syncd [FLAGS] [COMMAND [FLAGS]]`` (also renders the reference)."""
    parser = _Parser(
        prog="syncd",
        description=_wrapped(_DESCRIPTIONS["run"]),
        epilog=_epilog("run"),
        formatter_class=_formatter,
        allow_abbrev=False,
    )
    # `syncd`'s own flags include the global ones, so those can come before a command too
    _add_flags(parser, "run", suppress=False)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, help="what to do (default: sync)"
    )
    for command in COMMANDS:
        child = sub.add_parser(
            command,
            help=_DESCRIPTIONS[command].split(". ")[0].split(": ")[0].rstrip("."),
            description=_wrapped(_DESCRIPTIONS[command]),
            epilog=_epilog(command),
            formatter_class=_formatter,
            allow_abbrev=False,
        )
        _add_flags(child, command, suppress=True)
        if command == "completion":
            child.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
        if command == "retry":
            child.add_argument("names", nargs="+", metavar="NAME", help="a secret of the config")
        if command == "history":
            child.add_argument("name", metavar="NAME", help="the secret (its name in the config)")
    return parser


@dataclass
class Invocation:
    """A parsed command line, variables applied: what to run, with which settings."""

    command: str
    values: dict[str, Any] = field(default_factory=dict)
    #: the flags given on the command line (not from a variable), by dest
    explicit: set[str] = field(default_factory=set)
    #: where each value came from, for messages: ``--output`` or ``SYNCD_OUTPUT``
    origin: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def complete_if_asked() -> None:
    """Answer a shell's completion request (argcomplete's protocol) and exit; otherwise
    return at once without importing anything."""
    import os

    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(build_parser())


def parse(argv: Sequence[str], environ: dict[str, str] | None = None) -> Invocation:
    """Parse ``argv``, apply ``SYNCD_*`` variables where their flag applies, and refuse a
    flag given where it doesn't (``UsageError``)."""
    env = os.environ if environ is None else environ
    parser = build_parser()
    namespace, extra = parser.parse_known_args(list(argv))
    command = namespace.command or "run"
    if extra:
        raise UsageError(_unknown(command, extra))
    given = {
        k: v
        for k, v in vars(namespace).items()
        if v is not None and k not in ("command", "shell", "names", "name")
    }
    if given.pop("version", False):
        if command != "run" or given:
            raise UsageError("syncd: --version takes nothing else (or use: syncd version)")
        return Invocation("version", {"output": "text", "short": True})
    inv = Invocation(command, explicit=set(given))
    # a flag of `syncd` itself given with another command: `syncd --once plan`
    allowed = {f.dest for f in flags_for(command)}
    for dest in sorted(set(given) - allowed):
        raise UsageError(f"syncd {command}: {_flag(dest).shown} doesn't apply to this command")
    if command == "completion":
        inv.values["shell"] = namespace.shell
    if command == "retry":
        inv.values["names"] = list(namespace.names)
    if command == "history":
        inv.values["name"] = namespace.name
    for flag in flags_for(command):
        if flag.dest in given:
            inv.values[flag.dest] = _checked(flag, command, given[flag.dest], flag.names[-1])
            inv.origin[flag.dest] = flag.names[-1]
        elif flag.env in env:
            inv.values[flag.dest] = _from_env(flag, command, env[flag.env])
            inv.origin[flag.dest] = flag.env
        else:
            inv.values[flag.dest] = flag.default
    if command == "run":
        _check_modes(inv)
    if inv.values.get("output") is None and "output" in allowed:
        inv.values["output"] = "env" if command == "names" else "text"
    return inv


def _flag(dest: str) -> Flag:
    return next(f for f in FLAGS if f.dest == dest)


def _checked(flag: Flag, command: str, value: Any, origin: str) -> Any:
    """A flag's value, converted and checked against the command's choices."""
    if flag.kind != "value" or value is None:
        return value
    text = flag.convert(value) if flag.convert else value
    choices = _choices(flag, command)
    if choices and text not in choices:
        raise UsageError(
            f"syncd: {origin} {value!r}: choose from {', '.join(choices)}{suggest(text, choices)}"
        )
    return text


def _from_env(flag: Flag, command: str, raw: str) -> Any:
    if flag.kind == "bool":
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"syncd: {flag.env}={raw!r}: use true or false (or 1/0, yes/no)")
        return word in _TRUE
    if flag.kind == "list":
        items = [part.strip() for part in raw.split(",") if part.strip()]
        return items or None
    if not raw and flag.dest != "listen":
        return flag.default
    return _checked(flag, command, raw, flag.env)


def _check_modes(inv: Invocation) -> None:
    """``syncd`` is the daemon or, with ``--once``, one cycle: flags of the other mode are
    refused when given; their variables are ignored, except ``SYNCD_DRY_RUN``."""
    once = bool(inv.values.get("once"))
    other = DAEMON_ONLY if once else ONCE_ONLY
    for dest in other:
        refused = dest in inv.explicit or (dest == "dry_run" and inv.values.get(dest))
        if refused:
            needs = "is for the daemon; it doesn't apply with --once" if once else "needs --once"
            raise UsageError(f"syncd: {inv.origin[dest]} {needs}")
        if inv.values.get(dest) not in (None, False):
            inv.values[dest] = _flag(dest).default


def _unknown(command: str, extra: Sequence[str]) -> str:
    """``unrecognized arguments`` with a "did you mean" from the command's own flags."""
    prog = "syncd" if command == "run" else f"syncd {command}"
    word = extra[0]
    if word.startswith("-"):
        old = word.split("=", 1)[0]
        if old in RENAMED:
            return f"{prog}: {old} is now {RENAMED[old]}"
        if any(word in f.names for f in flags_for(command)):
            return f"syncd: {word} belongs to {prog}: put it after the command"
        known = [n for f in flags_for(command) for n in f.names if n.startswith("--")]
        hint = suggest(word.split("=", 1)[0], known)
        if not hint:
            elsewhere = [
                c for c in ("run", *COMMANDS) if any(word in f.names for f in flags_for(c))
            ]
            if elsewhere:
                where = ", ".join("syncd" if c == "run" else f"syncd {c}" for c in elsewhere)
                hint = f" (it belongs to {where})"
        return f"{prog}: unknown flag {word}{hint}"
    hint = suggest(word, COMMANDS) if command == "run" else ""
    return f"{prog}: unexpected argument {word!r}{hint}"


def print_usage_error(error: UsageError) -> int:
    """One line on stderr and a hint to ``--help``; the usage exit code."""
    print(f"{error}\nrun 'syncd --help' for usage", file=sys.stderr)
    return EXIT_USAGE
