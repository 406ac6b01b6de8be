"""`genrec explore`: the data it extracts from a tiny run, its routes, path traversal, malformed and partial run
folders, the static export, and (when Debian's chromium and Playwright are installed) the page in a real browser."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import pytest

from genrec.grammar import block_levels

pytest.importorskip("bottle", reason="the 'explore' extra (bottle) is not installed")

from genrec.cli import main, run_command  # noqa: E402
from genrec.explore.data import RunIndex  # noqa: E402
from genrec.explore.server import start_server  # noqa: E402
from genrec.explore.static_site import file_key  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _rollout_group(step: int, group: int, target: str, sid: str) -> dict:
    rollouts = []
    for i, (rewards, adv) in enumerate([([1, 1, 0, 0], [0.9, 1.2, -0.5, 0.0]), ([1, 0, 0, 0], [0.9, -0.8, -0.5, 0.0]),
                                        ([0, 0, 0, 0], [-1.7, -0.8, -0.5, 0.0]), ([1, 1, 1, 0], [0.9, 1.2, 1.5, 0.0])]):
        rollouts.append({"completion": f"<think> block {i} </think>{sid}", "sid": sid, "item_id": target,
                         "blocks": [f"block {i}.{k}" for k in range(4)], "step_rewards": rewards, "step_advantages": adv,
                         "outcome_reward": 0.0, "outcome_advantage": 0.0})
    return {"format": "genrec-rollouts/1", "step": step, "group": group, "user_id": "U00001", "prompt": "history ...",
            "target": target, "target_sid": sid, "algorithm": "sapo", "num_generations": 4, "rollouts": rollouts}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny `genrec run` with the data inside the run folder (as `genrec demo` does) plus a logged rollout file."""
    out = tmp_path_factory.mktemp("explore") / "demo"
    run_command("synth", ["--out", str(out / "data"), "--num_jobs", "120", "--num_users", "60", "--seed", "0"])
    run_command("run", ["--data", str(out / "data"), "--out", str(out), "--sft1_steps", "4", "--sft2_steps", "4",
                        "--rl_steps", "1", "--rl_prompts", "4", "--eval_users", "8", "--num_beams", "4",
                        "--sasrec_epochs", "1", "--sft_processes", "1"])
    sid_map = json.loads((out / "tokenizer" / "sid_map.json").read_text())
    item, sid = next(iter(sid_map["items"].items()))
    lines = [json.dumps(_rollout_group(step, g, item, sid)) for step in (1, 2) for g in range(2)]
    (out / "rl" / "rollouts.jsonl").write_text("\n".join(lines) + "\nnot json\n")
    return out


@pytest.fixture(scope="module")
def index(run_dir) -> RunIndex:
    return RunIndex(run_dir).build()


@pytest.fixture(scope="module")
def server(index):
    srv, url = start_server(index, port=0, build=False)
    yield srv, url
    srv.shutdown()


def _get(server, path: str) -> tuple[int, bytes]:
    """A raw GET (http.client sends the path as given: no normalisation of '..' or '%2e')."""
    host, port = server[0].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_index_reads_every_part(index):
    parts = index.parts
    for name in ("run summary", "tokenizer", "dataset", "evaluation", "baseline lists", "training curves", "models"):
        assert parts[name]["status"] == "ok", (name, parts[name])
    assert parts["RL rollouts"]["status"] == "ok" and "1 unreadable lines skipped" in parts["RL rollouts"]["message"]
    overview = index.overview()
    assert {"mostpop", "recent", "sasrec"} <= set(overview["eval"]["results"])
    assert overview["tokenizer"]["codebook_sizes"] and overview["eval"]["plots"]
    assert sorted(m.rsplit(":", 1)[1] for m in overview["models"]) == ["rl", "sft1", "sft2"]
    curves = index.curves_view()
    assert {"sft1", "sft2", "rl"} <= set(curves)
    assert "train/reward" in curves["rl"]["key"]
    assert any(t.startswith("train/sid/match_rate/") for t in curves["rl"]["key"])


def test_user_view_has_lists_hits_and_steps(index):
    users = index.users_view()
    assert users["protocol"] == "all" and len(users["users"]) == 8
    assert {"mostpop", "recent"} <= set(users["methods"])
    uid = users["users"][0]["user_id"]
    view = index.user_view(uid)
    assert view["profile"] and view["history"] and view["target"]["title"] and view["target"]["sid"]
    methods = {m["name"]: m for m in view["protocols"]["all"]["methods"]}
    reasoning = next(m for name, m in methods.items() if name.endswith(":sft2"))
    assert reasoning["kind"] == "generative" and reasoning["layout"] == "coarse"  # the traces' default layout
    steps = reasoning["steps"]
    assert len(steps) == len(view["target"]["codes"])
    top = reasoning["items"][0]
    for level, s in enumerate(steps):
        assert s["token"] == f"<{'abcd'[level]}_{top['codes'][level]}>"
        # the coarse model wrote a block before each of the first K - 2 tokens (at least one), none before the rest
        assert (s["reasoning"] is not None) == (level in block_levels("coarse", len(steps)))
        assert s["prefix_match"] == (top["codes"][:level + 1] == view["target"]["codes"][:level + 1])
    assert steps[0]["label"] == index.labels[steps[0]["token"]]
    direct = next(m for name, m in methods.items() if name.endswith(":sft1"))
    assert direct["steps"] and all(s["reasoning"] is None for s in direct["steps"])
    for m in methods.values():  # a hit is marked exactly where the target is
        assert [it["rank"] for it in m["items"] if it["hit"]] == ([m["hit_rank"]] if m["hit_rank"] else [])
    assert methods["mostpop"]["source"] == "recomputed by the explorer" and methods["mostpop"]["steps"] is None
    with pytest.raises(KeyError):
        index.user_view("nobody")


