"""Every command's --help of the three command lines, as a user reads it."""

import argparse

import pytest


def _parsers(p: argparse.ArgumentParser, name: str):
    """(name, parser) of `p` and of every sub-command under it."""
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


@pytest.mark.parametrize(
    "module", ["training.cli", "export.cli", "animalclap_edge.cli.parser"], ids=str
)
def test_no_help_text_shows_an_escaped_percent(module):
    """argparse %-formats `help=` strings but prints `description=` as written, so a
    '95%%' there reached users as it stands."""
    import importlib

    build = importlib.import_module(module).build_parser
    helps = dict(_parsers(build(), module))
    assert len(helps) > 3
    for name, p in helps.items():
        assert "%%" not in p.format_help(), name
