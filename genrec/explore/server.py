"""The `genrec explore` web server: a Bottle app over a `RunIndex`, served on localhost.

Routes (all GET unless noted; JSON unless noted):
  /                       the page (static/index.html)
  /static/<file>          the page's own JS/CSS and the vendored Chart.js (from the installed package)
  /files/<path>           a plot or report file of the run folder (only inside it; PNG/SVG/JSON/MD/TXT)
  /api/status             indexing progress {ready, step, done, total}
  /api/overview           run summary, tokenizer report, evaluation table, parts found/absent/malformed
  /api/curves             TensorBoard scalars per stage
  /api/items              every item (id, title, SID codes) and the prefix labels (the page builds the SID tree)
  /api/tree/<key>         one node of the SID tree ('root', '3', '3_1', ...)
  /api/users              the evaluated users with each method's hit rank
  /api/user/<id>          one user: profile, history, target, every method's top-K, per-step reasoning
  /api/rollouts           logged RL rollout groups (absent when the RL stage logged none)
  POST /api/recommend     {"model", "history", "topk", "beams"}: `genrec recommend` on CPU (the try-it form)

A request for a path outside the run folder ('..', absolute, encoded or through a link) gets 404; errors are
one-line JSON messages, never a stack trace.
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
from pathlib import Path
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

from genrec.explore.data import SERVED_SUFFIXES, RunIndex, json_safe

STATIC = Path(__file__).resolve().parent / "static"
STATIC_SUFFIXES = (".js", ".css", ".html", ".md", ".png", ".svg")


def safe_run_file(root: Path, path: str, suffixes: tuple[str, ...] = SERVED_SUFFIXES) -> Path | None:
    """`path` (as requested) inside the run folder `root`, or None: absolute paths, '..' segments, backslashes,
    NUL, links leading outside, non-files and file types the page does not show are all refused."""
    raw = unquote(path)  # catch a second level of encoding too
    if not raw or "\x00" in raw or "\\" in raw or raw.startswith("/") or ":" in raw.split("/")[0]:
        return None
    parts = raw.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    try:
        target = (root / Path(*parts)).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file() or target.suffix.lower() not in suffixes:
        return None
    return target


def _json(obj, status: int = 200):
    bottle.response.status = status
    bottle.response.content_type = "application/json; charset=utf-8"
    return json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, default=str)


def make_app(index: RunIndex) -> bottle.Bottle:
    """The WSGI app. `index` may still be building (in another thread): data routes answer 503 until it is ready."""
    app = bottle.Bottle(catchall=True)
    app.config["autojson"] = False

    def ready():
        if not index.progress.get("ready"):
            bottle.abort(503, "the run is still being indexed")

    def api(fn):
        def wrapper(*args, **kwargs):
            ready()
            try:
                return _json(fn(*args, **kwargs))
            except KeyError as e:
                return _json({"error": str(e.args[0]) if e.args else "not found"}, 404)
            except (ValueError, FileNotFoundError) as e:
                return _json({"error": str(e)}, 400)
        return wrapper

    @app.get("/")
    def page():
        return bottle.static_file("index.html", root=str(STATIC))

    @app.get("/favicon.ico")
    def favicon():
        bottle.response.status = 204
        return ""

    @app.get("/static/<path:path>")
    def static(path):
        target = safe_run_file(STATIC, path, STATIC_SUFFIXES)
        if target is None:
            bottle.abort(404, "not found")
        return bottle.static_file(target.name, root=str(target.parent))

    @app.get("/files/<path:path>")
    def run_file(path):
        target = safe_run_file(index.root, path)
        if target is None:
            bottle.abort(404, "not found")
        return bottle.static_file(target.name, root=str(target.parent))

    @app.get("/api/status")
    def status():
        return _json(dict(index.progress, run=index.root.name))

    app.get("/api/overview")(api(index.overview))
    app.get("/api/curves")(api(index.curves_view))
    app.get("/api/items")(api(index.items_view))
    app.get("/api/users")(api(index.users_view))
    app.get("/api/rollouts")(api(index.rollouts_view))

    @app.get("/api/tree/<key>")
    @api
    def tree(key):
        if key == "root":
            return index.tree_node(())
        try:
            codes = tuple(int(c) for c in key.split("_"))
        except ValueError:
            raise KeyError(f"bad SID prefix {key!r}") from None
        return index.tree_node(codes)

    @app.get("/api/user/<user_id>")
    @api
    def user(user_id):
        return index.user_view(user_id)

    @app.post("/api/recommend")
    @api
    def recommend():
        try:
            body = json.loads(bottle.request.body.read(1_000_000) or b"{}")
            topk, beams = int(body.get("topk", 10)), int(body.get("beams", 10))
        except (ValueError, TypeError, AttributeError):
            raise ValueError("expected a JSON body {model, history, topk, beams}") from None
        return index.recommend(str(body.get("model", "")), str(body.get("history", "")), topk, beams)

    def error_page(err: bottle.HTTPError):
        msg = err.body if isinstance(err.body, str) and err.status_code != 500 else "internal error (see the server log)"
        if err.status_code == 500 and err.exception is not None:
            print(f"[explore] error: {type(err.exception).__name__}: {err.exception}", file=sys.stderr)
        bottle.response.content_type = "application/json; charset=utf-8"
        return json.dumps({"error": msg, "status": err.status_code})

    for code in (400, 403, 404, 405, 500, 503):
        app.error(code)(error_page)
    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def start_server(index: RunIndex, host: str = "127.0.0.1", port: int = 8765, build: bool = True):
    """Serve in a background thread (indexing in another one when `build`); returns (server, base URL)."""
    app = make_app(index)
    server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_Quiet)
    if build:
        threading.Thread(target=_build, args=(index,), daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"


def _build(index: RunIndex) -> None:
    try:
        index.build()
    except Exception as e:  # noqa: BLE001 - shown on the page instead of a dead server
        index.progress.update(ready=False, step=f"error: {e}", error=str(e))


def serve(index: RunIndex, host: str, port: int) -> None:
    server, url = start_server(index, host, port)
    print(f"[explore] {index.root}: open {url} (Ctrl+C stops)", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("[explore] stopped", file=sys.stderr)
    finally:
        server.shutdown()
