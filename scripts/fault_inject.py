"""Fault injection (issue 13): SIGKILL every long stage at random moments, rerun it, check nothing is lost.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fault_inject.py                      # every stage, 10 kills each
    OMP_NUM_THREADS=1 .venv/bin/python scripts/fault_inject.py --stages sft1,rl --kills 4 --seed 1

On a tiny synthetic market (`genrec synth`, 120 jobs, 60 applicants) the script first runs every stage once,
uninterrupted, into `<work>/ref` (the reference). Then, for each stage under test, it starts the stage's command as
a subprocess into a fresh folder and SIGKILLs it (its whole process group) at a seeded moment, reruns the same
command (with `--resume true` for `genrec sft`; `genrec rl` resumes by default) and kills it again, up to
`--chain` kills, then lets the rerun finish; chains repeat until `--kills` kills were made. Kill moments:

- `random`: a uniform moment of the stage's work (measured from when the command marks its folder as being written,
  `.genrec_writing`, over the reference run's working time; for `run`, from the start of the process);
- `save`: the moment a new `checkpoint-N` folder appears (a Trainer checkpoint save in progress; sft, rl);
- `final`: the moment a temporary file/folder of the final write appears (`.final.*`, `.sid_map.json.*`,
  `.dataset.*`, `.eval_report.json.*`, ...). A poll every 2 ms can miss a write that takes less; such an attempt
  finishes unkilled and is counted under `attempts` but not as a kill.

After every kill the folder is read the way the next stage reads it (`SIDMap.load`/`SIDTokenizer.load`,
`load_traces`, the model folder `<out>/final`, the evaluation report, `genrec run`'s finished test): it must be
refused with a one-line message naming the command to rerun, or be complete and equal to the reference. A kill is
survived when that check passes and the next attempt does not fail. After each chain's last rerun the outputs must
be present, loadable, and equal to the reference: bytes for sid_map.json and the traces rows, tensors for
safetensors weights, the metrics of eval_report.json (timings and paths left out).

Prints a table and writes JSON (default bench_results/fault_inject.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GENREC = str(Path(sys.executable).with_name("genrec"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GENREC_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
WRITING = ".genrec_writing"
ALL_STAGES = ("fit-tokenizer", "traces", "sft1", "sft2", "rl", "evaluate", "run")
RUN_BUDGET = ["--sft1_steps", "4", "--sft2_steps", "4", "--rl_steps", "2", "--rl_prompts", "4", "--eval_users", "8",
              "--num_beams", "4", "--sasrec_epochs", "2"]
POLL_S = 0.002


def stage_argv(stage: str, ref: Path, out: Path) -> list[str]:
    """The command of `stage` writing into `out`, reading its inputs from the reference folders."""
    data, tok, model, traces = ref / "data", ref / "tok", ref / "model", ref / "traces"
    cfg = REPO / "configs"
    return {
        "fit-tokenizer": ["fit-tokenizer", "--data", data, "--out", out, "--seed", "0", "--codebook_size", "8"],
        "build-model": ["build-model", "--sid_map", tok, "--data", data, "--output_dir", out, "--seed", "0"],
        "traces": ["traces", "--data", data, "--sid_map", tok, "--model", model, "--output_dir", out,
                   "--trace_seed", "0"],
        "sft1": ["sft", "--config", cfg / "sft_stage1.yaml", "--stage", "1", "--model", model, "--sid_map", tok,
                 "--data", data, "--output_dir", out, "--max_steps", "8", "--save_steps", "2", "--seed", "0"],
        "sft2": ["sft", "--config", cfg / "sft_stage2.yaml", "--stage", "2", "--model", ref / "sft1" / "final",
                 "--sid_map", tok, "--traces", traces, "--data", data, "--output_dir", out, "--max_steps", "8",
                 "--save_steps", "2", "--seed", "0"],
        "rl": ["rl", "--config", cfg / "rl_sapo.yaml", "--model", ref / "sft2" / "final", "--data", data,
               "--sid_map", tok, "--traces", traces, "--output_dir", out, "--max_steps", "4", "--save_steps", "1",
               "--max_examples", "8", "--seed", "0"],
        "evaluate": ["evaluate", "--data", data, "--sid_map", tok, "--output_dir", out, "--model",
                     ",".join(str(ref / s / "final") for s in ("sft1", "sft2", "rl")), "--layout", "direct,auto,auto",
                     "--traces", traces, "--baselines", "mostpop,recent,sasrec", "--sasrec_max_epochs", "2",
                     "--max_users", "8", "--num_beams", "4", "--seed", "0"],
        "run": ["run", "--data", data, "--out", out, "--seed", "0", *RUN_BUDGET],
    }[stage]


RESUME_FLAGS = {"sft1": ["--resume", "true"], "sft2": ["--resume", "true"], "rl": ["--resume", "auto"]}
REF_FOLDER = {"fit-tokenizer": "tok", "build-model": "model", "traces": "traces", "sft1": "sft1", "sft2": "sft2",
              "rl": "rl", "evaluate": "eval", "run": "run"}
CHECKPOINTING = ("sft1", "sft2", "rl")
# temporary names of each stage's final write (atomic_output/mkdtemp prefixes), by sub-folder of the output
FINAL_PATTERNS = {
    "fit-tokenizer": {"": (".sid_map.json", ".tokenizer", ".sid_labels.json")},
    "traces": {"": (".dataset.", ".traces_config.json", ".prompt_config.json")},
    "sft1": {"": (".final.",)}, "sft2": {"": (".final.",)}, "rl": {"": (".final.",)},
    "evaluate": {"": (".eval_report.json", ".report.md", ".recall_at_k.png", ".ndcg_at_k.png")},
    "run": {"eval": (".eval_report.json", ".report.md", ".recall_at_k.png", ".ndcg_at_k.png"),
            "sft1": (".final.",), "sft2": (".final.",), "rl": (".final.",)},
}


# ---------------------------------------------------------------------------------------------------------------
# launching and killing


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _note_pid(out: Path) -> int | None:
    """The pid recorded in the folder's `.genrec_writing` note (a note left by a killed attempt has another)."""
    try:
        return json.loads((out / WRITING).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def _seen_final(stage: str, out: Path) -> str | None:
    for sub, prefixes in FINAL_PATTERNS[stage].items():
        for name in _listdir(out / sub if sub else out):
            if name != WRITING and name.startswith(prefixes):
                return f"{sub}/{name}" if sub else name
    return None


def _new_checkpoint(out: Path, before: set[str]) -> str | None:
    for name in _listdir(out):
        if name.startswith("checkpoint-") and name not in before:
            return name
    return None


def launch(argv: list, log: Path, stage: str, out: Path, trigger: str | None = None,
           kill_after: float = 0.0) -> dict:
    """Run `genrec argv`; kill it (SIGKILL to its process group) on `trigger`. Returns what happened."""
    cmd = [GENREC, *map(str, argv)]
    before = set(_listdir(out))
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}   [trigger {trigger} {kill_after:.2f}]\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV, cwd=REPO, start_new_session=True)
        t_work = None  # when the command marked its folder as being written
        seen = None
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if t_work is None and _note_pid(out) == proc.pid:
                t_work = now
            if trigger == "random":
                start = 0.0 if stage == "run" else t_work
                if start is not None and now >= start + kill_after:
                    seen = f"t={now:.2f}s"
            elif trigger == "save":
                seen = _new_checkpoint(out, before)
            elif trigger == "final":
                seen = _seen_final(stage, out)
            if seen is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"killed": True, "trigger": trigger, "at": seen, "seconds": round(now, 2)}
            time.sleep(POLL_S)
    seconds = time.perf_counter() - t0
    return {"killed": False, "rc": proc.returncode, "seconds": round(seconds, 2),
            "work_seconds": round(seconds - t_work, 2) if t_work is not None else None}


