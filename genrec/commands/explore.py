"""`genrec explore`: a local web page that shows why a run recommends what it does.

    genrec explore --run runs/demo                   # serves http://127.0.0.1:8765/
    genrec explore --run runs/demo --static site/    # the page as files, for sharing (no try-it form)

It reads only the run folder (and the dataset the run names, for job titles and profiles); see docs/explore.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HELP = "Web page over a run folder: evaluation, training curves, SID tree, each user's lists and reasoning, try-it."


@dataclass
class ExploreConfig:
    """Which run to show and where."""

    run: str = field(default="", metadata={"help": "Run folder written by `genrec run` or `genrec demo`."})
    port: int = field(default=8765, metadata={"help": "Port on localhost (0 = any free port)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (default: this machine only)."})
    static: str = field(default="", metadata={
        "help": "Write the page as a folder of files here instead of serving it (no try-it form)."})
    data: str = field(default="", metadata={
        "help": "Dataset of the run, when the path recorded in run_summary.json is not found from here."})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {self.port}")


CONFIG_CLASSES = (ExploreConfig,)


def run(cfg: ExploreConfig) -> None:
    import sys
    from pathlib import Path

    from genrec.explore.data import RunIndex

    if not cfg.run:
        raise ValueError("--run is required: a folder written by `genrec run` or `genrec demo`")
    if not Path(cfg.run).is_dir():
        raise FileNotFoundError(f"{cfg.run}: run folder not found (--run)")
    index = RunIndex(cfg.run, data=cfg.data or None)
    if cfg.static:
        from genrec.explore.static_site import write_static

        index.build(on_progress=lambda p: print(f"[explore] {p['step']} ({p['done']}/{p['total']})", file=sys.stderr))
        out = write_static(index, cfg.static)
        print(f"[explore] wrote {out}: open {out / 'index.html'} in a browser")
        return
    try:
        from genrec.explore.server import serve
    except ImportError as e:
        raise ValueError(f"genrec explore needs the 'explore' extra: pip install -e '.[explore]' ({e})") from None
    try:
        serve(index, cfg.host, cfg.port)
    except OSError as e:
        raise ValueError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror}); pick another --port") from None
