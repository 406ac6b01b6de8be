"""Where the benchmark scripts find each data set: the shared real sets beside the repo, the synthetic market made
on demand (one definition for scripts/run_baselines.py and scripts/bench_sasrec.py)."""

from __future__ import annotations

import sys
from pathlib import Path


def dataset_path(name: str, data_root: str | Path, synth_dir: str | Path) -> Path | None:
    """`jobs-synth` is generated into `synth_dir` when absent; any other name is `<data_root>/<name>` (None, with a
    note on stderr, when that folder is missing)."""
    if name == "jobs-synth":
        path = Path(synth_dir)
        if not (path / "jobs-synth.inter").exists():
            from genrec.data.synth import SynthConfig, generate_market, write_market

            write_market(generate_market(SynthConfig(out=str(path))), path)
        return path
    path = Path(data_root) / name
    if not path.exists():
        print(f"skip {name}: {path} not found", file=sys.stderr)
        return None
    return path
