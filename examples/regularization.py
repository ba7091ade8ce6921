"""The experiment of docs/regularization.md: AWD-LSTM's regularizers on and off.

    .venv/bin/python examples/regularization.py            # the run in the docs
    .venv/bin/python examples/regularization.py --steps 40 --every 20 --chars 20000

Trains `examples/awd_lstm.rnn` twice with `rnnspec train` on the same text, same
seed, same steps: once as written (weight drop, locked and word dropout, plus
`--ar/--tar`), once as the same network with every regularizer off (the spec is
derived from the IR, printed to the run directory). `rnnspec train --resume` runs
the steps in chunks of `--every`, each ending with a validation pass, so the
validation curve comes from the same command users run. Writes the curves to
docs/regularization.png and the figures to docs/regularization.json.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rnnspec  # noqa: E402
from rnnspec.lang.printer import model_source  # noqa: E402
from rnnspec.train.text import stdlib_corpus  # noqa: E402

SPEC = ROOT / "examples" / "awd_lstm.rnn"
#: AWD-LSTM's activation regularizers (Merity et al. 2017 use alpha 2, beta 1)
AR, TAR = 2.0, 1.0


def unregularized(spec):
    """The same network with every dropout and regularizer at its default (off)."""
    fields = spec.model_dump()
    defaults = type(spec).model_fields
    for name in ("dropout", "dropout_locked", "recurrent_dropout", "weight_drop"):
        if name in fields:
            fields[name] = defaults[name].default
    for name in ("zoneout", "zoneout_cell"):
        if name in fields:
            fields[name] = defaults[name].default
    for part in ("input", "head"):
        node = getattr(spec, part)
        if node is None:
            continue
        node_defaults = type(node).model_fields
        for name in fields[part]:
            if "dropout" in name or name == "locked":
                fields[part][name] = node_defaults[name].default
    return type(spec).model_validate(fields)


def train(spec_path, out, data, args, extra):
    """Run `rnnspec train` to each checkpoint step; the metrics after each chunk."""
    points = []
    for stop in range(args.every, args.steps + 1, args.every):
        command = [
            sys.executable, "-m", "rnnspec", "train", str(spec_path),
            "--data", str(data), "--steps", str(stop), "--out", str(out),
            "--seed", "0", "--threads", "1", "--no-progress", "--no-plot",
            "--batch", str(args.batch), "--seq-len", str(args.seq_len),
            "--val-fraction", "0.1", "--checkpoint-every", "0",
            "--resume" if stop > args.every else "--force", *extra,
        ]  # fmt: skip
        shown = [_relative(part) for part in command[2:]]
        print("$ rnnspec", " ".join(shown[1:]), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        metrics = json.loads((out / "metrics.json").read_text())
        points.append((stop, metrics["val_loss"]))
    return points, metrics


def _relative(part):
    """A path argument as the docs show it: relative to the repository."""
    return part.removeprefix(str(ROOT) + "/")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (label, run), color in zip(results.items(), ("tab:red", "tab:blue")):
        losses = run["train_losses"]
        window = 25
        smooth = [
            sum(losses[max(0, k - window + 1) : k + 1])
            / (k + 1 - max(0, k - window + 1))
            for k in range(len(losses))
        ]
        ax.plot(range(1, len(losses) + 1), smooth, color=color, alpha=0.5,
                label=f"{label}: train (25-step mean)")  # fmt: skip
        steps, val = zip(*run["val"])
        ax.plot(steps, val, "o-", color=color, label=f"{label}: validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / char)")
    ax.set_title("AWD-LSTM regularizers on and off (same network, data, seed)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--chars", type=int, default=150_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "regularization")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "stdlib-head.txt"
    data.write_text(stdlib_corpus()[: args.chars])
    (spec,) = rnnspec.parse_file(SPEC)
    plain_path = args.out / "unregularized.rnn"
    plain_path.write_text(model_source(unregularized(spec)) + "\n")
    runs = {
        "AWD options": (SPEC, ["--ar", str(AR), "--tar", str(TAR)]),
        "no regularization": (plain_path, []),
    }
    results = {}
    for label, (path, extra) in runs.items():
        out = args.out / ("awd" if extra else "plain")
        val, metrics = train(path, out, data, args, extra)
        results[label] = {
            "spec": path.read_text(),
            "command_flags": extra,
            "val": val,
            "train_losses": metrics["losses"],
            "final_val_loss": metrics["val_loss"],
            "final_val_perplexity": metrics["val_perplexity"],
            "best_val": min(v for _, v in val),
            "tokens_per_s": metrics.get("tokens_per_s"),
        }
    plot(results, args.docs / "regularization.png")
    summary = {
        k: {n: v for n, v in r.items() if n != "train_losses"}
        for k, r in results.items()
    }
    (args.docs / "regularization.json").write_text(json.dumps(summary, indent=1) + "\n")
    for label, run in results.items():
        final = run["final_val_loss"], run["final_val_perplexity"], run["best_val"]
        print(
            f"{label}: final validation loss {final[0]:.4f}, "
            f"perplexity {final[1]:.2f}, best {final[2]:.4f}"
        )


if __name__ == "__main__":
    main()
