"""Recipes as parsed arguments: a typed function's signature is its schema (jsonargparse), a YAML file its values.

The CLI parses a command into a :class:`ParsedRecipe` and hands it down with the call; the many-clips runner
parses each row's overrides on top of it, exactly like the recipe itself. Nothing here knows any command: the
function comes from the caller, so this module sits below every method.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effivmt.errors import ConfigError

#: Parameters a command function takes from its caller, never from the command line or a recipe.
HIDDEN = {"parsed"}


def function_parser(fn: Callable[..., Any]):
    """The parser of one command function (``--config`` + its arguments); parse errors raise, never exit."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    summary = (fn.__doc__ or "").split("Args:")[0].strip()
    parser = ArgumentParser(description=summary, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with these arguments (a recipe)")
    parser.add_function_arguments(fn, fail_untyped=False, sub_configs=True, skip=HIDDEN)
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
        parser: the command's parser, whose keys are the candidates.
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


@dataclass
class ParsedRecipe:
    """One command's parsed arguments: the recipe file, then the flags on top, with the parser that read them.

    Attributes:
        parser: the command's parser (:func:`function_parser`).
        namespace: what it parsed (paths in a recipe already resolved against the recipe's folder).
        command: the subcommand's name, for error hints.
    """

    parser: Any
    namespace: Any
    command: str = "run"

    @classmethod
    def from_file(cls, fn: Callable[..., Any], recipe: str | Path, command: str = "run") -> ParsedRecipe:
        """Parse a recipe file for ``fn`` (the Python route to what ``effivmt COMMAND RECIPE`` does)."""
        parser = function_parser(fn)
        try:
            namespace = parser.parse_args(["--config", str(recipe)])
        except Exception as err:  # jsonargparse's ArgumentError
            raise ConfigError(describe_parse_error(str(err), parser, command)) from err
        return cls(parser, namespace, command)

    def dump(self) -> str:
        """The resolved recipe as YAML text (what ``run.json`` records)."""
        return self.parser.dump(self.namespace, skip_none=False)

    def override(self, values: Mapping[str, Any]) -> ParsedRecipe:
        """A copy with ``values`` (recipe keys, dotted or nested) parsed and validated on top.

        Raises:
            ConfigError: an unknown key or a bad value, in one line.
        """
        try:
            namespace = self.parser.parse_object(dict(values), namespace=self.namespace.clone())
        except Exception as err:  # jsonargparse's ArgumentError: a bad override
            raise ConfigError(describe_parse_error(str(err), self.parser, self.command)) from err
        return ParsedRecipe(self.parser, namespace, self.command)

    def kwargs(self) -> dict[str, Any]:
        """The function's keyword arguments, with groups instantiated as their dataclasses."""
        init = self.parser.instantiate_classes(self.namespace)
        return {k: v for k, v in init.items() if k not in ("config", "__path__")}


__all__ = ["HIDDEN", "ParsedRecipe", "describe_parse_error", "function_parser"]
