"""What the regularizers cost a training step, against the code users write today.

    .venv/bin/python benchmarks/regularizers.py            # B=32, T=100, 256, 1 thread
    .venv/bin/python benchmarks/regularizers.py --threads 2 --repeats 31
    .venv/bin/python benchmarks/regularizers.py --quick    # a smoke run
    .venv/bin/python benchmarks/kernels.py --only regularizers   # the same script

A training step is forward, backward of a fixed random projection of the output,
gradients for the input and every weight, in training mode (masks drawn every
call), on time-major input (T, B, 256) as AWD-LSTM runs it. Three groups, each one
interleaved run (every contender once per repeat, in rotating order, so a busy
neighbour slows all alike; repeats stop at --repeats or after --seconds per group,
at least 3), medians of the times and of the per-repeat ratios:

1. one layer, rnnspec's kernel (`CustomLSTM(impl="custom")`): without options, each
   option alone, recurrent dropout + zoneout + weight drop together; and the per-step
   loops users write for recurrent dropout and zoneout (`nn.LSTMCell`).
2. two layers, rnnspec's kernel, dropout 0.3 between them: plain, locked, and AWD's
   options (weight drop + locked dropout) against the stack without any.
3. three layers on torch's kernel: salesforce awd-lstm-lm's `WeightDrop` around
   single-layer `nn.LSTM`s with `LockedDropout` between them, against rnnspec's
   `CustomLSTM(impl="auto", weight_drop=0.5, locked_dropout=True, dropout=0.3)`, and
   a plain 3-layer `nn.LSTM` (no regularizers) for scale.

Before timing, the script checks that every anchor computes what rnnspec computes:
the same weights; the loops, under the same seed, draw the masks rnnspec draws
(same shapes, same order) so their training outputs must be equal; the AWD stack
equals rnnspec's in eval mode (and in training when the masks happen to be drawn in
the same order; the line says which). A contender that raises (an option not
implemented yet) is left out and its row reads "n/a: <error>".
"""

import argparse
import datetime
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_kernel_arguments,
    machine,
    time_training_steps,
)
from rnnspec.nn import CustomLSTM  # noqa: E402

RECURRENT_DROPOUT = 0.25
WEIGHT_DROP = 0.5
ZONEOUT = 0.1  # h and c
DROPOUT = 0.3  # between layers
EACH, ALL, ANCHOR = 1.25, 1.4, 1.05  # the targets


# --- The anchors: the code users write today -------------------------------------


class WeightDrop(nn.Module):
    """DropConnect on an `nn.LSTM`'s `weight_hh_l0`, as salesforce/awd-lstm-lm's
    `weight_drop.py` does it, in the form that still runs on torch 2.x.

    The original deletes the module's `weight_hh_l0` parameter, registers the raw
    weight as `weight_hh_l0_raw`, makes `flatten_parameters` a no-op and, before each
    forward, sets `weight_hh_l0 = nn.Parameter(F.dropout(raw))`. That new leaf cuts
    the gradient to the raw weight and breaks torch's RNN weight bookkeeping on
    every release since 1.0 (pytorch#32346, awd-lstm-lm#86). The community fix
    (fastai's WeightDropout, allennlp#3357), kept here: the raw weight stays the
    Parameter and the dropped weight is set as a plain tensor attribute, which
    `RNNBase.__setattr__` also writes into the module's `_flat_weights`.
    """

    def __init__(self, module: nn.LSTM, p: float):
        super().__init__()
        raw = module.weight_hh_l0
        del module._parameters["weight_hh_l0"]
        module.register_parameter("weight_hh_l0_raw", nn.Parameter(raw.detach()))
        module.flatten_parameters = _no_op  # as AWD: its weights are never flat
        self.module, self.p = module, p

    def drop(self, raw: torch.Tensor) -> torch.Tensor:
        """The dropped weight, a new mask each call (the benchmark's check replays
        rnnspec's masks here)."""
        return F.dropout(raw, self.p)

    def forward(self, x, state=None):
        raw = self.module.weight_hh_l0_raw
        # eval: a copy, not the Parameter itself (setattr would register it)
        dropped = self.drop(raw) if self.training else raw.clone()
        self.module.weight_hh_l0 = dropped  # RNNBase.__setattr__: _flat_weights too
        return self.module(x, state)


def _no_op(*args, **kwargs) -> None:
    return None


