"""The --help formatter the three command lines share (argparse only: cheap to import)."""

from __future__ import annotations

import argparse


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
