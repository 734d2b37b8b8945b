"""The ``effivmt`` command line: one subcommand per typed function (litgpt's pattern).

Each command is a plain function whose signature is its schema and whose docstring is its ``--help``;
jsonargparse builds the parser from them (:mod:`effivmt.recipe`). ``run`` takes a YAML recipe (``effivmt run
RECIPE``) whose top-level keys are ``run()``'s parameters. Data flows one way: this module parses a command into
a :class:`~effivmt.recipe.ParsedRecipe` and hands it down with the call (a function that takes ``parsed`` gets
it); nothing below imports this module. Any :class:`~effivmt.errors.EffivmtError` becomes one line on stderr and
exit code 2; ``--debug`` shows the traceback instead; Ctrl-C exits 130 with the resume hint.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: subcommand -> "module:function". Only this module knows every command (litgpt's PARSER_DATA).
SUBCOMMANDS: dict[str, str] = {
    "run": "effivmt.vmt.commands:run",
    "heads": "effivmt.vmt.commands:classify",
    "export": "effivmt.lora.export:export",
    "generate": "effivmt.vmt.generate:generate",
    "transfer": "effivmt.omnitransfer.transfer:transfer",
    "omnitransfer": "effivmt.omnitransfer.train:train",
    "eval": "effivmt.metrics.evaluate:evaluate",
    "pretrain": "effivmt.pretrain.run:pretrain_micro",
}

#: One-line help of a subcommand whose function's first docstring line is not the summary we want.
HELP: dict[str, str] = {"pretrain": "pretrain the micro Wan on the micro world (resumable)"}

#: subcommands whose first positional argument stands for an option (`effivmt run RECIPE`, `export RUN_DIR`).
POSITIONAL: dict[str, str] = {"run": "--config", "omnitransfer": "--config", "export": "--run_dir"}

EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


def resolve(target: str) -> Callable[..., Any]:
    """``"pkg.module:function"`` -> the function."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def command_parser(name: str):
    """The parser of one subcommand (``--config`` + the function's arguments); parse errors raise, never exit."""
    from effivmt.recipe import function_parser

    return function_parser(resolve(SUBCOMMANDS[name]))


def build_parser():
    """The top-level parser with global ``--debug`` and one subparser per entry of :data:`SUBCOMMANDS`."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="effivmt", description=__doc__.split("\n")[0], exit_on_error=False)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, target in SUBCOMMANDS.items():
        doc = HELP.get(name) or (resolve(target).__doc__ or "").strip().split("\n")[0]
        subcommands.add_subcommand(name, command_parser(name), help=doc)
    return parser


#: OSErrors that are the machine's state, not a bug: reported in one line like an EffivmtError.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _expand_positional(argv: list[str]) -> list[str]:
    """``run RECIPE`` -> ``run --config RECIPE``; ``export RUN_DIR`` -> ``export --run_dir RUN_DIR``.

    Option names may also be spelled with dashes (``--first-frame`` for ``--first_frame``).
    """
    argv = [_underscored(a) for a in argv]
    command = next((i for i, a in enumerate(argv) if a in SUBCOMMANDS), None)
    if command is None or argv[command] not in POSITIONAL:
        return argv
    i = command + 1
    if i < len(argv) and not argv[i].startswith("-"):
        argv = argv[:i] + [POSITIONAL[argv[command]], argv[i]] + argv[i + 1 :]
    return argv


def _bare_bool_flags(argv: list[str], sub) -> list[str]:
    """``--merge`` alone -> ``--merge=true`` for the subcommand's bool options (jsonargparse wants a value).

    ``--merge true`` and ``--merge=false`` pass through unchanged.
    """
    if sub is None:
        return argv
    flags = {f"--{a.dest}" for a in sub._actions if getattr(a, "_typehint", None) in (bool, bool | None)}
    out = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        bare = following is None or following.startswith("-") or following.lower() not in ("true", "false")
        out.append(f"{arg}=true" if arg in flags and bare else arg)
    return out


def _underscored(arg: str) -> str:
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name[:2] + name[2:].replace("-", "_") + sep + value


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")
    if not debug:
        for noisy in ("diffusers", "transformers", "lightning", "lightning.pytorch", "torch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``effivmt`` console script and ``python -m effivmt``."""
    from effivmt.errors import EffivmtError
    from effivmt.recipe import ParsedRecipe, describe_parse_error

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = _expand_positional(argv)
    if "transfer" in argv:  # --reference A --reference B -> one list (jsonargparse keeps only the last)
        from effivmt.omnitransfer.transfer import merge_repeated

        argv = merge_repeated(argv)
    _configure_logging(debug)

    command = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = None
    try:
        parser = build_parser()
        if command is not None:
            argv = _bare_bool_flags(argv, parser._subcommands_action._name_parser_map.get(command))
        cfg = parser.parse_args(argv)
        name = cfg.subcommand
        fn = resolve(SUBCOMMANDS[name])
        sub = parser._subcommands_action._name_parser_map[name]
        parsed = ParsedRecipe(sub, cfg[name], name)
        kwargs = parsed.kwargs()
        if "parsed" in inspect.signature(fn).parameters:
            kwargs["parsed"] = parsed  # the recipe as read: run.json records it, manifest rows build on it
        fn(**kwargs)
    except EffivmtError as err:
        if debug:
            raise
        print(f"effivmt: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except argparse.ArgumentError as err:
        if debug:
            raise
        sub = parser._subcommands_action._name_parser_map.get(command) if parser and command else None
        print(f"effivmt: error: {describe_parse_error(str(err), sub, command)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if debug or err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(
            f"effivmt: error: {err.strerror}{where} (free some disk space or choose a writable --out)", file=sys.stderr
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("effivmt: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
