"""Everything `genrec explore` shows, read from one run folder into JSON-ready dicts.

A run folder is what `genrec run` / `genrec demo` writes (docs/explore.md lists the files read). Each part is
read on its own: a missing part is reported as absent, a malformed one as an error with a one-line message
naming the file, and neither stops the other parts. The dataset the run was trained on (named in
run_summary.json, or given with --data) supplies job titles and user profiles; without it items show as ids.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rl.rollout_log import ROLLOUT_FILE, ROLLOUT_FORMAT  # noqa: F401 - written by `genrec rl` (rl/rollout_log.py)

EVAL_DIR = "eval"
MAX_ROLLOUT_GROUPS = 2000
SERVED_SUFFIXES = (".png", ".svg", ".jpg", ".json", ".jsonl", ".md", ".txt")

# Curves shown first per stage (the rest can be picked in the page).
KEY_CURVES = (
    "train/loss", "eval/loss", "train/train_loss", "train/mean_token_accuracy", "eval/mean_token_accuracy",
    "train/reward", "train/sid/exact_match_rate", "train/sid/match_rate/", "train/sid/frac_zero_adv_groups/",
    "train/kl", "train/sid/advantage/mean_abs",
)


class PartError(Exception):
    """A run-folder part that exists but cannot be read; the message names the file and what is wrong."""


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise PartError(f"{what}: not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise PartError(f"{what}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _need_dict(obj, what: str, keys: tuple[str, ...] = ()) -> dict:
    if not isinstance(obj, dict):
        raise PartError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise PartError(f"{what}: missing key(s) {', '.join(missing)} (written by an older or newer genrec?)")
    return obj


def json_safe(obj):
    """JSON has no NaN/inf: turn them into null (eval reports and logs can hold them)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def sid_key(codes) -> str:
    """A SID prefix as a URL/file friendly key: (3, 1) -> '3_1'; () -> 'root'."""
    return "_".join(str(int(c)) for c in codes) if len(codes) else "root"


