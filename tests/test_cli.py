"""One CLI style: every subcommand is listed with a one-line description, answers --help with its defaults, and
takes both `--snake_case` and `--kebab-case` options."""

import subprocess
import sys

import pytest

from hf_vit.benchmark import parse_settings
from hf_vit.cli import COMMANDS
from hf_vit.cli import main as cli_main
from hf_vit.cli_args import CommandParser


def hf_vit(*args):
    return subprocess.run([sys.executable, "-m", "hf_vit.cli", *args], capture_output=True, text=True, timeout=120)


def test_every_subcommand_is_listed_and_describes_its_options(capsys):
    listing = hf_vit("--help")  # the installed entry point, in a process of its own
    assert listing.returncode == 0
    for name, (_, description) in COMMANDS.items():
        assert f"  {name:<10} {description}" in listing.stdout
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_status:
            cli_main([name, "--help"])
        out = capsys.readouterr().out
        assert exit_status.value.code == 0 and "usage: hf-vit " + name in out
        assert "(default:" in out, name


@pytest.mark.parametrize("spelling", ["snake", "kebab"])
def test_both_spellings_give_the_same_settings(spelling):
    options = {"batch_size": "4", "num_labels": "7", "onednn_linear": "off"}
    argv = []
    for name, value in options.items():
        argv += ["--" + (name if spelling == "snake" else name.replace("_", "-")), value]
    settings, _ = parse_settings(argv)
    assert (settings.batch_size, settings.num_labels, settings.onednn_linear) == (4, 7, "off")


def test_command_parser_registers_each_spelling_once():
    parser = CommandParser(prog="x")
    parser.add_argument("--top_k", type=int, default=5, help="labels")
    parser.add_argument("--repo-id", required=True, help="the repository")
    assert parser.parse_args(["--top-k", "2", "--repo_id", "a/b"]) == parser.parse_args(
        ["--top_k", "2", "--repo-id", "a/b"]
    )
    help_text = " ".join(parser.format_help().split())
    assert parser.parse_args(["--repo-id", "a/b"]).top_k == 5 and "labels (default: 5)" in help_text
    assert "the repository (default" not in help_text  # a required option has no default to show