def tail(log: Path, n: int = 6) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------------------------------
# readers and comparisons


def _norm_json(path: Path, folder: Path) -> object:
    """JSON with the folder's own path replaced and timings dropped (they differ run to run)."""
    text = path.read_text(encoding="utf-8").replace(str(folder), "<OUT>")

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (k.endswith("seconds") or k.endswith("per_second") or k in ("embeddings_cached",))}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(json.loads(text))


def _tensors_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two safetensors files (0.0 = bit-identical tensors); inf on a
    different set of tensors or shapes."""
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return float("inf")
    worst = 0.0
    for k in ta:
        if ta[k].shape != tb[k].shape:
            return float("inf")
        if not torch.equal(ta[k], tb[k]):
            worst = max(worst, float((ta[k].double() - tb[k].double()).abs().max()))
    return worst


def compare(kind: str, got: Path, ref: Path, roots: tuple[Path, Path] | None = None) -> tuple[bool, float, list[str]]:
    """(outputs present and loadable, max weight difference (0 = identical), differences found). `roots`: the
    `genrec run` folders holding `got` and `ref`, whose paths the JSON files may record (normalised away)."""
    groot, rroot = roots or (got, ref)
    diffs: list[str] = []
    worst = 0.0
    if kind == "fit-tokenizer":
        from sid_tokenizer.sidmap import SIDMap
        from sid_tokenizer.tokenizer import SIDTokenizer

        SIDMap.load(got)
        SIDTokenizer.load(got)
        for name in ("sid_map.json", "sid_labels.json"):
            if (got / name).read_bytes() != (ref / name).read_bytes():
                diffs.append(f"{name} bytes")
        for name in ("tokenizer_report.json", "tokenizer_config.json"):  # both record timings
            if _norm_json(got / name, groot) != _norm_json(ref / name, rroot):
                diffs.append(name)
        worst = _tensors_diff(got / "tokenizer.safetensors", ref / "tokenizer.safetensors")
    elif kind == "traces":
        from datasets import load_from_disk

        from genrec.traces.budget import traces_block_budget
        from genrec.traces.dataset import load_traces
        from sid_tokenizer.sidmap import SIDMap

        sid_map = SIDMap.load(ref.parent / ("tokenizer" if roots else "tok"))
        for split in ("train", "valid"):
            load_traces(got, sid_map, split)
            if load_from_disk(str(got / split)).to_dict() != load_from_disk(str(ref / split)).to_dict():
                diffs.append(f"{split} rows")
        traces_block_budget(got, sid_map.num_levels)
        for name in ("traces_config.json", "prompt_config.json"):
            if _norm_json(got / name, groot) != _norm_json(ref / name, rroot):
                diffs.append(name)
    elif kind in ("sft1", "sft2", "rl", "build-model"):
        from genrec.model_folder import load_info
        from genrec.modeling import load_model_and_tokenizer

        g, r = (got, ref) if kind == "build-model" else (got / "final", ref / "final")
        load_info(g)
        load_model_and_tokenizer(g)
        worst = _tensors_diff(g / "model.safetensors", r / "model.safetensors")
        gi, ri = _norm_json(g / "genrec_model.json", groot), _norm_json(r / "genrec_model.json", rroot)
        if gi != ri:
            diffs.append("genrec_model.json")
    elif kind == "evaluate":
        from genrec.stage_output import check_complete

        check_complete(got)
        for name in ("report.md", "recall_at_k.png", "ndcg_at_k.png"):
            if not (got / name).is_file():
                diffs.append(f"{name} missing")
        g, r = _norm_json(got / "eval_report.json", groot), _norm_json(ref / "eval_report.json", rroot)
        if g["results"] != r["results"]:
            diffs.append("eval_report.json results")
        if g["meta"].get("paired_ndcg10") != r["meta"].get("paired_ndcg10"):
            diffs.append("paired intervals")
        for p in sorted(ref.glob("predictions_*.jsonl")):
            if not (got / p.name).is_file() or (got / p.name).read_bytes() != p.read_bytes():
                diffs.append(p.name)
    elif kind == "run":
        for sub, k in (("tokenizer", "fit-tokenizer"), ("model", "build-model"), ("traces", "traces"),
                       ("sft1", "sft1"), ("sft2", "sft2"), ("rl", "rl"), ("eval", "evaluate")):
            ok, w, d = compare(k, got / sub, ref / sub, roots=(got, ref))
            worst = max(worst, w)
            diffs += [f"{sub}: {x}" for x in d]
        summary = json.loads((got / "run_summary.json").read_text())
        if summary.get("status") != "finished":
            diffs.append(f"run_summary.json status {summary.get('status')}")
    return True, worst, diffs


def after_kill_check(stage: str, out: Path, ref: Path) -> dict:
    """Read the killed stage's folder as the next stage would: refused (one line, names the command to rerun) or
    accepted -- and then it must be complete and equal to the reference."""
    from genrec.stage_output import IncompleteOutputError, is_complete

    def read(kind: str, folder: Path) -> None:
        if kind == "fit-tokenizer":
            from sid_tokenizer.sidmap import SIDMap
            from sid_tokenizer.tokenizer import SIDTokenizer

            SIDMap.load(folder)
            SIDTokenizer.load(folder)
        elif kind == "traces":
            from genrec.traces.budget import traces_block_budget
            from genrec.traces.dataset import load_traces
            from sid_tokenizer.sidmap import SIDMap

            sid_map = SIDMap.load(ref / "tok" if stage != "run" else ref / "run" / "tokenizer")
            load_traces(folder, sid_map, "train")
            load_traces(folder, sid_map, "valid")
            traces_block_budget(folder)
        elif kind in ("sft1", "sft2", "rl"):
            from genrec.modeling import load_model_and_tokenizer

            if not (folder / "final").is_dir():
                raise FileNotFoundError(f"{folder / 'final'}: not found")
            load_model_and_tokenizer(folder / "final")
        elif kind == "evaluate":
            from genrec.stage_output import check_complete

            check_complete(folder)
            json.loads((folder / "eval_report.json").read_text())

    def verdict(kind: str, folder: Path, ref_folder: Path, marker: str) -> dict:
        try:
            read(kind, folder)
        except IncompleteOutputError as e:
            msg = str(e)
            return {"verdict": "refused", "one_line": "\n" not in msg and "rerun `genrec" in msg, "message": msg}
        except (FileNotFoundError, OSError) as e:
            return {"verdict": "absent", "one_line": "\n" not in str(e), "message": str(e).splitlines()[0]}
        except ValueError as e:
            return {"verdict": "error", "one_line": "\n" not in str(e), "message": str(e).splitlines()[0],
                    "bad": True}
        # accepted by the reader: `genrec run` would skip the stage only if its marker exists and no note is left
        run_finished = (folder / marker).exists() and is_complete(folder)
        try:
            _, worst, diffs = compare(kind, folder, ref_folder, roots=(out, ref / "run") if stage == "run" else None)
        except Exception as e:  # noqa: BLE001 - accepted but not loadable: the failure this script looks for
            return {"verdict": "accepted", "run_finished": run_finished, "bad": True,
                    "message": f"accepted but not loadable: {type(e).__name__}: {e}"}
        noisy = kind in ("sft1", "sft2", "rl")  # a model folder from a resumed run may differ within seed noise
        bad = bool(diffs) or (worst > 0 and not noisy)
        return {"verdict": "accepted", "run_finished": run_finished, "bad": bad, "diffs": diffs, "max_abs_diff": worst}

    if stage != "run":
        return verdict(stage, out, ref / REF_FOLDER[stage], MARKERS[stage])
    checks = {}
    for sub, kind in (("tokenizer", "fit-tokenizer"), ("traces", "traces"), ("sft1", "sft1"), ("sft2", "sft2"),
                      ("rl", "rl"), ("eval", "evaluate")):
        v = verdict(kind, out / sub, ref / "run" / sub, MARKERS[kind])
        # what matters for `genrec run`: a stage it would skip as finished must be complete
        if v["verdict"] == "accepted" and not v["run_finished"]:
            v["bad"] = False  # accepted by a stage reader but redone by `genrec run`
        checks[sub] = v
    return {"verdict": "per-stage", "bad": any(v.get("bad") for v in checks.values()), "stages": checks}


MARKERS = {"fit-tokenizer": "tokenizer_report.json", "traces": "traces_config.json", "sft1": "final/config.json",
           "sft2": "final/config.json", "rl": "final/config.json", "evaluate": "eval_report.json"}


# ---------------------------------------------------------------------------------------------------------------


def build_reference(ref: Path, stages: list[str], log: Path) -> dict[str, float]:
    """Every stage once, uninterrupted (the inputs of the stages under test and the results to match)."""
    ref.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    steps = [("synth", ["synth", "--out", ref / "data", "--num_jobs", "120", "--num_users", "60", "--seed", "0"])]
    for s in ("fit-tokenizer", "build-model", "traces", "sft1", "sft2", "rl", "evaluate"):
        steps.append((s, stage_argv(s, ref, ref / REF_FOLDER[s])))
    if "run" in stages:
        steps.append(("run", stage_argv("run", ref, ref / "run")))
    saved = ref / "reference_seconds.json"  # a --work folder kept from an earlier call reuses its reference
    known = json.loads(saved.read_text()) if saved.is_file() else {}
    for name, argv in steps:
        out = ref / REF_FOLDER.get(name, "data")
        if name in known:
            times[name] = known[name]
            continue
        r = launch(argv, log, name, out)
        if r["rc"] != 0:
            raise SystemExit(f"reference run of {name} failed (rc {r['rc']}); see {log}:\n{tail(log)}")
        times[name] = r["work_seconds"] if r["work_seconds"] is not None and name != "run" else r["seconds"]
        print(f"[ref] {name}: {r['seconds']:.1f} s (work {r['work_seconds']})", file=sys.stderr, flush=True)
        saved.write_text(json.dumps(times))
    return times


def inject(stage: str, ref: Path, work: Path, kills: int, chain: int, rng: random.Random, work_s: float,
           log: Path) -> dict:
    """Kill chains on one stage; returns its figures."""
    records: list[dict] = []
    completions: list[dict] = []
    attempts = 0
    chain_no = 0
    # the first kills of each stage are the targeted ones, the rest random moments of its work
    planned = (["save"] if stage in CHECKPOINTING else []) + ["final"]
    final_misses = 0
    while len(records) < kills and attempts < kills * 6:
        chain_no += 1
        out = work / f"{stage}-{chain_no}"
        shutil.rmtree(out, ignore_errors=True)
        base = stage_argv(stage, ref, out)
        in_chain, first = 0, True
        while True:
            argv = base if first else [*base, *RESUME_FLAGS.get(stage, [])]
            first = False
            if in_chain >= chain or len(records) >= kills:
                trigger, after = None, 0.0
            elif planned:
                trigger, after = planned[0], 0.0
            else:
                trigger, after = "random", rng.uniform(0.0, work_s)
            attempts += 1
            r = launch(argv, log, stage, out, trigger, after)
            if records and "next_rc" not in records[-1] and records[-1]["chain"] == chain_no:
                records[-1]["next_rc"] = None if r["killed"] else r["rc"]
            if r["killed"]:
                if planned and trigger == planned[0]:
                    planned.pop(0)
                check = after_kill_check(stage, out, ref)
                records.append({"chain": chain_no, **r, "check": check})
                print(f"[{stage}] kill {len(records)}/{kills} ({trigger} at {r['at']}, {r['seconds']} s): "
                      f"{check['verdict']}{' BAD' if check.get('bad') else ''}", file=sys.stderr, flush=True)
                in_chain += 1
                continue
            if r["rc"] != 0:
                completions.append({"chain": chain_no, "ok": False, "rc": r["rc"], "error": tail(log)})
                print(f"[{stage}] chain {chain_no}: rerun FAILED rc {r['rc']}\n{tail(log)}", file=sys.stderr)
                break
            if trigger == "final":  # the poll missed a quick final write; try that trigger again on a later chain
                final_misses += 1
                if final_misses >= 3:
                    planned.pop(0)
            try:
                _, worst, diffs = compare(stage, out, ref / REF_FOLDER[stage])
                done = {"chain": chain_no, "ok": True, "kills": in_chain, "max_abs_diff": worst, "diffs": diffs}
            except Exception as e:  # noqa: BLE001 - a finished rerun whose outputs do not load
                done = {"chain": chain_no, "ok": False, "kills": in_chain, "error": f"{type(e).__name__}: {e}"}
            completions.append(done)
            print(f"[{stage}] chain {chain_no} finished after {in_chain} kill(s): "
                  f"{'ok' if done['ok'] else 'NOT LOADABLE'}, max |dw| {done.get('max_abs_diff')}, "
                  f"diffs {done.get('diffs')}", file=sys.stderr, flush=True)
            break
        if not completions or completions[-1]["chain"] != chain_no:
            completions.append({"chain": chain_no, "ok": False, "error": "chain did not finish"})
    survived = sum(1 for r in records if not r["check"].get("bad") and r.get("next_rc") in (None, 0))
    ok = bool(completions) and all(c["ok"] for c in completions)
    identical = ok and all(c["max_abs_diff"] == 0 and not c["diffs"] for c in completions)
    return {
        "stage": stage, "kills_tried": len(records), "kills_survived": survived, "attempts": attempts,
        "chains": len(completions), "outputs_ok": ok,
        "identical": identical, "max_abs_diff": max((c.get("max_abs_diff") or 0.0 for c in completions), default=None),
        "triggers": {t: sum(1 for r in records if r["trigger"] == t) for t in ("save", "final", "random")},
        "kills": records, "completions": completions,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs per stage")
    ap.add_argument("--chain", type=int, default=5, help="kills before a rerun is let finish (then a fresh folder)")
    ap.add_argument("--stages", default=",".join(ALL_STAGES), help=f"comma-separated, from {', '.join(ALL_STAGES)}")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--out", default=str(REPO / "bench_results" / "fault_inject.json"))
    ap.add_argument("--work", default="", help="work folder (default: a temporary folder, removed at the end)")
    args = ap.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ALL_STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {', '.join(ALL_STAGES)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="genrec-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    t0 = time.perf_counter()
    print(f"work folder {work}; command output in {log}", file=sys.stderr)
    ref_times = build_reference(work / "ref", stages, log)
    results = []
    for i, stage in enumerate(stages):
        rng = random.Random(args.seed * 1000 + i)
        t = time.perf_counter()
        res = inject(stage, work / "ref", work / "kills", args.kills, args.chain, rng, ref_times[stage], log)
        res["seconds"] = round(time.perf_counter() - t, 1)
        results.append(res)
    total = round(time.perf_counter() - t0, 1)

    def tolerance(r: dict) -> str:
        if not r["chains"] or not r["outputs_ok"]:
            return "- (a rerun failed)"
        if r["identical"]:
            return "bit-identical"
        if r["max_abs_diff"] in (None, 0.0):
            return "differs: " + "; ".join(sorted({d for c in r["completions"] for d in c.get("diffs", [])}))[:60]
        return f"max abs weight diff {r['max_abs_diff']:.2e}"

    def after(r: dict) -> str:
        """What the next stage's reader made of the folder each kill left: refused (the note) / nothing there yet /
        accepted (complete: the kill came before the note or after the last write)."""
        def kind(k: dict) -> str:
            c = k["check"]
            verdicts = [v["verdict"] for v in c["stages"].values()] if "stages" in c else [c["verdict"]]
            return "refused" if "refused" in verdicts else "accepted" if set(verdicts) == {"accepted"} else "absent"
        kinds = [kind(k) for k in r["kills"]]
        return " / ".join(str(kinds.count(x)) for x in ("refused", "absent", "accepted"))

    rows = ["| stage | kills tried | kills survived | kill moments (save / final / random) | folder after the kill "
            "(refused / absent / complete) | outputs ok after rerun | identical to uninterrupted |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        tr = r["triggers"]
        rows.append(f"| {r['stage']} | {r['kills_tried']} | {r['kills_survived']} | {tr['save']} / {tr['final']} / "
                    f"{tr['random']} | {after(r)} | {'yes' if r['outputs_ok'] else 'NO'} ({r['chains']} reruns) | "
                    f"{tolerance(r)} |")
    table = "\n".join(rows)
    print(table)
    print(f"\n{total:.0f} s in all; kill seed {args.seed}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(sys.argv), "seed": args.seed, "kills_per_stage": args.kills, "chain": args.chain,
               "total_seconds": total, "reference_seconds": ref_times, "table": table, "stages": results}
    out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