class LockedDropout(nn.Module):
    """AWD-LSTM's LockedDropout (awd-lstm-lm `locked_dropout.py`): one mask
    (1, B, F) per call, the same at every step of time-major (T, B, F) input."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        """A mask (1, B, F), scaled (the check replays rnnspec's here)."""
        mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - self.p)
        return mask.div_(1 - self.p)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * self.draw(x)


class AWDStack(nn.Module):
    """The recurrent part of AWD-LSTM's `RNNModel.forward`: single-layer
    `nn.LSTM`s, each in a `WeightDrop` on `weight_hh_l0`, with `LockedDropout`
    between layers (AWD's `dropouth`). Input (T, B, F), time-major as AWD's."""

    def __init__(self, size: int, layers: int, weight_drop: float, dropout: float):
        super().__init__()
        self.rnns = nn.ModuleList(
            WeightDrop(nn.LSTM(size, size), weight_drop) for _ in range(layers)
        )
        self.lockdrop = LockedDropout(dropout)

    def load_from(self, ours: nn.LSTM) -> None:
        """Layer k's weights from `ours`'s `*_l{k}` (W_hh into `weight_hh_l0_raw`)."""
        state = ours.state_dict()
        for k, wrapped in enumerate(self.rnns):
            lstm = wrapped.module
            with torch.no_grad():
                lstm.weight_ih_l0.copy_(state[f"weight_ih_l{k}"])
                lstm.weight_hh_l0_raw.copy_(state[f"weight_hh_l{k}"])
                lstm.bias_ih_l0.copy_(state[f"bias_ih_l{k}"])
                lstm.bias_hh_l0.copy_(state[f"bias_hh_l{k}"])

    def forward(self, x, state=None):
        finals = []
        for k, rnn in enumerate(self.rnns):
            x, final = rnn(x)
            finals.append(final)
            if k + 1 < len(self.rnns):
                x = self.lockdrop(x)
        return x, finals


class CellLoop(nn.Module):
    """The per-step loop users write for what torch's fused LSTM cannot run: an
    `nn.LSTMCell` called once per step under autograd, with

    * recurrent dropout (Gal & Ghahramani 2016; Keras' `recurrent_dropout`): one
      mask (B, H) per sequence on h_{t-1} where it enters W_hh. An LSTM uses h_{t-1}
      only there, so the cell is called on (m * h, c);
    * zoneout (Krueger et al. 2017, as in their code): after the cell, each unit of
      h and of c keeps its previous value where its mask is 1; in eval h and c are
      blended by the rate, the masks' expectation.

    The masks are drawn before the loop with `bernoulli_` (rec (B, H), zone_h and
    zone_c (T, B, H)); code that draws a zoneout mask per step is slower still.
    """

    def __init__(self, size: int, hidden: int, recurrent_dropout=0.0, zoneout=0.0):
        super().__init__()
        self.cell = nn.LSTMCell(size, hidden)
        self.recurrent_dropout, self.zoneout = recurrent_dropout, zoneout

    def load_from(self, ours: nn.LSTM) -> None:
        state = ours.state_dict()
        self.cell.load_state_dict({k[:-3]: state[k] for k in state if k[-3:] == "_l0"})

    def draw(self, x: torch.Tensor) -> list:
        """[rec (B, H) scaled, zone_h (T, B, H), zone_c (T, B, H)], None where off
        (the check replays rnnspec's masks here)."""
        steps, batch = x.shape[0], x.shape[1]
        hidden, p, z = self.cell.hidden_size, self.recurrent_dropout, self.zoneout
        rec = zone_h = zone_c = None
        if p > 0:
            rec = x.new_empty(batch, hidden).bernoulli_(1 - p).div_(1 - p)
        if z > 0:
            zone_h = x.new_empty(steps, batch, hidden).bernoulli_(z)
            zone_c = x.new_empty(steps, batch, hidden).bernoulli_(z)
        return [rec, zone_h, zone_c]

    def forward(self, x, state=None):  # x (T, B, I)
        steps, batch = x.shape[0], x.shape[1]
        z = self.zoneout
        h = c = x.new_zeros(batch, self.cell.hidden_size)
        rec, zone_h, zone_c = self.draw(x) if self.training else [None] * 3
        outputs = []
        for t in range(steps):
            new_h, new_c = self.cell(x[t], (h if rec is None else h * rec, c))
            if zone_h is not None:  # training: keep the previous unit where 1
                h = zone_h[t] * h + (1 - zone_h[t]) * new_h
                c = zone_c[t] * c + (1 - zone_c[t]) * new_c
            elif z > 0:  # eval: the expectation
                h, c = z * h + (1 - z) * new_h, z * c + (1 - z) * new_c
            else:
                h, c = new_h, new_c
            outputs.append(h)
        return torch.stack(outputs), (h, c)  # (T, B, H)


