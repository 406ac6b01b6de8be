"""Run real RecBole SASRec on the pre-split amazon-industrial-mini files (peer cross-check).

Why: our SASRec port (eval/baselines/sasrec.py) gets test NDCG@10 / R@10 = 0.237 / 0.350 on
../shared/data/amazon-industrial-mini, the issue's reference says 0.281 / 0.368. This script runs
RecBole itself on the same `benchmark_filename` files so the gap can be attributed (docs/bench/eval.md).

It is NOT part of the project's venv or tests: run it with a separate venv's python.

Setup (CPU only; Python 3.11):
    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0          # first: CPU wheel, not the CUDA build
    /tmp/recbole-venv/bin/pip install recbole                  # 1.2.1 (+ ray 2.6.3, thop, ...)
    /tmp/recbole-venv/bin/pip install "numpy==1.23.5" "pandas<2.2" "scipy<1.14"
numpy<1.24 is needed because RecBole 1.2.1 uses np.float / np.long (evaluator/metrics.py,
abstract_recommender.py); pip then warns that scikit-learn wants numpy>=1.24 (unused here, harmless).
No source patch: torch>=2.6 defaults torch.load(weights_only=True), which breaks RecBole's
load of its own best checkpoint; this script sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 instead.

Data: the files are copied to <work>/amazon-industrial-mini/ with each history list cut to its LAST
--max_len items (11 train / 2 valid rows have 11-12 items; RecBole's own `seq_len` option would keep
the first ones, and SASRec's position table of MAX_ITEM_LIST_LENGTH would overflow on raw lists).
--max_len 0 copies the files unchanged (then use --max_item_list_length >= 12, e.g. RecBole's 50).

Usage:
    OMP_NUM_THREADS=1 /tmp/recbole-venv/bin/python scripts/peer_recbole_sasrec.py \
        --seed 2020 --train_batch_size 2048 --out /tmp/recbole_sasrec_2020_2048.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

DATASET = "amazon-industrial-mini"


def prepare_data(src, work, max_len):
    dst = os.path.join(work, DATASET)
    os.makedirs(dst, exist_ok=True)
    for part in ("train", "valid", "test"):
        name = f"{DATASET}.{part}.inter"
        with open(os.path.join(src, name)) as f_in, open(os.path.join(dst, name), "w") as f_out:
            f_out.write(f_in.readline())  # header: user_id:token item_id_list:token_seq item_id:token
            for line in f_in:
                user, hist, target = line.rstrip("\n").split("\t")
                items = hist.split(" ")
                if max_len > 0:
                    items = items[-max_len:]
                f_out.write(f"{user}\t{' '.join(items)}\t{target}\n")
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                                  "data", DATASET), help="the pre-split files (default: ../shared beside the repo)")
    ap.add_argument("--work", default="/tmp/recbole_data")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--train_batch_size", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--stopping_step", type=int, default=10)
    ap.add_argument("--max_len", type=int, default=10, help="keep last N history items; 0 = raw")
    ap.add_argument("--max_item_list_length", type=int, default=10)
    ap.add_argument("--extra", default="{}", help='JSON dict of RecBole config overrides')
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    prepare_data(args.src, args.work, args.max_len)
    args.out = os.path.abspath(args.out)
    os.chdir(args.work)  # RecBole writes log/ and log_tensorboard/ into the cwd
    tag = f"s{args.seed}_b{args.train_batch_size}_L{args.max_item_list_length}"
    config_dict = {
        "data_path": args.work,
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": args.max_item_list_length,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO",
                      "group_by": "user", "mode": "full"},  # split ignored with benchmark files
        "metrics": ["NDCG", "Recall"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "train_batch_size": args.train_batch_size,
        "eval_batch_size": 4096,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "show_progress": False,
        "checkpoint_dir": os.path.join(args.work, "saved_" + tag),
        "log_wandb": False,
    }
    config_dict.update(json.loads(args.extra))
    config = Config(model="SASRec", dataset=DATASET, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)

    history = []  # valid result per epoch
    orig_valid = trainer._valid_epoch

    def valid_epoch(*a, **kw):
        score, result = orig_valid(*a, **kw)
        history.append({k: float(v) for k, v in result.items()})
        return score, result

    trainer._valid_epoch = valid_epoch
    t0 = time.time()
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    wall = time.time() - t0
    best_epoch = max(range(len(history)), key=lambda i: history[i]["ndcg@10"])
    res = {
        "recbole_args": {k: config_dict[k] for k in ("MAX_ITEM_LIST_LENGTH", "train_batch_size",
                                                     "seed", "loss_type", "epochs", "stopping_step")},
        "max_len_cut": args.max_len,
        "extra": json.loads(args.extra),
        "n_items_incl_pad": int(dataset.item_num),
        "rows": {"train": len(train_data.dataset), "valid": len(valid_data.dataset),
                 "test": len(test_data.dataset)},
        "test": {k: float(v) for k, v in test.items()},
        "best_valid": {k: float(v) for k, v in best_valid.items()},
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "valid_history": history,
        "wall_s": round(wall, 1),
        "versions": {m: sys.modules[m].__version__ for m in ("recbole", "torch", "numpy")},
    }
    print(json.dumps({k: v for k, v in res.items() if k != "valid_history"}, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
