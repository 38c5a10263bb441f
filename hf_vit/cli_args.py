"""One option style for every `hf-vit` subcommand: `--snake_case` and `--kebab-case` both work, and `--help` shows
each option's default.

Training and evaluation parse with transformers' `HfArgumentParser`, which accepts both spellings already, and this
module's `HelpFormatter`; `CommandParser` gives the argparse-based subcommands (info, convert, predict, benchmark,
push) the same behaviour.
"""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in --help, but for required options, which have none."""

    def _get_help_string(self, action):
        return action.help if action.required else super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose long options answer to both spellings; help lists the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        spellings = []
        for name in names:
            spellings.append(name)
            if name.startswith("--"):
                for other in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if other not in spellings:
                        spellings.append(other)
        if "dest" not in kwargs and names and names[0].startswith("--"):
            kwargs["dest"] = names[0][2:].replace("-", "_")
        return super().add_argument(*spellings, **kwargs)
