"""The `genrec` command line: one subcommand per pipeline stage.

Each subcommand lives in `genrec/commands/<name>.py` and exposes:
  HELP: str                              one-line description
  CONFIG_CLASSES: tuple[type, ...]       dataclasses parsed from flags and an optional `--config YAML`
  run(*configs) -> None                  does the work
Flags override values from the YAML file (TRL's `TrlParser`).
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, str] = {
    "synth": "genrec.commands.synth",
    "fit-tokenizer": "genrec.commands.fit_tokenizer",
    "build-model": "genrec.commands.build_model",
    "traces": "genrec.commands.traces",
    "sft": "genrec.commands.sft",
    "rl": "genrec.commands.rl",
    "evaluate": "genrec.commands.evaluate",
    "recommend": "genrec.commands.recommend",
    "demo": "genrec.commands.demo",
}


def _usage() -> str:
    lines = ["usage: genrec <command> [--config YAML] [--flag value ...]", "", "commands:"]
    for name, module_name in COMMANDS.items():
        try:
            help_text = importlib.import_module(module_name).HELP
        except ImportError:
            continue
        lines.append(f"  {name:<15}{help_text}")
    lines.append("")
    lines.append("`genrec <command> --help` lists a command's flags.")
    return "\n".join(lines)


def parse_command(name: str, argv: list[str]) -> tuple:
    """Parse `argv` (flags and an optional `--config YAML`) into the config dataclasses of command `name`."""
    from trl import TrlParser

    module = importlib.import_module(COMMANDS[name])
    parser = TrlParser(module.CONFIG_CLASSES, prog=f"genrec {name}", description=module.HELP)
    return tuple(parser.parse_args_and_config(argv))


def run_command(name: str, argv: list[str]) -> None:
    """Run one subcommand in-process, exactly as `genrec <name> <argv>` would (errors propagate)."""
    if name not in COMMANDS:
        raise ValueError(f"unknown command '{name}' (known: {', '.join(COMMANDS)})")
    module = importlib.import_module(COMMANDS[name])
    module.run(*parse_command(name, argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"genrec: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        run_command(name, rest)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # Our own errors carry file/line/field; print them without a library stack trace.
        if os.environ.get("GENREC_DEBUG"):
            raise
        print(f"genrec {name}: error: {e}", file=sys.stderr)
        print("(set GENREC_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