# --- The groups --------------------------------------------------------------------


@dataclass
class Row:
    """A contender: `make(size)` builds it; its ratio is its time over `vs`'s,
    with `target` (">" or "<=", bound) or none."""

    label: str
    make: Callable[[int], nn.Module]
    vs: Optional[str] = None
    target: Optional[Tuple[str, float]] = None


def custom(layers: int = 1, **options) -> Callable[[int], nn.Module]:
    return lambda size: CustomLSTM(size, size, layers, impl="custom", **options)


STEP_OPTIONS = dict(
    recurrent_dropout=RECURRENT_DROPOUT,
    zoneout=ZONEOUT,
    zoneout_cell=ZONEOUT,
    weight_drop=WEIGHT_DROP,
)

ONE_LAYER = [
    Row("none", custom()),
    Row(
        f"recurrent_dropout {RECURRENT_DROPOUT}",
        custom(recurrent_dropout=RECURRENT_DROPOUT),
        "none",
        ("<=", EACH),
    ),
    Row(
        f"weight_drop {WEIGHT_DROP}",
        custom(weight_drop=WEIGHT_DROP),
        "none",
        ("<=", EACH),
    ),
    Row(
        f"zoneout {ZONEOUT} cell={ZONEOUT}",
        custom(zoneout=ZONEOUT, zoneout_cell=ZONEOUT),
        "none",
        ("<=", EACH),
    ),
    Row(
        "recurrent_dropout + zoneout + weight_drop",
        custom(**STEP_OPTIONS),
        "none",
        ("<=", ALL),
    ),
    Row(
        f"loop: nn.LSTMCell + recurrent dropout {RECURRENT_DROPOUT}",
        lambda size: CellLoop(size, size, recurrent_dropout=RECURRENT_DROPOUT),
        f"recurrent_dropout {RECURRENT_DROPOUT}",
        (">", 1.0),
    ),
    Row(
        f"loop: nn.LSTMCell + zoneout {ZONEOUT}",
        lambda size: CellLoop(size, size, zoneout=ZONEOUT),
        f"zoneout {ZONEOUT} cell={ZONEOUT}",
        (">", 1.0),
    ),
]

TWO_LAYERS = [
    Row("none, 2 layers", custom(2)),
    Row(f"dropout {DROPOUT}", custom(2, dropout=DROPOUT)),
    Row(
        f"dropout {DROPOUT} locked",
        custom(2, dropout=DROPOUT, locked_dropout=True),
        f"dropout {DROPOUT}",
        ("<=", EACH),
    ),
    Row(
        f"AWD: weight_drop {WEIGHT_DROP} + dropout {DROPOUT} locked",
        custom(2, dropout=DROPOUT, locked_dropout=True, weight_drop=WEIGHT_DROP),
        "none, 2 layers",
        ("<=", ALL),
    ),
]

AWD_LABEL = "AWD anchor: WeightDrop + LockedDropout"
THREE_LAYERS = [
    Row(
        f"nn.LSTM(dropout={DROPOUT}), no other regularizer",
        lambda size: nn.LSTM(size, size, 3, dropout=DROPOUT),
    ),
    Row(AWD_LABEL, lambda size: AWDStack(size, 3, WEIGHT_DROP, DROPOUT)),
    Row(
        f"rnnspec auto: weight_drop {WEIGHT_DROP} + dropout {DROPOUT} locked",
        lambda size: CustomLSTM(
            size,
            size,
            3,
            dropout=DROPOUT,
            impl="auto",
            weight_drop=WEIGHT_DROP,
            locked_dropout=True,
        ),
        AWD_LABEL,
        ("<=", ANCHOR),
    ),
]

GROUPS = [
    ("1 layer, custom", ONE_LAYER),
    ("2 layers, custom", TWO_LAYERS),
    ("3 layers, torch's kernel", THREE_LAYERS),
]


# --- Building, checking, timing ------------------------------------------------------


