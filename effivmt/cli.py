"""The ``effivmt`` command line: one subcommand per typed function (litgpt's pattern).

Each command is a plain function whose signature is its schema and whose docstring is its ``--help``;
jsonargparse builds the parser from them. ``run`` takes a YAML recipe (``effivmt run RECIPE``) whose
top-level keys are ``run()``'s parameters. Any :class:`~effivmt.errors.EffivmtError` becomes one line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: subcommand -> "module:function". Only this module knows every command (litgpt's PARSER_DATA).
SUBCOMMANDS: dict[str, str] = {
    "run": "effivmt.run:run",
    "heads": "effivmt.run:classify",
    "export": "effivmt.lora.export:export",
    "generate": "effivmt.generate:generate",
    "transfer": "effivmt.omnitransfer.transfer:transfer",
    "omnitransfer": "effivmt.omnitransfer.train:train",
    "eval": "effivmt.metrics.evaluate:evaluate",
}

#: subcommands whose first positional argument stands for an option (`effivmt run RECIPE`, `export RUN_DIR`).
POSITIONAL: dict[str, str] = {"run": "--config", "omnitransfer": "--config", "export": "--run_dir"}

EXIT_USAGE = 2


def resolve(target: str) -> Callable[..., Any]:
    """``"pkg.module:function"`` -> the function."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def command_parser(name: str):
    """The parser of one subcommand (``--config`` + the function's arguments); parse errors raise, never exit."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    fn = resolve(SUBCOMMANDS[name])
    summary = (fn.__doc__ or "").split("Args:")[0].strip()
    sub = ArgumentParser(description=summary, exit_on_error=False)
    sub.add_argument("--config", action=ActionConfigFile, help="a YAML file with these arguments (a recipe)")
    sub.add_function_arguments(fn, fail_untyped=False, sub_configs=True)
    return sub


def build_parser():
    """The top-level parser with global ``--debug`` and one subparser per entry of :data:`SUBCOMMANDS`."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="effivmt", description=__doc__.split("\n")[0], exit_on_error=False)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, target in SUBCOMMANDS.items():
        doc = (resolve(target).__doc__ or "").strip().split("\n")[0]
        subcommands.add_subcommand(name, command_parser(name), help=doc)
    return parser


# jsonargparse's ways of saying "no such key": unrecognized --flag, a recipe key, a key inside a group
_UNKNOWN_KEY = (
    re.compile(r"unrecognized arguments: --?([\w.\-]+)"),
    re.compile(r"does not accept option '([\w.\-]+)'"),
    re.compile(r"Key '([\w.\-]+)' is not expected"),
)


def describe_parse_error(message: str, parser=None, command: str | None = None) -> str:
    """One line for a jsonargparse error; an unknown key gets the nearest valid key (``difflib``) as a hint.

    Args:
        message: the error's text (may span lines: jsonargparse indents nested reasons).
        parser: the subcommand's parser, whose keys are the candidates.
        command: the subcommand's name, for the ``--help`` hint.
    """
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    group = re.search(r"Group '([\w.]+)' does not accept option '([\w.\-]+)'", text)
    key = f"{group[1]}.{group[2]}" if group else next((m[1] for p in _UNKNOWN_KEY if (m := p.search(text))), None)
    help_hint = f"see effivmt {command} --help" if command else "see effivmt --help"
    if key is None or parser is None:
        return f"{text[:400]} ({help_hint})"
    keys = [a.dest for a in parser._actions if a.dest not in ("help", "print_config") and not a.dest.endswith(".help")]
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}?" if near else help_hint
    return f"unknown key {key!r} ({hint})"


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
    from effivmt.manifest import RESOLVED_CONFIG

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = _expand_positional(argv)
    _configure_logging(debug)
    from effivmt.batch import RUN_NAMESPACE

    command = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = None
    try:
        parser = build_parser()
        cfg = parser.parse_args(argv)
        name = cfg.subcommand
        init = parser.instantiate_classes(cfg)[name]
        kwargs = {k: v for k, v in init.items() if k not in ("config", "__path__")}
        RESOLVED_CONFIG.set(parser.dump(cfg, skip_none=False))
        RUN_NAMESPACE.set(cfg[name])  # a --manifest applies each row's overrides on top of it
        resolve(SUBCOMMANDS[name])(**kwargs)
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
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
