"""`genrec explore --static OUT`: the page as a folder of files, for sharing (no server, no try-it form).

Every API answer is written as a small script (`data/<name>.js` calling `GENREC_LOAD(name, value)`), so the page
works opened straight from disk (file://, where browsers refuse fetch()) as well as from any static web server.
The eval plots are copied under `files/`; nothing else of the run folder is copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from genrec.explore.data import RunIndex, json_safe

STATIC = Path(__file__).resolve().parent / "static"


def file_key(name: str) -> str:
    """A user id as a file name: [A-Za-z0-9_-] kept, every other byte as ~XX (static/app.js does the same)."""
    out = []
    for ch in name:
        if ch.isascii() and (ch.isalnum() or ch in "_-"):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def _write(path: Path, name: str, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, default=str)
    path.write_text(f"GENREC_LOAD({json.dumps(name)}, {payload});\n", encoding="utf-8")


def write_static(index: RunIndex, out: str | Path) -> Path:
    out = Path(out).resolve()
    if out == index.root:
        raise ValueError("--static: choose a folder other than the run folder itself")
    if out.exists() and any(out.iterdir()) and not (out / "data" / "overview.js").exists():
        raise FileExistsError(f"{out}: folder exists and is not an earlier `genrec explore --static` output")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "data").exists():
        shutil.rmtree(out / "data")
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    html = html.replace("<!--STATIC-->", '<script>window.GENREC_STATIC = true;</script>')
    (out / "index.html").write_text(html, encoding="utf-8")
    data = out / "data"
    overview = index.overview()
    overview["static"] = True
    _write(data / "overview.js", "overview", overview)
    _write(data / "curves.js", "curves", index.curves_view())
    _write(data / "items.js", "items", index.items_view())
    users = index.users_view()
    _write(data / "users.js", "users", users)
    seen = set()
    for protocol in index.predictions:
        for rows in index.predictions[protocol].values():
            for uid in rows:
                if uid not in seen:
                    seen.add(uid)
                    _write(data / "user" / f"{file_key(uid)}.js", f"user/{uid}", index.user_view(uid))
    _write(data / "rollouts.js", "rollouts", index.rollouts_view())
    for plot in (overview.get("eval") or {}).get("plots", []):
        src = index.root / plot
        if src.is_file():
            (out / "files" / plot).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / "files" / plot)
    return out
