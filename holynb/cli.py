"""The ``holynb`` command: ``holynb serve`` (local server), ``holynb demo`` and ``holynb budget``
(a team database's named budgets: ``set NAME USD [--period day|month]``, ``list``)."""

from __future__ import annotations

import argparse
import sys

from holynb._version import version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holynb", description="Jupyter-first toolkit for OpenAI-compatible LLM APIs."
    )
    parser.add_argument("--version", action="version", version=f"holynb {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local OpenAI-compatible server (127.0.0.1)")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    serve.add_argument(
        "--api-key", default=None, help="require this key (default: a random token, printed)"
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="require no key at all (any program or user on this machine can then use it)",
    )
    serve.add_argument(
        "--enable-python",
        action="store_true",
        help="serve local/python and local/broken, which run the code they are sent",
    )
    serve.add_argument(
        "--only-model",
        metavar="NAME",
        default=None,
        help="serve just this one model (answers in prose), like a user's own relay; others: 404",
    )
    serve.add_argument(
        "--no-batches", action="store_true", help="leave out /v1/files and /v1/batches"
    )
    serve.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    serve.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="pace streamed tokens (default: as fast as possible)",
    )

    demo = sub.add_parser("demo", help="stream an answer (local server when no key is set)")
    demo.add_argument(
        "prompt",
        nargs="?",
        default="Explain in a few sentences why streaming answers feel faster in a notebook.",
    )

    budget = sub.add_parser("budget", help="named budgets of a team database (PostgreSQL)")
    budget_sub = budget.add_subparsers(dest="action", required=True)
    for name, text in (("set", "make or change a budget"), ("list", "show every budget")):
        action = budget_sub.add_parser(name, help=text)
        action.add_argument(
            "--database", default=None, help="PostgreSQL URL (default: HOLYNB_DATABASE_URL)"
        )
        if name == "set":
            action.add_argument("name", help="the budget's name, e.g. research")
            action.add_argument("usd", type=float, help="the limit in USD")
            action.add_argument(
                "--period", choices=["day", "month"], default=None,
                help="start again each UTC day or month (default: all time)",
            )  # fmt: skip
    return parser


def _budget(args: argparse.Namespace) -> int:
    from holynb.errors import HolynbError
    from holynb.team.budgets import budgets, set_budget

    try:
        if args.action == "set":
            set_budget(args.name, args.usd, database=args.database, period=args.period)
        frame = budgets(database=args.database)
    except HolynbError as err:
        print(f"holynb budget: {err}", file=sys.stderr)
        return 2
    if frame.empty:
        print("No budgets yet: holynb budget set NAME USD [--period month]")
        return 0
    from holynb.units import money

    shown = frame[["name", "limit_usd", "spent_usd", "reserved_usd", "period"]].copy()
    for column in ("limit_usd", "spent_usd", "reserved_usd"):
        shown[column] = shown[column].map(money)
    shown["period"] = shown["period"].fillna("all time")
    print(shown.to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``holynb`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from holynb.server.runner import serve_forever

        if args.no_auth and args.api_key is not None:
            print("holynb serve: give either --api-key or --no-auth, not both.", file=sys.stderr)
            return 2
        try:
            serve_forever(
                host=args.host,
                port=args.port,
                api_key=args.api_key,
                latency_ms=args.latency_ms,
                tokens_per_second=args.tokens_per_second,
                auth=not args.no_auth,
                python=args.enable_python,
                only_model=args.only_model,
                batches=not args.no_batches,
            )
        except (ValueError, OSError) as err:
            print(f"holynb serve: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
        return 0
    if args.command == "budget":
        return _budget(args)
    if args.command == "demo":
        from holynb.demo import run_demo
        from holynb.errors import HolynbError

        try:
            return run_demo(args.prompt)
        except HolynbError as err:
            print(f"holynb demo failed: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
