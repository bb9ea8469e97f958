"""What the three command lines share: the --help formatter and how an error reads
in one line (argparse and errno only: cheap to import)."""

from __future__ import annotations

import argparse
import difflib
import errno
from collections.abc import Iterable
from typing import TypeVar, overload

_N = TypeVar("_N")

# Files the machine refuses (not bugs): what to do instead.
_REFUSED = {
    errno.EROFS: "give an --out on a writable file system",
    errno.EACCES: "check its permissions: outputs go to an --out you may write to",
    errno.EPERM: "check its permissions: outputs go to an --out you may write to",
    errno.ENOSPC: "free space there or give an --out elsewhere; a run resumes where it stopped",
    errno.EDQUOT: "free space there or give an --out elsewhere; a run resumes where it stopped",
}


def refused_file(e: OSError) -> str | None:
    """A read-only, forbidden or full file system as one line naming the file and what
    to do; None for other OS errors, which stay tracebacks."""
    advice = _REFUSED.get(e.errno) if e.errno is not None else None
    if advice is None:
        return None
    # a write that fills the disk names no file (the open did)
    return f"{e.filename + ': ' if e.filename else ''}{e.strerror}; {advice}"


def one_line(e: BaseException) -> str:
    """An error's message in one line. A DataLoader worker's error reaches the main
    process as "Caught X in DataLoader worker process 0. Original Traceback ...":
    its last line is the message."""
    text = str(e)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help ends each option with its default; options with none to show (unset,
    flags off, required) get no "(default: None)" noise, and lists read as typed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text  # the help says it in words
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or default == []
            or action.required
            or not action.option_strings
        ):
            return text
        if isinstance(default, list):
            shown = " ".join(map(str, default)).replace("%", "%%")
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """A command's parser (`add_subparsers(parser_class=CommandParser)`): an option it
    does not know is said with the command's usage and the closest option it has.
    argparse left such options to the top-level parser, whose usage names no option."""

    # the overloads of argparse's own stub, so that a caller's namespace type is kept
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: object = None
    ) -> tuple[object, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(unknown_arguments(self, extras))
        return parsed, extras


def unknown_arguments(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """ "unrecognized arguments: ...", with the closest of `parser`'s options to each
    unknown one."""
    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in extras:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
            hints += [f"{arg.split('=', 1)[0]}: did you mean {close[0]}?"] if close else []
    told = f"unrecognized arguments: {' '.join(extras)}"
    return f"{told} ({'; '.join(hints)})" if hints else f"{told} (see --help)"


def error_line(e: BaseException, user_errors: tuple[type[BaseException], ...]) -> str | None:
    """The one line a command line prints for `e`: a user error's message (a loader
    worker's as its last line), or a refused file with its remedy; None for anything
    else, a bug, whose traceback stands."""
    if isinstance(e, user_errors):
        return one_line(e)
    if isinstance(e, OSError):
        return refused_file(e)
    return None