class RunIndex:
    """The readable parts of a run folder. Call `build()` (it reports progress in `progress`) before the views."""

    def __init__(self, run_dir: str | Path, data: str | Path | None = None) -> None:
        self.root = Path(run_dir).resolve()
        self.data_override = str(data) if data else ""
        self.parts: dict[str, dict] = {}
        self.progress = {"ready": False, "step": "starting", "done": 0, "total": 0}
        self.summary: dict = {}
        self.tokenizer_report: dict | None = None
        self.sid_map = None
        self.labels: dict[str, str] = {}
        self.data = None  # genrec RecData
        self.template: str | None = None
        self.report: dict | None = None
        self.predictions: dict[str, dict[str, dict[str, dict]]] = {}  # protocol -> method -> user -> record
        self.method_info: dict[str, dict] = {}
        self.curves: dict[str, dict[str, list]] = {}
        self.rollouts: list[dict] = []
        self.rollout_path: str = ""
        self.models: dict[str, Path] = {}
        self._recommenders: dict[str, object] = {}
        self._rec_lock = threading.Lock()

    # ------------------------------------------------------------------ building
    def build(self, on_progress: Callable[[dict], None] | None = None) -> "RunIndex":
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: run folder not found (--run: a folder written by genrec run/demo)")
        steps = [
            ("run summary", self._load_summary),
            ("tokenizer", self._load_tokenizer),
            ("dataset", self._load_data),
            ("evaluation", self._load_eval),
            ("baseline lists", self._load_baselines),
            ("training curves", self._load_curves),
            ("RL rollouts", self._load_rollouts),
            ("models", self._find_models),
        ]
        self.progress.update(total=len(steps), done=0)
        for i, (name, fn) in enumerate(steps):
            self.progress.update(step=f"reading {name}", done=i)
            if on_progress:
                on_progress(dict(self.progress))
            t0 = time.perf_counter()
            try:
                fn()
            except PartError as e:
                self._set(name, "error", str(e))
            except Exception as e:  # noqa: BLE001 - one unreadable part must not take the page down
                self._set(name, "error", f"{type(e).__name__}: {e}")
            self.parts.setdefault(name, {"status": "ok", "message": ""})
            self.parts[name]["seconds"] = round(time.perf_counter() - t0, 2)
        self.progress.update(ready=True, step="ready", done=len(steps))
        if on_progress:
            on_progress(dict(self.progress))
        return self

    def _set(self, part: str, status: str, message: str) -> None:
        self.parts[part] = {"status": status, "message": message}

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def _locate(self, recorded: str, inside: bool) -> Path | None:
        """A path recorded in a run file (relative to the folder the run was started from) as it is now."""
        if not recorded:
            return None
        p = Path(recorded)
        candidates = [p] if p.is_absolute() else [Path.cwd() / p]
        out = str(self.summary.get("config", {}).get("run", {}).get("out", "")) if isinstance(
            self.summary.get("config"), dict) else ""
        if out:
            try:
                candidates.append(self.root / Path(recorded).relative_to(Path(out)))
            except ValueError:
                pass
        candidates.append(self.root / p.name)
        for c in candidates:
            try:
                c = c.resolve()
            except OSError:
                continue
            if c.exists() and (not inside or c.is_relative_to(self.root)):
                return c
        return None

    def _load_summary(self) -> None:
        path = self.root / "run_summary.json"
        if not path.is_file():
            self._set("run summary", "absent", "run_summary.json not found (not a `genrec run` folder, or unfinished)")
            return
        self.summary = _need_dict(_read_json(path, "run_summary.json"), "run_summary.json")
        self._set("run summary", "ok", "")

    def _load_tokenizer(self) -> None:
        from sid_tokenizer.sidmap import SIDMap

        tok = self.root / "tokenizer"
        report = tok / "tokenizer_report.json"
        if report.is_file():
            self.tokenizer_report = _need_dict(_read_json(report, "tokenizer/tokenizer_report.json"),
                                               "tokenizer/tokenizer_report.json")
        sid_path = next((p for p in [tok / "sid_map.json", *sorted(self.root.glob("*/final/sid_map.json"))]
                         if p.is_file()), None)
        if sid_path is None:
            self._set("tokenizer", "absent", "no tokenizer/sid_map.json: the SID tree and SIDs are not shown")
            return
        try:
            self.sid_map = SIDMap.load(sid_path)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise PartError(f"{self.rel(sid_path)}: not a SID map this genrec reads ({e})") from None
        self.labels = dict(self.sid_map.labels)
        labels_path = tok / "sid_labels.json"
        if labels_path.is_file():
            loaded = _read_json(labels_path, "tokenizer/sid_labels.json")
            if isinstance(loaded, dict):
                self.labels.update({str(k): str(v) for k, v in loaded.items()})
        note = "" if self.tokenizer_report else "tokenizer_report.json not found"
        self._set("tokenizer", "ok", note)

    def _load_data(self) -> None:
        from dataclasses import fields

        from genrec.commands.recommend import display_template
        from genrec.data.config import DataConfig
        from genrec.data.loader import load_data

        recorded = self.data_override or str(self.summary.get("data", "") or "")
        if not recorded and self.tokenizer_report:
            recorded = str(self.tokenizer_report.get("data", "") or "")
        path = Path(recorded) if self.data_override else self._locate(recorded, inside=False)
        if not recorded or path is None or not (path.exists() or list(path.parent.glob(path.name + ".*"))):
            self._set("dataset", "absent", f"dataset {recorded or '(not recorded)'} not found: items show as ids, no "
                                           "profiles, no baseline lists, no try-it (pass --data DIR)")
            return
        known = {f.name for f in fields(DataConfig)}
        recorded_cfg = self.summary.get("config", {}).get("data", {}) if isinstance(self.summary.get("config"), dict) else {}
        cfg = DataConfig(**{k: v for k, v in (recorded_cfg or {}).items() if k in known})
        self.data = load_data(path, cfg, verbose=False)
        self.template = display_template(self.data.catalog)
        self._set("dataset", "ok", str(path))

    def _load_eval(self) -> None:
        ev = self.root / EVAL_DIR
        path = ev / "eval_report.json"
        if not path.is_file():
            self._set("evaluation", "absent", "eval/eval_report.json not found: no evaluation table or user lists")
            return
        self.report = _need_dict(_read_json(path, "eval/eval_report.json"), "eval/eval_report.json", ("results",))
        meta = self.report.get("meta") if isinstance(self.report.get("meta"), dict) else {}
        self.method_info = meta.get("methods", {}) if isinstance(meta.get("methods"), dict) else {}
        problems = []
        for pred in sorted(ev.glob("predictions_*_*.jsonl")):
            method, protocol = self._prediction_name(pred.name)
            try:
                rows = self._read_predictions(pred)
            except PartError as e:
                problems.append(str(e))
                continue
            self.predictions.setdefault(protocol, {})[method] = rows
        self._set("evaluation", "error" if problems else "ok", "; ".join(problems))

    def _prediction_name(self, filename: str) -> tuple[str, str]:
        """predictions_<method with ':' and '/' as '_'>_<protocol>.jsonl -> (method name in the report, protocol)."""
        stem = filename[len("predictions_"):-len(".jsonl")]
        safe, protocol = stem.rsplit("_", 1)
        for name in (self.report or {}).get("results", {}):
            if name.replace(":", "_").replace("/", "_") == safe:
                return name, protocol
        return safe, protocol

    def _read_predictions(self, path: Path) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PartError(f"eval/{path.name} line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict) or not {"user_id", "target", "items"} <= set(row):
                    raise PartError(f"eval/{path.name} line {n}: expected user_id, target and items")
                rows[str(row["user_id"])] = row
        return rows

    def protocols(self) -> list[str]:
        meta = (self.report or {}).get("meta", {})
        listed = [p for p in meta.get("protocols", []) if isinstance(p, str)] if isinstance(meta, dict) else []
        return listed or sorted(self.predictions)

    def _excludes_history(self, protocol: str) -> bool:
        meta = (self.report or {}).get("meta", {})
        ex = meta.get("excludes_history", {}) if isinstance(meta, dict) else {}
        return bool(ex.get(protocol, protocol == "new")) if isinstance(ex, dict) else protocol == "new"

    def topk(self) -> int:
        meta = (self.report or {}).get("meta", {})
        ks = meta.get("topk") if isinstance(meta, dict) else None
        return int(max(ks)) if isinstance(ks, list) and ks else 20

    def _load_baselines(self) -> None:
        """MostPop and recent-items lists per evaluated user, recomputed (the evaluation saves none for baselines)."""
        if not self.report:
            self._set("baseline lists", "absent", "no evaluation")
            return
        wanted = [b for b in ("mostpop", "recent") if b in self.report.get("results", {})]
        if not wanted or self.data is None:
            self._set("baseline lists", "absent", "no MostPop/recent in the evaluation, or no dataset")
            return
        from eval.baselines import MostPop, RecentItems
        from genrec.data.schema import Example

        k = self.topk()
        for protocol, by_method in self.predictions.items():
            users = self._users_of(protocol)
            examples = [Example(u["user_id"], tuple(u["history"]), u["target"]) for u in users]
            examples = [ex for ex in examples if all(i in self.data.catalog for i in (*ex.history, ex.target))]
            for name in wanted:
                method = (MostPop() if name == "mostpop" else RecentItems()).fit(self.data.train, self.data.catalog)
                lists = method.recommend(examples, min(k, len(self.data.catalog)), self._excludes_history(protocol))
                by_method[name] = {ex.user_id: {"user_id": ex.user_id, "target": ex.target, "history": list(ex.history),
                                                "items": items, "recomputed": True}
                                   for ex, items in zip(examples, lists)}
        self._set("baseline lists", "ok", f"{', '.join(wanted)} recomputed from the dataset"
                  + ("; SASRec's lists are not saved by the evaluation" if "sasrec" in self.report["results"] else ""))

    def _load_curves(self) -> None:
        files = [p for p in sorted(self.root.rglob("events.out.tfevents.*"))
                 if not any(part.startswith("checkpoint-") for part in p.parts)]
        if not files:
            self._set("training curves", "absent", "no TensorBoard event files")
            return
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        problems = []
        for f in files:
            stage = f.relative_to(self.root).parts[0]
            try:
                acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
                acc.Reload()
                tags = acc.Tags().get("scalars", [])
                stage_curves = self.curves.setdefault(stage, {})
                for tag in tags:
                    pts = [[int(e.step), float(e.value)] for e in acc.Scalars(tag)]
                    stage_curves.setdefault(tag, []).extend(pts)
            except Exception as e:  # noqa: BLE001 - a truncated event file loses its curves only
                problems.append(f"{self.rel(f)}: {type(e).__name__}: {e}")
        for stage_curves in self.curves.values():
            for tag, pts in stage_curves.items():
                stage_curves[tag] = sorted({p[0]: p for p in pts}.values())
        self._set("training curves", "error" if problems else "ok", "; ".join(problems))

    def _load_rollouts(self) -> None:
        rl = self.root / "rl"
        found = [p for p in [rl / ROLLOUT_FILE, *sorted(rl.glob(f"runs/*/{ROLLOUT_FILE}"))] if p.is_file()]
        if not found:
            self._set("RL rollouts", "absent", f"no rl/{ROLLOUT_FILE} (the RL stage did not log rollouts, or did not run)")
            return
        path = found[0]
        self.rollout_path = self.rel(path)
        bad = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    group = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if not isinstance(group, dict) or not isinstance(group.get("rollouts"), list):
                    bad += 1
                    continue
                self.rollouts.append(self._clean_group(group))
                if len(self.rollouts) >= MAX_ROLLOUT_GROUPS:
                    break
        msg = f"{len(self.rollouts)} groups from {self.rollout_path}" + (f"; {bad} unreadable lines skipped" if bad else "")
        self._set("RL rollouts", "ok" if self.rollouts or not bad else "error", msg)

    def _clean_group(self, group: dict) -> dict:
        target = group.get("target_sid") or ""
        out = {k: group.get(k) for k in ("step", "group", "user_id", "prompt", "target", "target_sid", "algorithm",
                                         "num_generations")}
        out["target_title"] = self.title(str(group["target"])) if group.get("target") else ""
        out["rollouts"] = []
        for r in group["rollouts"]:
            if not isinstance(r, dict):
                continue
            row = {k: r.get(k) for k in ("completion", "sid", "item_id", "blocks", "step_rewards", "step_advantages",
                                         "outcome_reward", "outcome_advantage", "reward")}
            row["title"] = self.title(str(r["item_id"])) if r.get("item_id") else ""
            out["rollouts"].append(row)
        out["target_sid"] = target
        return out

    def _find_models(self) -> None:
        for name, info in self.method_info.items():
            if isinstance(info, dict) and info.get("model"):
                path = self._locate(str(info["model"]), inside=True)
                if path is not None and (path / "config.json").is_file():
                    self.models[name] = path
        if not self.models:
            for sub in ("sft1", "sft2", "rl"):
                if (self.root / sub / "final" / "config.json").is_file():
                    self.models[sub] = self.root / sub / "final"
        self._set("models", "ok" if self.models else "absent",
                  ", ".join(f"{k}: {self.rel(v)}" for k, v in self.models.items()) or "no model folder in the run")

    # ------------------------------------------------------------------ views
    def title(self, item_id: str) -> str:
        cat = self.data.catalog if self.data is not None else None
        if cat is None or item_id not in cat:
            return ""
        if cat.title_field:
            return cat.fields[cat.title_field][cat.index(item_id)]
        return cat.render(item_id)[:80]

    def item(self, item_id: str) -> dict:
        codes = list(self.sid_map.codes(item_id)) if self.sid_map is not None and item_id in self.sid_map else []
        cat = self.data.catalog if self.data is not None else None
        text = cat.render(item_id, self.template) if cat is not None and item_id in cat else ""
        return {"id": item_id, "title": self.title(item_id), "text": text, "codes": codes,
                "sid": "".join(f"<{chr(ord('a') + lv)}_{c}>" for lv, c in enumerate(codes)) if codes else ""}

    def overview(self) -> dict:
        summary = {k: self.summary.get(k) for k in ("command", "status", "data", "num_items", "codebook_size",
                                                    "total_seconds", "peak_memory_mb", "peak_rss_mb",
                                                    "stage_seconds")}
        summary["stages"] = [s for s in self.summary.get("stages", []) if isinstance(s, dict)]
        ev = None
        if self.report:
            meta = self.report.get("meta", {}) if isinstance(self.report.get("meta"), dict) else {}
            ev = {"results": self.report.get("results", {}), "protocols": self.protocols(), "topk": meta.get("topk", []),
                  "num_examples": meta.get("num_examples"), "catalog_size": meta.get("catalog_size"),
                  "dataset": meta.get("dataset"), "protocol_users": meta.get("protocol_users", {}),
                  "methods": self.method_info,
                  "plots": [f"{EVAL_DIR}/{p.name}" for p in sorted((self.root / EVAL_DIR).glob("*.png"))]}
        tok = None
        if self.tokenizer_report:
            keep = ("num_items", "levels", "semantic_levels", "codebook_sizes", "method", "encoder", "utilization",
                    "perplexity", "collision_rate_before_dedup", "items_in_collisions_before_dedup",
                    "max_items_per_sid_before_dedup", "collision_rate", "num_labels", "recon_rel", "data")
            tok = {k: self.tokenizer_report[k] for k in keep if k in self.tokenizer_report}
        return {"run": self.root.name, "parts": self.parts, "summary": summary, "tokenizer": tok, "eval": ev,
                "models": sorted(self.models), "has_data": self.data is not None,
                "has_sids": self.sid_map is not None, "rollouts": len(self.rollouts)}

    def curves_view(self) -> dict:
        def key_rank(tag: str) -> int:
            return next((i for i, k in enumerate(KEY_CURVES) if tag == k or (k.endswith("/") and tag.startswith(k))),
                        len(KEY_CURVES))

        out = {}
        for stage, tags in sorted(self.curves.items()):
            names = sorted(tags, key=lambda t: (key_rank(t), t))
            out[stage] = {"key": [t for t in names if key_rank(t) < len(KEY_CURVES) and len(tags[t]) > 0],
                          "tags": {t: tags[t] for t in names}}
        return out

    def items_view(self) -> dict:
        """Every item with its title and SID codes, plus the prefix labels: the page builds the tree from this."""
        if self.sid_map is None:
            ids = list(self.data.catalog.item_ids) if self.data is not None else []
            return {"levels": 0, "codebook_sizes": [], "labels": {}, "items": [[i, self.title(i), []] for i in ids]}
        labels = {}
        from sid_tokenizer.sidmap import parse_sid_string

        for prefix, label in self.labels.items():
            try:
                labels[sid_key(parse_sid_string(prefix))] = label
            except ValueError:
                continue
        items = [[i, self.title(i), list(codes)] for i, codes in self.sid_map.item_to_codes.items()]
        return {"levels": self.sid_map.num_levels, "codebook_sizes": list(self.sid_map.codebook_sizes),
                "labels": labels, "items": items}

    def tree_node(self, codes: tuple[int, ...] = ()) -> dict:
        """One node of the SID tree: its label, item count and children (each with count, label, example titles)."""
        if self.sid_map is None:
            raise KeyError("no SID map in this run")
        depth = len(codes)
        under = [(i, c) for i, c in self.sid_map.item_to_codes.items() if c[:depth] == tuple(codes)]
        if not under:
            raise KeyError(f"no item under SID prefix {sid_key(codes)}")
        children: dict[int, list[str]] = {}
        for item, c in under:
            if depth < len(c):
                children.setdefault(c[depth], []).append(item)
        from sid_tokenizer.sidmap import sid_string

        return {"key": sid_key(codes), "codes": list(codes), "label": self.labels.get(sid_string(codes), "") if codes else "",
                "count": len(under),
                "children": [{"key": sid_key((*codes, code)), "code": code,
                              "label": self.labels.get(sid_string((*codes, code)), ""), "count": len(items),
                              "examples": [self.title(i) or i for i in items[:3]],
                              "item": items[0] if depth + 1 == self.sid_map.num_levels else None}
                             for code, items in sorted(children.items())]}

    def _users_of(self, protocol: str) -> list[dict]:
        seen: dict[str, dict] = {}
        for rows in self.predictions.get(protocol, {}).values():
            for uid, row in rows.items():
                seen.setdefault(uid, {"user_id": uid, "target": str(row["target"]),
                                      "history": [str(h) for h in row.get("history", [])]})
        return list(seen.values())

    def default_protocol(self) -> str:
        protos = [p for p in self.protocols() if p in self.predictions]
        return "all" if "all" in protos else (protos[0] if protos else "")

    def users_view(self) -> dict:
        protocol = self.default_protocol()
        methods = list(self.predictions.get(protocol, {}))
        users = []
        for u in self._users_of(protocol):
            hits = {}
            for m in methods:
                row = self.predictions[protocol][m].get(u["user_id"])
                items = [str(i) for i in row["items"]] if row else []
                hits[m] = items.index(u["target"]) + 1 if u["target"] in items else None
            users.append({"user_id": u["user_id"], "target": u["target"], "target_title": self.title(u["target"]),
                          "history_len": len(u["history"]), "hits": hits})
        return {"protocol": protocol, "methods": methods, "users": users}

    def user_view(self, user_id: str) -> dict:
        protocols = [p for p in self.protocols() if p in self.predictions]
        base = next((u for p in protocols for u in self._users_of(p) if u["user_id"] == user_id), None)
        if base is None:
            raise KeyError(f"user {user_id!r} is not among the evaluated users of this run")
        target = base["target"]
        tcodes = list(self.sid_map.codes(target)) if self.sid_map is not None and target in self.sid_map else []
        profile = self.data.profiles.get(user_id, "") if self.data is not None else ""
        out = {"user_id": user_id, "profile": profile, "target": self.item(target),
               "history": [self.item(h) for h in base["history"]], "protocols": {}}
        for protocol in protocols:
            lists = []
            for name, rows in self.predictions[protocol].items():
                row = rows.get(user_id)
                if row is None:
                    continue
                lists.append(self._method_list(name, row, target, tcodes))
            out["protocols"][protocol] = {"excludes_history": self._excludes_history(protocol), "methods": lists}
        if self.report and "sasrec" in self.report.get("results", {}):
            out["not_saved"] = ["sasrec"]
        return out

    def _method_list(self, name: str, row: dict, target: str, tcodes: list[int]) -> dict:
        items, scores, filled = [str(i) for i in row["items"]], row.get("scores") or [], row.get("filled") or []
        entries = []
        for rank, item_id in enumerate(items, 1):
            e = self.item(item_id)
            codes = e["codes"]
            depth = 0
            while depth < min(len(codes), len(tcodes)) and codes[depth] == tcodes[depth]:
                depth += 1
            e.update(rank=rank, hit=item_id == target, prefix_match=depth,
                     score=scores[rank - 1] if rank - 1 < len(scores) else None,
                     filled=bool(filled[rank - 1]) if rank - 1 < len(filled) else False)
            entries.append(e)
        info = self.method_info.get(name, {}) if isinstance(self.method_info.get(name), dict) else {}
        generative = "items" in row and not row.get("recomputed") and ("reasoning" in row or "layout" in info)
        steps = None
        if generative and entries and not entries[0]["filled"] and entries[0]["codes"]:
            steps = self.steps(entries[0]["codes"], [str(b) for b in row.get("reasoning") or []], tcodes)
        return {"name": name, "kind": "generative" if generative else "baseline", "layout": info.get("layout", ""),
                "source": "recomputed by the explorer" if row.get("recomputed") else "eval predictions",
                "hit_rank": items.index(target) + 1 if target in items else None, "items": entries, "steps": steps}

    def steps(self, codes: list[int], blocks: list[str], tcodes: list[int]) -> list[dict]:
        """Per SID level of the top item: its token, the label of the prefix, the block before it, and the match."""
        from sid_tokenizer.sidmap import sid_string, sid_token

        out, prefix_ok = [], True
        for level, code in enumerate(codes):
            same = level < len(tcodes) and tcodes[level] == code
            prefix_ok = prefix_ok and same
            out.append({"level": level, "token": sid_token(level, code),
                        "label": self.labels.get(sid_string(codes[:level + 1]), ""),
                        "reasoning": blocks[level] if level < len(blocks) else None,
                        "target_token": sid_token(level, tcodes[level]) if level < len(tcodes) else "",
                        "target_label": self.labels.get(sid_string(tcodes[:level + 1]), "") if level < len(tcodes) else "",
                        "code_match": same, "prefix_match": prefix_ok})
        return out

    def rollouts_view(self) -> dict:
        return {"path": self.rollout_path, "groups": self.rollouts,
                "status": self.parts.get("RL rollouts", {"status": "absent", "message": ""})}

    # ------------------------------------------------------------------ try it
    def recommend(self, model: str, history: str, topk: int = 10, num_beams: int = 10) -> dict:
        """`genrec recommend` on CPU for a typed history (item ids or free text) with one of the run's models."""
        if self.data is None:
            raise ValueError("try it needs the run's dataset (not found; start explore with --data DIR)")
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}; this run has {', '.join(self.models) or 'none'}")
        if not 1 <= topk <= 50 or not 1 <= num_beams <= 50:
            raise ValueError("topk and beams must be between 1 and 50")
        from eval.generative import load_generative
        from eval.interactive import explain, resolve_history, split_history
        from genrec.data.schema import Example

        entries = split_history(history, self.data.catalog)
        if not entries:
            raise ValueError("type a history: item ids (comma-separated) or job descriptions separated by ';'")
        with self._rec_lock:
            key = f"{model}@{num_beams}"
            rec = self._recommenders.get(key)
            if rec is None:
                rec = load_generative(self.models[model], self.data.catalog, num_beams=num_beams, device="cpu")
                rec.fit(self.data.train, self.data.catalog)
                self._recommenders = {key: rec}  # keep one model in memory
            matched = resolve_history(entries, self.data.catalog, rec.sid_map)
            example = Example("explore-user", tuple(h.item_id for h in matched), "", "")
            beams = rec.recommend_beams([example], min(topk, len(self.data.catalog)))[0]
        recs = []
        for rank, b in enumerate(beams, 1):
            e = self.item(b.item_id)
            e.update(rank=rank, filled=b.filled, score=None if b.filled else b.score,
                     steps=[] if b.filled else [{**s, "label": self.labels.get(
                         "".join(f"<{chr(ord('a') + lv)}_{c}>" for lv, c in enumerate(b.codes[:s["level"] + 1])),
                         s["label"])} for s in explain(b, rec.sid_map)])
            recs.append(e)
        return {"model": model, "layout": rec.layout,
                "history": [{**self.item(h.item_id), "query": h.query, "exact": h.exact, "score": h.score}
                            for h in matched],
                "recommendations": recs}