def test_recommend_route(server, index):
    host, port = server[0].server_address[:2]
    model = next(m for m in index.models if m.endswith(":rl"))
    history = ", ".join(index.user_view(index.users_view()["users"][0]["user_id"])["history"][i]["id"] for i in range(2))

    def post(body) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("POST", "/api/recommend", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = (resp.status, json.loads(resp.read()))
        conn.close()
        return out

    status, body = post({"model": model, "history": history, "topk": 5, "beams": 4})
    assert status == 200, body
    assert len(body["recommendations"]) == 5 and body["layout"] == "coarse"
    first = next(r for r in body["recommendations"] if not r["filled"])
    assert len(first["steps"]) == 4 and first["steps"][0]["label"] == index.labels[first["steps"][0]["token"]]
    status, body = post({"model": "nope", "history": history})
    assert status == 400 and "unknown model" in body["error"]


def test_tree_node_counts_labels_and_examples(index):
    root = index.tree_node(())
    assert root["count"] == 120 and sum(c["count"] for c in root["children"]) == 120
    child = root["children"][0]
    assert child["label"] and child["examples"]
    node = index.tree_node(tuple(child["codes"] if "codes" in child else [child["code"]]))
    assert node["count"] == child["count"]
    items = index.items_view()
    assert len(items["items"]) == 120 and items["levels"] == 4 and items["labels"]["0"] == index.labels["<a_0>"]


def test_routes(server):
    status, body = _get(server, "/")
    assert status == 200 and b"genrec explore" in body
    assert _get(server, "/static/vendor/chart.umd.min.js")[0] == 200
    for path in ("/api/status", "/api/overview", "/api/curves", "/api/items", "/api/users", "/api/rollouts",
                 "/api/tree/root"):
        status, body = _get(server, path)
        assert status == 200, path
        json.loads(body)
    users = json.loads(_get(server, "/api/users")[1])["users"]
    status, body = _get(server, f"/api/user/{users[0]['user_id']}")
    assert status == 200 and json.loads(body)["user_id"] == users[0]["user_id"]
    rollouts = json.loads(_get(server, "/api/rollouts")[1])
    assert len(rollouts["groups"]) == 4 and rollouts["groups"][0]["rollouts"][0]["step_advantages"]
    for path, code in (("/api/user/nobody", 404), ("/api/tree/99_99", 404), ("/api/tree/x", 404), ("/api/nothing", 404)):
        status, body = _get(server, path)
        assert status == code and "error" in json.loads(body) and b"Traceback" not in body, path
    assert _get(server, "/files/eval/ndcg_at_k.png")[0] == 200


@pytest.mark.parametrize("path", [
    "/files/../run_summary.json", "/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files/..%2f..%2fetc%2fpasswd",
    "/files/%252e%252e/run_summary.json", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/eval/../../demo/run_summary.json",
    "/files/..\\run_summary.json", "/files/sft1/final/model.safetensors", "/static/../data.py", "/static/%2e%2e/data.py",
    "/static//etc/passwd", "/files/escape/passwd",
])
def test_paths_outside_the_run_folder_are_404(server, run_dir, path):
    link = run_dir / "escape"
    if not link.exists():
        link.symlink_to("/etc")  # a link inside the run folder that leads outside it
    status, body = _get(server, path)
    assert status == 404 and b"root:" not in body and b"Traceback" not in body


def test_partial_and_malformed_run_folders(tmp_path, run_dir):
    partial = tmp_path / "partial"
    (partial / "eval").mkdir(parents=True)
    (partial / "run_summary.json").write_text("{not json")
    (partial / "eval" / "eval_report.json").write_text(json.dumps({"meta": {}}))  # an older/other format
    ix = RunIndex(partial).build()
    assert ix.parts["run summary"]["status"] == "error" and "not valid JSON" in ix.parts["run summary"]["message"]
    assert ix.parts["evaluation"]["status"] == "error" and "missing key(s) results" in ix.parts["evaluation"]["message"]
    for name in ("tokenizer", "dataset", "training curves", "RL rollouts", "models"):
        assert ix.parts[name]["status"] == "absent", name
    assert ix.overview()["eval"] is None and ix.users_view()["users"] == []
    # A copy of the real run without RL, a broken predictions file and no dataset: the rest still shows.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("rl", "data", "*.safetensors", "escape"))
    summary = json.loads((copy / "run_summary.json").read_text())
    summary["data"] = str(tmp_path / "gone")  # the dataset was moved away
    (copy / "run_summary.json").write_text(json.dumps(summary))
    bad = next((copy / "eval").glob("predictions_*sft2_all.jsonl"))
    bad.write_text('{"user_id": "u"}\n')
    ix = RunIndex(copy).build()
    assert ix.parts["dataset"]["status"] == "absent" and "--data" in ix.parts["dataset"]["message"]
    assert ix.parts["evaluation"]["status"] == "error" and bad.name in ix.parts["evaluation"]["message"]
    assert ix.parts["RL rollouts"]["status"] == "absent"
    users = ix.users_view()
    assert users["users"] and not any(m.endswith(":sft2") for m in users["methods"])
    view = ix.user_view(users["users"][0]["user_id"])
    assert view["target"]["sid"] and view["target"]["title"] == ""  # ids and SIDs without the dataset
    srv, _ = start_server(ix, port=0, build=False)
    try:
        assert _get((srv,), "/api/overview")[0] == 200
    finally:
        srv.shutdown()


def test_cli_errors_and_static_export(tmp_path, run_dir, index, capsys):
    assert main(["explore", "--run", str(tmp_path / "missing")]) == 1
    assert "run folder not found" in capsys.readouterr().err
    out = tmp_path / "site"
    assert main(["explore", "--run", str(run_dir), "--static", str(out)]) == 0
    assert (out / "index.html").read_text().count("GENREC_STATIC = true") == 1
    assert (out / "static" / "vendor" / "chart.umd.min.js").is_file()
    assert (out / "files" / "eval" / "ndcg_at_k.png").is_file()
    uid = index.users_view()["users"][0]["user_id"]
    text = (out / "data" / "user" / f"{file_key(uid)}.js").read_text()
    assert text.startswith(f'GENREC_LOAD("user/{uid}", ')
    assert file_key("a/b c") == "a~2Fb~20c"


def _browser_or_skip():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (Python) is not installed (pip install playwright)")
    return sync_playwright


def test_page_in_headless_chromium(server, run_dir, tmp_path):
    sync_playwright = _browser_or_skip()
    url = f"http://127.0.0.1:{server[0].server_address[1]}/"
    shots = Path(__file__).resolve().parents[1] / "runs" / "explore_screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector(".eval-table", timeout=30_000)
            assert "mostpop" in page.inner_text(".eval-table")
            page.wait_for_selector("canvas")
            page.screenshot(path=str(shots / "run.png"), full_page=True)
            # search a job and open its path in the SID tree
            page.click("a[data-tab=tree]")
            page.fill("#search", "J0001")
            page.wait_for_selector(".search-result")
            page.click(".search-result >> nth=0")
            page.wait_for_selector("#focus-item")
            assert "J0001" in page.inner_text("#focus-item") and page.locator(".crumb").count() >= 4
            page.screenshot(path=str(shots / "tree.png"), full_page=True)
            # open a user: history, each method's list, per-step reasoning with labels and matches
            page.click("a[data-tab=users]")
            page.wait_for_selector(".user-row")
            page.click(".user-row >> nth=0")
            page.wait_for_selector(".steps .step")
            assert page.locator("#history tr").count() >= 2
            assert page.locator(".method").count() >= 5
            card = page.locator(".method", has_text=":sft2").first
            assert card.locator(".steps .step").count() == 4
            assert card.locator(".step-match, .step-miss").count() == 4
            assert page.locator(".tag-hit, .method h3 .muted").count() >= 5  # every card says hit or no hit
            page.screenshot(path=str(shots / "user.png"), full_page=False)
            page.click("a[data-tab=rollouts]")
            page.wait_for_selector(".rollout-group")
            assert page.locator(".rollout-group").count() == 2  # two groups per logged step
            page.screenshot(path=str(shots / "rollouts.png"), full_page=False)
            # try it: the user's history through `genrec recommend`'s code on CPU
            page.go_back()
            page.wait_for_selector(".steps .step")
            page.click("text=try this history")
            page.wait_for_selector("#try-history")
            assert page.input_value("#try-history")
            page.click("#try-go")
            page.wait_for_selector(".try-rec", timeout=60_000)
            assert page.locator(".try-rec").count() == 10
            # the --static export opens from disk (file://) with the same views
            site = tmp_path / "site"
            assert main(["explore", "--run", str(run_dir), "--static", str(site)]) == 0
            page.goto((site / "index.html").as_uri() + "#users")
            page.click(".user-row >> nth=0")
            page.wait_for_selector(".steps .step")
            assert errors == [], errors
        finally:
            browser.close()
