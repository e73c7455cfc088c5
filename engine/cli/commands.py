"""The ``radbridge`` command line.

::

    radbridge run [channels.toml]          run the engine until SIGINT/SIGTERM
    radbridge lint [channels.toml ...]     report every problem, exit 1 if any
    radbridge list                         connector types and their config keys
    radbridge send FILE... --to mllp://host:port [--rate N]
    radbridge messages list|show|reprocess [...]
    radbridge deliveries list DEST | skip|cancel|retry ID --reason WHY
    radbridge cases | orders | unmatched
    radbridge studies [list | complete UID | proceed UID]
    radbridge audit [--case N] [--model NAME] | findings [--case N] | jobs | models
    radbridge demo [channels.toml]          a DEMO order and study through the running engine
    radbridge try CHANNEL FILE... [--json]  dry-run messages through a channel's steps
    radbridge replay --config CANDIDATE.toml [--channel C] [--since T] [--until T] --diff
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.cli.args import Parser
from engine.errors import ConfigErrors


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the engine")
    p.add_argument("config", nargs="?", default="channels.toml")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.cli.serve import serve

    return serve(args.config, args.log_level)


def _add_worker(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="an inference worker: claims and runs jobs from the store")
    p.add_argument("config", nargs="?", default="channels.toml")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    from inference.worker import main as worker_main

    try:
        return worker_main(args.config, args.log_level)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2


def _add_lint(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lint", help="check channels.toml; report every problem")
    p.add_argument("config", nargs="*", default=["channels.toml"])
    p.add_argument("--skip-file-checks", action="store_true",
                   help="do not check that the files it names (TLS certificates, keys, CA "
                        "bundles, secret files) and the environment variables holding its "
                        "secrets exist here: for linting on another machine than the server")
    p.set_defaults(func=_cmd_lint)


def _cmd_lint(args: argparse.Namespace) -> int:
    from engine.config.schema import load_config

    failed = False
    for path in args.config:
        try:
            load_config(path, check_files=not args.skip_file_checks)
        except ConfigErrors as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def _add_list(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list", help="connector types and their configuration keys, "
                                    "processors and result payloads")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from engine import plugins, registry

    plugins.load()

    for kind in ("source", "destination"):
        for spec in registry.connectors(kind):  # type: ignore[arg-type]
            print(f"{kind} {spec.type}: {spec.summary}")
            for name, field in spec.config.model_fields.items():
                if name == "type":
                    continue
                default = "required" if field.is_required() else f"default {field.default!r}"
                print(f"    {name} ({default}) {field.description or ''}".rstrip())
    for proc in registry.processors():
        print(f"process {proc.name}: {proc.summary}")
    for payload in registry.payloads():
        print(f"payload {payload.name}: {payload.summary}")
    for kind, step in sorted(registry.steps("hl7").items()):
        keys = f" [{', '.join(step.keys)}]" if step.keys else ""
        print(f"step {kind}{keys}: {step.summary}")
    return 0


def build_parser() -> Parser:
    """Every subcommand and its options (their value types: ``engine.cli.args``)."""
    from engine.cli import clinical, deliveries, demo, inference, messages, replay, send, tryrun

    parser = Parser(prog="radbridge", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_worker(sub)
    _add_lint(sub)
    _add_list(sub)
    send.add_parser(sub)
    messages.add_parser(sub)
    deliveries.add_parser(sub)
    clinical.add_parsers(sub)
    inference.add_parsers(sub)
    demo.add_parser(sub)
    tryrun.add_parser(sub)
    replay.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def entry() -> int:
    """The ``radbridge`` command: *main* in a process whose files are private by default
    (umask 0o077, a belt: every writer of patient data sets 0600 / 0700 itself)."""
    from engine.fsmode import private_umask

    private_umask()
    return main()