def error_text(error: Exception) -> str:
    lines = str(error).strip().splitlines() or [""]
    return f"n/a: {type(error).__name__}: {lines[0][:100]}"


def build(rows: List[Row], size: int, x, grad) -> Tuple[Dict, Dict]:
    """({label: module} that ran a training step, {label: "n/a: ..."} that did
    not). The first row's weights are loaded into every other contender."""
    models, failed = {}, {}
    for row in rows:
        torch.manual_seed(0)
        try:
            model = row.make(size)
            if models:
                load_weights(model, next(iter(models.values())))
            model.train()
            out, _ = model(x)
            out.backward(grad)
        except Exception as error:  # an option not implemented (yet) is a row
            failed[row.label] = error_text(error)
            continue
        models[row.label] = model
    return models, failed


def load_weights(model: nn.Module, first: nn.Module) -> None:
    if isinstance(model, (AWDStack, CellLoop)):
        model.load_from(first)
    else:
        model.load_state_dict(first.state_dict())


def outputs(model: nn.Module, x, training: bool) -> torch.Tensor:
    model.train(training)
    with torch.no_grad():
        out = model(x)[0]
    model.train()
    return out


def differs(a: torch.Tensor, b: torch.Tensor) -> Optional[str]:
    """None if equal to rounding, else the first line of why not."""
    try:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    except AssertionError as error:
        return str(error).strip().splitlines()[0]
    return None


DRAWS = ("_kernel_weight_mask", "_kernel_locked_mask", "_kernel_step_masks")


@contextmanager
def recording(ours: CustomLSTM) -> Iterator[Dict[str, list]]:
    """{draw method: [what it returned, in call order]} for rnnspec's mask draws
    (wrapping them on the instance, as tests/nn/masks.py does)."""
    found: Dict[str, list] = {name: [] for name in DRAWS}
    for name in DRAWS:
        draw = getattr(ours, name)

        def record(*args, draw=draw, out=found[name]):
            masks = draw(*args)
            out.append(_cloned(masks))
            return masks

        setattr(ours, name, record)
    try:
        yield found
    finally:
        for name in DRAWS:
            delattr(ours, name)


def _cloned(masks):
    if isinstance(masks, list):
        return [None if m is None else m.clone() for m in masks]
    return None if masks is None else masks.clone()


def replay(anchor: nn.Module, found: Dict[str, list]) -> None:
    """Makes the anchor's draws return the masks rnnspec drew, in order."""
    if isinstance(anchor, CellLoop):
        (masks,) = found["_kernel_step_masks"]
        anchor.draw = lambda x: masks
        return
    for rnn, mask in zip(anchor.rnns, found["_kernel_weight_mask"]):
        rnn.drop = _times(mask)
    locked = iter(found["_kernel_locked_mask"])
    anchor.lockdrop.draw = lambda x: next(locked).unsqueeze(0)  # (1, B, F)


def _times(mask: torch.Tensor):
    return lambda raw: raw * mask


def compare(anchor: nn.Module, ours: CustomLSTM, x) -> Optional[str]:
    """None if the anchor computes what `ours` does: equal outputs in eval, and in
    training with the masks `ours` drew replayed in the anchor; else why not."""
    why = differs(outputs(anchor, x, False), outputs(ours, x, False))
    if why is not None:
        return f"eval: {why}"
    with recording(ours) as found:
        expected = outputs(ours, x, True)
    replay(anchor, found)
    try:
        why = differs(outputs(anchor, x, True), expected)
    finally:  # the anchor's own draws again
        for module in anchor.modules():
            for name in ("draw", "drop"):
                module.__dict__.pop(name, None)
    return None if why is None else f"training: {why}"


