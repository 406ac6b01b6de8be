"""Is a stage's output folder complete? The one place that answers it (issue 13: outputs never half-written).

Every command that writes a folder other stages read (`genrec fit-tokenizer`, `traces`, `sft`, `rl`, `evaluate`)
does its writing inside `writing(folder)`: the folder carries `.genrec_writing` (a JSON note with the command line)
from before the first file is written until the last one is, and the note is removed only when the command
succeeds. A process killed at any moment therefore leaves either the previous complete folder or a folder with the
note, never a half-written folder without it. Model folders (`<output_dir>/final`, build-model output) need no
note: `genrec.model_folder.save_model_folder` writes them into a temporary folder renamed into place.

Readers call `check_complete(folder)`: a folder with the note is refused with a one-line `IncompleteOutputError`
(a ValueError, so the CLI prints it without a traceback) that names the command to rerun. `genrec run` treats a
stage whose folder carries the note as not finished and runs it again.

Trainer checkpoints (`<output_dir>/checkpoint-N`, written by transformers' Trainer file by file, trainer_state.json
last) are judged by `checkpoint_complete`; `latest_checkpoint` is the newest complete one, so `--resume` never
loads a checkpoint a kill cut short.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WRITING_FILE = ".genrec_writing"
TRAINER_STATE = "trainer_state.json"  # transformers writes it last into a checkpoint
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# The command lines being run (outermost first): `genrec.cli.run_command` pushes each one, so the note names the
# command the user typed (e.g. `genrec run ...`) as the one to rerun.
_commands: list[str] = []
RERUN_ENV = "GENREC_RERUN_COMMAND"  # set by a parent that runs a stage in child processes (genrec/parallel.py)


class IncompleteOutputError(ValueError):
    """A stage output folder that an interrupted command left half-written."""


@contextmanager
def running(command_line: str) -> Iterator[None]:
    """Record `command_line` as running (for the note `writing` leaves)."""
    _commands.append(command_line)
    try:
        yield
    finally:
        _commands.pop()


def current_command() -> str:
    """The command line to rerun: the parent's (`RERUN_ENV`) when this process runs a stage for `genrec run`, else
    the outermost genrec command running in this process."""
    if os.environ.get(RERUN_ENV):
        return os.environ[RERUN_ENV]
    if _commands:
        return _commands[0]
    return shlex.join(["genrec", *sys.argv[1:]]) if sys.argv[1:] else "the genrec command that writes it"


def begin_writing(folder: str | os.PathLike, command: str | None = None) -> Path:
    """Put the note into `folder` (created if needed) before a command writes its first file there."""
    from sid_tokenizer.sidmap import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    note = {"command": command or current_command(), "pid": os.getpid()}
    atomic_write_text(folder / WRITING_FILE, json.dumps(note, indent=1))
    return folder


def end_writing(folder: str | os.PathLike) -> None:
    """Remove the note once the last file is written: the folder is complete."""
    (Path(folder) / WRITING_FILE).unlink(missing_ok=True)


@contextmanager
def writing(folder: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Mark `folder` as being written for the duration of the block; the mark is removed only on success."""
    yield begin_writing(folder, command)
    end_writing(folder)


def is_complete(folder: str | os.PathLike) -> bool:
    """False when `folder` carries the note of an interrupted (or still running) command."""
    return not (Path(folder) / WRITING_FILE).exists()


def incomplete_message(folder: str | os.PathLike) -> str:
    """The one-line explanation for a folder that carries the note."""
    path = Path(folder) / WRITING_FILE
    try:
        command = json.loads(path.read_text(encoding="utf-8")).get("command") or ""
    except (OSError, ValueError, AttributeError):
        command = ""
    rerun = f"rerun `{command}`" if command else "rerun the command that writes it"
    return (f"{folder}: incomplete output (a command writing it was interrupted, or is still running: {WRITING_FILE} "
            f"is there); {rerun} to finish it")


def check_complete(folder: str | os.PathLike) -> None:
    """Raise IncompleteOutputError (one line, names the command to rerun) for a half-written stage folder."""
    if not is_complete(folder):
        raise IncompleteOutputError(incomplete_message(folder))


