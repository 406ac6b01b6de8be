"""`genrec synth`: write the built-in synthetic job market (the offline default dataset) as RecBole files."""

from __future__ import annotations

import sys
import time

from genrec.data.synth import SynthConfig, generate_market, write_market

HELP = "Generate the synthetic job market (jobs-synth.{inter,item,user}) into --out."
CONFIG_CLASSES = (SynthConfig,)


def run(cfg: SynthConfig) -> None:
    """Generate, write atomically, and print where the files went and what the market looks like."""
    t0 = time.perf_counter()
    market = generate_market(cfg)
    if cfg.progress:
        print(f"[synth] writing files to {cfg.out}", file=sys.stderr, flush=True)
    paths = write_market(market, cfg.out)
    stats = market.summary()
    took = time.perf_counter() - t0
    print(
        f"wrote {stats['jobs']} jobs, {stats['users']} applicants, {stats['interactions']} applications "
        f"(sequence length {stats['seq_len_min']}-{stats['seq_len_max']}, mean {stats['seq_len_mean']}) in {took:.1f}s"
    )
    print(
        f"signal (next application vs base rate): same industry {stats['next_same_industry']:.2f} vs "
        f"{stats['base_same_industry']:.2f}, same family {stats['next_same_family']:.2f} vs "
        f"{stats['base_same_family']:.2f}, seniority down {stats['next_seniority_down']:.2f}"
    )
    for p in paths.values():
        print(f"  {p}")
