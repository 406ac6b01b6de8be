"""Print the first N users' top-1 reasoning from an evaluation's predictions as markdown (docs/bench/reasoning_samples.md).

    python scripts/reasoning_samples.py PREDICTIONS.jsonl DATA_DIR SID_MAP N
"""
import json, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from genrec.data.loader import load_catalog
from sid_tokenizer.sidmap import SIDMap
pred, data, tok, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cat = load_catalog(data); sm = SIDMap.load(tok)
def title(i):
    r = cat.record(i); return r.get('title') or cat.render(i)
rows = [json.loads(l) for l in open(pred)][:n]
out = []
for r in rows:
    top = r['items'][0]
    hist = "; ".join(f"{k+1}. {title(h)}" for k, h in enumerate(r['history']))
    out.append(f"- user {r['user_id']}, history: {hist}")
    for k, (b, tokn) in enumerate(zip(r['reasoning'], sm.tokens(top))):
        out.append(f"  - step {k+1}: `<think> {b}</think>{tokn}`")
    out.append(f"  - top-1: {title(top)} ({sm.sid_string(top)}); target: {title(r['target'])} ({sm.sid_string(r['target'])}); target rank: {r['items'].index(r['target'])+1 if r['target'] in r['items'] else 'not in top 20'}")
print("\n".join(out))