def check(models: Dict[str, nn.Module], x) -> Tuple[List[str], set]:
    """What each anchor was checked to compute: (notes, labels whose check failed).
    An anchor is compared with the rnnspec row it is timed against; an rnnspec
    row with regularizers must change the training output."""
    notes, bad = [], set()
    for label, model in models.items():
        twin = twin_of(model, models)
        if isinstance(model, AWDStack):
            raws = [rnn.module.weight_hh_l0_raw for rnn in model.rnns]
            if any(r.grad is None or not r.grad.any() for r in raws):
                bad.add(label)
                notes.append(f"{label}: CHECK FAILED: no gradient for W_hh raw")
        if twin is not None:
            why = compare(model, twin, x)
            if why is None:
                notes.append(
                    f"{label}: equal to rnnspec in eval and in training (rnnspec's "
                    "masks replayed)"
                )
            else:
                bad.add(label)
                notes.append(f"{label}: CHECK FAILED, {why}")
        if isinstance(model, CustomLSTM) and regularized(model):
            plain = CustomLSTM(
                model.input_size,
                model.hidden_size,
                model.num_layers,
                dropout=model.dropout,
                impl=model.impl,
            )
            plain.load_state_dict(model.state_dict())
            torch.manual_seed(7)
            out = outputs(model, x, True)
            torch.manual_seed(7)
            if differs(out, outputs(plain, x, True)) is None:
                bad.add(label)
                notes.append(f"{label}: NO EFFECT in training (not applied?)")
    return notes, bad


def regularized(model: CustomLSTM) -> bool:
    rates = (model.recurrent_dropout, model.weight_drop, model.zoneout)
    return any(rate > 0 for rate in rates) or model.locked_dropout


def twin_of(anchor: nn.Module, models: Dict[str, nn.Module]):
    """The rnnspec module computing what the anchor does; None for the others."""
    for model in models.values():
        if not isinstance(model, CustomLSTM):
            continue
        if isinstance(anchor, CellLoop):
            rates = (model.recurrent_dropout, model.zoneout, model.zoneout_cell)
            mine = (anchor.recurrent_dropout, anchor.zoneout, anchor.zoneout)
            if rates == mine and model.weight_drop == 0:
                return model
        if isinstance(anchor, AWDStack) and model.locked_dropout:
            return model
    return None


def ratio_cell(row: Row, times: Dict[str, List[float]]) -> Tuple[str, str, str]:
    """(ratio, target, verdict) of a row that ran."""
    if row.vs is None:
        return "—", "—", ""
    if row.vs not in times:
        return f"n/a ({row.vs} did not run)", "—", ""
    value = statistics.median(a / b for a, b in zip(times[row.label], times[row.vs]))
    ratio = f"{value:.2f}× {row.vs}"
    if row.target is None:
        return ratio, "—", ""
    op, bound = row.target
    met = value <= bound if op == "<=" else value > bound
    text = f"≤ {bound}×" if op == "<=" else f"> {bound}× (faster)"
    return ratio, text, "met" if met else "**missed**"


def run_group(title: str, rows: List[Row], args) -> List[str]:
    """Prints the group's table rows; returns its check notes."""
    torch.manual_seed(1)
    x = torch.randn(args.steps, args.batch, args.size, requires_grad=True)
    grad = torch.randn(args.steps, args.batch, args.size)
    models, failed = build(rows, args.size, x, grad)
    notes, bad = check(models, x)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = time_training_steps(models, x, grad, args.repeats, args.seconds, clock)
    repeats = len(next(iter(times.values()))) if times else 0
    for row in rows:
        if row.label in failed:
            print(f"| {title} | {row.label} | {failed[row.label]} | | | | |")
            continue
        ms = 1e3 * statistics.median(times[row.label])
        ratio, target, verdict = ratio_cell(row, times)
        if row.label in bad:
            verdict = "**check failed** (below)"
        print(
            f"| {title} | {row.label} | {ms:.1f} | {ratio} | {target} | {verdict} | "
            f"{repeats} |"
        )
    return [f"{title}: {note}" for note in notes]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=21, batch=32, steps=100, threads=1)
    parser.add_argument(
        "--seconds", type=float, default=90.0, help="time budget per group"
    )
    parser.add_argument(
        "--groups", default="123", help="which groups to run (default: 123)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time steps by wall time or by this process's CPU time (less moved "
        "by neighbours on a shared machine, at 1 thread)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 8, 20, 64
        args.seconds = min(args.seconds, 10.0)

    print(f"machine: {machine()}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"T={args.steps}, B={args.batch}, input=hidden={args.size}, float32, "
        f"training mode, forward + backward, {args.clock} clock; repeats: up to "
        f"{args.repeats}, {args.seconds:.0f} s per group\n"
    )
    print("| group | contender | ms | ratio | target | verdict | repeats |")
    print("|---|---|---:|---|---|---|---:|")
    notes = []
    for number, (title, rows) in enumerate(GROUPS, 1):
        if str(number) in args.groups:
            notes += run_group(title, rows, args)
    print()
    for note in notes:
        print(f"check: {note}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
