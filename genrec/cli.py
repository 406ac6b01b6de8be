"""The `genrec` command line: one subcommand per pipeline stage.

Each subcommand lives in `genrec/commands/<name>.py` and exposes:
  HELP: str                              one-line description
  CONFIG_CLASSES: tuple[type, ...]       dataclasses parsed from flags and an optional `--config YAML`
  run(*configs) -> None                  does the work
Flags override values from the YAML file (TRL's `TrlParser`).

Global option, before the command: `genrec --threads N <command> ...` (or the env var GENREC_THREADS=N; the flag
wins) sets torch's intra-op threads (and inter-op threads, while torch still allows it) before the command runs;
0 or absent keeps torch's default (one per core). On a small shared machine 1 thread can be several times faster.
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
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
    "run": "genrec.commands.run",
    "demo": "genrec.commands.demo",
    "explore": "genrec.commands.explore",
}


THREADS_ENV = "GENREC_THREADS"


def _usage() -> str:
    lines = ["usage: genrec [--threads N] <command> [--config YAML] [--flag value ...]", "", "commands:"]
    for name, module_name in COMMANDS.items():
        try:
            help_text = importlib.import_module(module_name).HELP
        except ImportError:
            continue
        lines.append(f"  {name:<15}{help_text}")
    lines.append("")
    lines.append("`genrec <command> --help` lists a command's flags.")
    lines.append(f"--threads N (or {THREADS_ENV}=N): torch threads for the command (0 = torch's default).")
    return "\n".join(lines)


def parse_threads(value: str | int, source: str = "--threads") -> int:
    """A thread count from the flag or the env var: an integer >= 0 (0 = torch's default)."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{source}: expected a whole number of torch threads >= 0 (0 = torch's default), got {value!r}") from None
    if n < 0:
        raise ValueError(f"{source}: expected a whole number of torch threads >= 0 (0 = torch's default), got {n}")
    return n


def set_threads(n: int) -> None:
    """torch.set_num_threads(n), and set_num_interop_threads(n) if torch still allows it; n = 0 changes nothing.

    Why: on a small shared CPU machine torch's default (one thread per core) makes the threads of concurrent jobs
    wait on each other; fewer threads can be several times faster for small models.
    """
    if n <= 0:
        return
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # only possible before the first inter-op parallel work of the process (or once set already)


def _split_global(argv: list[str]) -> tuple[int, list[str]]:
    """(threads, remaining argv) from the global options before the command name; GENREC_THREADS is the default."""
    threads = parse_threads(os.environ[THREADS_ENV], THREADS_ENV) if os.environ.get(THREADS_ENV, "").strip() else 0
    while argv and argv[0].startswith("--threads"):
        opt = argv.pop(0)
        if opt.startswith("--threads="):
            threads = parse_threads(opt.split("=", 1)[1])
        elif opt == "--threads":
            if not argv:
                raise ValueError("--threads: expected a number of torch threads before the command, e.g. genrec --threads 1 rl ...")
            threads = parse_threads(argv.pop(0))
        else:
            raise ValueError(f"unknown global option {opt!r} (did you mean --threads N?)")
    return threads, argv


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
    from genrec.stage_output import running

    module = importlib.import_module(COMMANDS[name])
    configs = parse_command(name, argv)
    with running(shlex.join(["genrec", name, *argv])):  # named by the incomplete-output note, to rerun
        module.run(*configs)


LOGGERS = ("genrec", "eval", "rl", "sid_tokenizer")  # the packages whose info messages a command shows


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each message (a redirected or captured stream, not the first one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def show_info_messages() -> None:
    """Print genrec's own `log.info` messages (a step cap applied, the rows stage 2 trains on, the teacher cache) to
    stderr; without a handler Python shows only warnings. Once per process, and only on the main process of a
    data-parallel run (the others would repeat them)."""
    if os.environ.get("RANK", "0") != "0":
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        threads, argv = _split_global(argv)
    except ValueError as e:
        print(f"genrec: error: {e}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"genrec: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    set_threads(threads)
    show_info_messages()
    try:
        run_command(name, rest)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # Our own errors carry file/line/field; print them without a library stack trace.
        if os.environ.get("GENREC_DEBUG"):
            raise
        from genrec.data.errors import one_line

        print(f"genrec {name}: error: {one_line(str(e))}", file=sys.stderr)
        print("(set GENREC_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