def check_complete_for(path: str | os.PathLike) -> None:
    """`check_complete` on the folder a reader was given: `path` itself if a folder, else the folder holding it."""
    path = Path(path)
    check_complete(path if path.is_dir() else path.parent)


def checkpoint_complete(folder: str | os.PathLike) -> bool:
    """A Trainer checkpoint is complete once its trainer_state.json (written last) parses."""
    try:
        json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`<output_dir>/checkpoint-N` folders, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike, log=None) -> Path | None:
    """The newest complete checkpoint in `output_dir` (None when there is none). Incomplete ones newer than it
    (left by a kill during a save) are removed, so the trainer neither loads them nor keeps them in its rotation."""
    found = checkpoints(output_dir)
    while found and not checkpoint_complete(found[-1]):
        bad = found.pop()
        if log is not None:
            log(f"{bad}: incomplete checkpoint (no readable {TRAINER_STATE}; a save was interrupted), removed")
        shutil.rmtree(bad, ignore_errors=True)
    return found[-1] if found else None


def clear_checkpoints(output_dir: str | os.PathLike, log=None) -> None:
    """Remove `<output_dir>/checkpoint-N` left by an earlier training run (a fresh run must not resume from them,
    and the trainer's rotation would delete its own new checkpoints before their higher-numbered stale ones)."""
    found = checkpoints(output_dir)
    if found and log is not None:
        log(f"{output_dir}: starting afresh, removing {len(found)} checkpoint(s) of an earlier run")
    for p in found:
        shutil.rmtree(p, ignore_errors=True)


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a complete checkpoint was saved at (its trainer_state.json's global_step)."""
    return int(json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"])


def checkpoint_finished(checkpoint: str | os.PathLike, max_steps: int = -1) -> bool:
    """The checkpoint was saved at the end of training: its global step reached `max_steps` (when > 0) or the
    step count its trainer_state.json records as the run's total."""
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
        step, total = int(state.get("global_step", 0)), int(max_steps if max_steps > 0 else state.get("max_steps", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return total > 0 and step >= total


def train(trainer, checkpoint: str | os.PathLike | None) -> None:
    """`trainer.train(resume_from_checkpoint=checkpoint)`, except that a checkpoint saved at the end of training is
    loaded, not trained from: transformers (5.24) resuming from it runs one optimizer step past max_steps when
    max_steps ends mid-epoch, so rerunning a finished (or killed-while-saving-final) stage changed its weights."""
    if checkpoint is None or not checkpoint_finished(checkpoint, trainer.args.max_steps):
        if checkpoint is not None:
            continue_tensorboard(trainer, checkpoint_step(checkpoint))
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        return
    from transformers.trainer_callback import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))  # the weights (adapters too), as train() would load them
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE))


def continue_tensorboard(trainer, step: int) -> Path | None:
    """Before resuming at optimizer step `step`: log into the newest TensorBoard folder of `<output_dir>/runs` (the
    interrupted run's) instead of a new one, and purge its events after `step`, which the resumed run logs again.

    transformers names a new folder per start (date and host), so without this a resumed run shows in TensorBoard as
    two overlapping runs, with the steps between the checkpoint and the kill logged twice. Returns the folder reused
    (None: no TensorBoard callback, or no earlier events).
    """
    from transformers.integrations import TensorBoardCallback

    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)), None)
    if callback is None or callback.tb_writer is not None or callback._SummaryWriter is None:
        return None
    if not trainer.is_world_process_zero():
        return None
    runs = [p for p in (Path(trainer.args.output_dir) / "runs").glob("*") if any(p.glob("events.out.tfevents*"))]
    if not runs:
        return None
    previous = max(runs, key=lambda p: max(f.stat().st_mtime for f in p.glob("events.out.tfevents*")))
    callback.logging_dir = str(previous)
    callback.tb_writer = callback._SummaryWriter(log_dir=str(previous), purge_step=step + 1)
    return previous
