"""The ``effivmt`` command line: one subcommand per typed function (litgpt's pattern).

Each command is a plain function whose signature is its schema and whose docstring is its ``--help``;
jsonargparse builds the parser from them. ``run`` takes a YAML recipe (``effivmt run RECIPE``) whose
top-level keys are ``run()``'s parameters. Any :class:`~effivmt.errors.EffivmtError` becomes one line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
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
    "eval": "effivmt.metrics.evaluate:evaluate",
}

#: subcommands whose first positional argument stands for an option (`effivmt run RECIPE`, `export RUN_DIR`).
POSITIONAL: dict[str, str] = {"run": "--config", "export": "--run_dir"}

EXIT_USAGE = 2


def resolve(target: str) -> Callable[..., Any]:
    """``"pkg.module:function"`` -> the function."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser():
    """The top-level parser with global ``--debug`` and one subparser per entry of :data:`SUBCOMMANDS`."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="effivmt", description=__doc__.split("\n")[0], exit_on_error=True)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, target in SUBCOMMANDS.items():
        fn = resolve(target)
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        summary = (fn.__doc__ or "").split("Args:")[0].strip()
        sub = ArgumentParser(description=summary, exit_on_error=True)
        sub.add_argument("--config", action=ActionConfigFile, help="a YAML file with these arguments (a recipe)")
        sub.add_function_arguments(fn, fail_untyped=False, sub_configs=True)
        subcommands.add_subcommand(name, sub, help=doc)
    return parser


def _expand_positional(argv: list[str]) -> list[str]:
    """``run RECIPE`` -> ``run --config RECIPE``; ``export RUN_DIR`` -> ``export --run_dir RUN_DIR``."""
    command = next((i for i, a in enumerate(argv) if a in SUBCOMMANDS), None)
    if command is None or argv[command] not in POSITIONAL:
        return argv
    i = command + 1
    if i < len(argv) and not argv[i].startswith("-"):
        argv = argv[:i] + [POSITIONAL[argv[command]], argv[i]] + argv[i + 1 :]
    return argv


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
    try:
        parser = build_parser()
        cfg = parser.parse_args(argv)
        name = cfg.subcommand
        init = parser.instantiate_classes(cfg)[name]
        kwargs = {k: v for k, v in init.items() if k not in ("config", "__path__")}
        RESOLVED_CONFIG.set(parser.dump(cfg, skip_none=False))
        resolve(SUBCOMMANDS[name])(**kwargs)
    except EffivmtError as err:
        if debug:
            raise
        print(f"effivmt: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("effivmt: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
