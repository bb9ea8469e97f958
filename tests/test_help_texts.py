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


@pytest.mark.parametrize(
    "module", ["training.cli", "export.cli", "animalclap_edge.cli.parser"], ids=str
)
def test_a_mistyped_option_is_told_with_its_commands_usage_and_the_closest_option(module, capsys):
    """`run --bundel x` printed the top-level usage (no option in it) and no hint."""
    import importlib

    build = importlib.import_module(module).build_parser
    hinted = 0
    for name, p in _parsers(build(), module):
        options = [o for a in p._actions for o in a.option_strings if len(o) > 6]
        if name == module or not options:
            continue
        typo = options[-1][:-1] + "x"  # "--bundle" -> "--bundlx"
        required = []  # a value for each required argument, so that the typo is what fails
        for a in p._actions:
            if a.option_strings and a.required:
                required += [a.option_strings[0], "1"]
            elif not a.option_strings and a.nargs not in ("?", "*", argparse.PARSER):
                required.append("1")
        with pytest.raises(SystemExit):
            build().parse_args([*name.split()[1:], *required, typo, "1"])
        err = capsys.readouterr().err
        command = name.split(" ", 1)[1]
        assert f"{command}: error:" in err, (name, err)
        if "unrecognized arguments" in err:  # else a value "1" was refused first
            assert f"{typo}: did you mean {options[-1]}?" in err, err
            hinted += 1
    assert hinted >= 3
