"""Training curve of one or more consecutive train.py runs as a small PNG (matplotlib; the LIBERO venv has it).

  tools/.venv-libero/bin/python tools/microvla/plot_curve.py --out docs/goal_gate_curve.png \
      --run "gate:tools/microvla/out_gate/train_log.jsonl" --run "gate, continued:tools/microvla/out_gate2/train_log.jsonl" \
      --success "30.5:1/10" --success "62:2/10"

Runs are drawn one after the other on a common axis of training samples (steps x batch; --batch, default 16):
a run started with --init-from continues where the previous one ended. Per run: training loss and token accuracy
(EMA over steps), held-out token accuracy where logged (or given with --heldout-acc "K:acc"). --success "K:s/n"
marks closed-loop success s of n episodes measured on a model that had seen K thousand samples.
"""
import argparse
import os
import sys

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ (jsonl_log)
from jsonl_log import read_rows  # noqa: E402


def read_log(path):
    rows = read_rows(path)
    if not rows:
        raise SystemExit(f"plot_curve.py: {path} holds no logged step")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="LABEL:path/to/train_log.jsonl, in order")
    ap.add_argument("--success", action="append", default=[], help="K:s/n closed-loop success at K thousand samples")
    ap.add_argument("--heldout-acc", action="append", default=[], help="K:acc held-out token accuracy measured "
                    "afterwards on a model that had seen K thousand samples")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--title", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    offset = 0
    for spec in args.run:
        label, path = spec.split(":", 1)
        rows = read_log(path)
        x = [(offset + r["step"] * args.batch) / 1e3 for r in rows]
        ax_loss.plot(x, [r["loss_ema"] for r in rows], label=label)
        ax_acc.plot(x, [r["acc_ema"] for r in rows], label=f"{label}: train")
        held = [(xx, r["held_acc"]) for xx, r in zip(x, rows) if "held_acc" in r]
        if held:
            ax_acc.plot(*zip(*held), "o-", ms=3, label=f"{label}: held-out")
        offset += rows[-1]["step"] * args.batch
    if args.heldout_acc:
        pts = [tuple(float(v) for v in spec.split(":")) for spec in args.heldout_acc]
        ax_acc.plot(*zip(*pts), "s--", ms=4, color="tab:green", label="held-out frames")
    if args.success:
        ax_sr = ax_acc.twinx()
        pts = []
        for spec in args.success:
            k, frac = spec.split(":")
            s, n = (int(v) for v in frac.split("/"))
            pts.append((float(k), s / n))
            ax_sr.annotate(f"{s}/{n}", (float(k), s / n), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax_sr.plot(*zip(*pts), "k*", ms=9, label="closed-loop success")
        ax_sr.set_ylim(0, 1)
        ax_sr.set_ylabel("closed-loop success")
        ax_sr.legend(loc="lower right", fontsize=7)
    ax_loss.set_xlabel("training samples (thousands)")
    ax_loss.set_ylabel("loss (EMA)")
    ax_acc.set_xlabel("training samples (thousands)")
    ax_acc.set_ylabel("action-token accuracy")
    ax_acc.set_ylim(0, 1)
    ax_loss.legend(fontsize=7)
    ax_acc.legend(loc="upper left", fontsize=7)
    if args.title:
        fig.suptitle(args.title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
