"""Issue 14: `rnnspec train --ar A --tar B`, AWD-LSTM's activation regularization (AR)
and temporal activation regularization (TAR), checked against a manual computation
from a twin model run step by step with the same seed."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

import rnnspec
from rnnspec.cli import main
from rnnspec.train import TrainConfig, TrainError, load_checkpoint, train
from rnnspec.train.regularize import ActivationRegularizer
from rnnspec.train.text import IGNORE

# Each spec's top layer is dropped before its head (p = 0.5: AR must see the mask).
SPECS = {
    # torch's nn.LSTM fed a PackedSequence, dropout between its 2 layers
    "torch packed": "cell lstm\n hidden 8\n layers 2\n dropout 0.3\n impl torch\n "
    "packing true",
    # torch's LSTM with proj_size, bidirectional, packed
    "torch proj bidir": "cell lstm\n hidden 8\n proj 5\n directions 2\n impl torch\n "
    "packing true",
    # rnnspec's kernel, bidirectional GRU, packed
    "custom bidir": "cell gru\n hidden 8\n directions 2\n impl custom\n packing true",
    # rnnspec's kernel, projected 2-layer LSTM, packed
    "custom proj": "cell lstm\n hidden 8\n proj 5\n layers 2\n impl custom\n "
    "packing true",
    # no packing (padded steps run, yet never count), attention between rnn and
    # head, time-major input
    "attention unpacked": "cell rnn\n hidden 8\n attention general mask=causal\n "
    "batch_first false",
}

LENGTHS = torch.tensor([7, 3, 5, 1, 2])  # a packed batch: B = 5, T = 7


def spec_of(body: str, name: str = "M") -> str:
    return (
        f"model {name} {{\n input tokens 11 embed=6 dropout=0.2\n {body}\n "
        "head logits dropout=0.5\n}\n"
    )


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the terms against a manual computation ------------------------------------------


def replay(model, x, lengths):
    """The model's training forward written out, batch-first, drawing its dropout
    masks in the order `model.forward` does: (raw_top, dropped_top, logits)."""
    lens = lengths if model.packing else None
    emb = F.dropout(model.embedding(x), model.input_dropout, True)
    if model.torch_kernel and lens is not None:
        packed = pack_padded_sequence(emb, lens, batch_first=True, enforce_sorted=False)
        raw = pad_packed_sequence(model.rnn(packed)[0], batch_first=True)[0]
    elif model.torch_kernel:
        raw = model.rnn(emb)[0]
    else:
        raw = model.rnn(emb, None, lens)[0]
    top = raw if model.attention is None else model.attention(raw, lens)
    dropped = F.dropout(top, model.head_dropout, True)
    assert not torch.equal(dropped, top)  # AR below must tell them apart
    return raw, dropped, model.head(dropped)


def manual_ar(dropped, lengths):
    """mean(dropped²) over each sequence's valid steps and every feature, by loops."""
    total, count = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            total = total + (dropped[b, t] ** 2).sum()
            count += dropped.shape[-1]
    return total / count


def manual_tar(raw, lengths):
    """mean((raw[t+1] − raw[t])²) over pairs of valid steps, by loops."""
    total, count = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        for t in range(n - 1):
            total = total + ((raw[b, t + 1] - raw[b, t]) ** 2).sum()
            count += raw.shape[-1]
    return total / count


def check_against_manual(model) -> None:
    """AR and TAR of `model`'s forward (hooked), and their gradients, equal those of
    a twin's replay with the same seed."""
    model = model.double().train()
    twin = copy.deepcopy(model)
    torch.manual_seed(3)
    x = torch.randint(0, 11, (5, 7))
    lens = LENGTHS if model.packing else None
    regularizer = ActivationRegularizer(ar=2.0, tar=3.0)

    torch.manual_seed(7)
    with regularizer.capture(model):
        logits, _ = model(x if model.batch_first else x.T, lens)
    assert not model.rnn._forward_hooks and not model.head._forward_pre_hooks
    terms = regularizer.terms(LENGTHS)  # padded steps never count, packed or not
    logits = logits if model.batch_first else logits.transpose(0, 1)

    torch.manual_seed(7)
    raw, dropped, twin_logits = replay(twin, x, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):  # the same masks were drawn
        assert_close(logits[b, :n], twin_logits[b, :n], rtol=1e-12, atol=1e-12)
    ar, tar = 2.0 * manual_ar(dropped, LENGTHS), 3.0 * manual_tar(raw, LENGTHS)
    assert sorted(terms) == ["ar", "tar"]
    assert_close(terms["ar"], ar, rtol=1e-12, atol=0)
    assert_close(terms["tar"], tar, rtol=1e-12, atol=0)
    assert terms["ar"] > 0 and terms["tar"] > 0

    # The terms are part of the graph: their gradients are the manual ones.
    (terms["ar"] + terms["tar"]).backward()
    (ar + tar).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("body", SPECS.values(), ids=SPECS.keys())
def test_terms_equal_a_manual_computation(body):
    torch.manual_seed(0)
    check_against_manual(rnnspec.instantiate(rnnspec.parse(spec_of(body))[0]))


@pytest.mark.parametrize("case", ["torch packed", "custom bidir"])
def test_generated_models_give_the_same_terms(case, tmp_path):
    (tmp_path / "gen.rnn").write_text(spec_of(SPECS[case], "Gen"))
    assert main(["build", str(tmp_path / "gen.rnn"), "-o", str(tmp_path)]) == 0
    found = importlib.util.spec_from_file_location("_ar_tar_gen", tmp_path / "gen.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Gen()
    assert type(model).__module__ == "_ar_tar_gen"
    check_against_manual(model)


def test_no_hooks_no_terms_outside_capture_and_with_zero_weights():
    model = rnnspec.instantiate(rnnspec.parse(spec_of(SPECS["custom bidir"]))[0])
    x = torch.randint(0, 11, (5, 7))
    off = ActivationRegularizer(0.0, 0.0)
    assert not off.active
    with off.capture(model):
        assert not model.rnn._forward_hooks and not model.head._forward_pre_hooks
        model(x, LENGTHS)
    assert off.terms(LENGTHS) == {}
    only_tar = ActivationRegularizer(0.0, 1.0)
    with only_tar.capture(model):
        assert len(model.rnn._forward_hooks) == 1
        assert not model.head._forward_pre_hooks
        model(x, LENGTHS)
    assert list(only_tar.terms(LENGTHS)) == ["tar"]
    model(x, LENGTHS)  # outside capture: nothing is caught
    with pytest.raises(TrainError, match="`rnn` was not called"):
        only_tar.terms(LENGTHS)


def test_tar_of_one_step_sequences_is_zero_not_nan():
    regularizer = ActivationRegularizer(1.0, 1.0)
    model = rnnspec.instantiate(rnnspec.parse(spec_of(SPECS["custom bidir"]))[0])
    with regularizer.capture(model):
        model(torch.randint(0, 11, (3, 1)), torch.ones(3, dtype=torch.long))
    terms = regularizer.terms(torch.ones(3, dtype=torch.long))
    assert terms["tar"].item() == 0.0 and terms["ar"].item() > 0


# -- training with --ar and --tar ---------------------------------------------------

LM = """
model Lm {
    input tokens 20 embed=12 dropout=0.1
    cell lstm
    hidden 12
    layers 2
    dropout 0.2
    packing true
    head logits dropout=0.3
}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    words = ["alpha", "beta", "gamma", "delta", "pi", "omicron"]  # 17 characters
    text = "".join(  # lines of many lengths: batches of different lengths
        " ".join(words[(i * 7 + k * 3) % 6] for k in range(1 + i % 7)) + "\n"
        for i in range(150)
    )
    (tmp_path / "lm.rnn").write_text(LM)
    (tmp_path / "text.txt").write_text(text)
    return {
        "spec": str(tmp_path / "lm.rnn"),
        "text": str(tmp_path / "text.txt"),
        "out": str(tmp_path / "run"),
    }


def config(files, **changes) -> TrainConfig:
    base = dict(
        spec=files["spec"], data=files["text"], out=files["out"], steps=4,
        seq_len=20, batch_size=6, lr=1e-2, warmup=0, progress=False, plot=False,
        checkpoint_every=0,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


def test_zero_weights_give_the_losses_of_today(files, tmp_path):
    plain = train(config(files, out=tmp_path / "plain"))
    zero = train(config(files, out=tmp_path / "zero", ar=0, tar=0.0))
    assert zero.losses == plain.losses and zero.val_loss == plain.val_loss
    assert zero.regularization == plain.regularization == {}
    metrics = json.loads((tmp_path / "zero" / "metrics.json").read_text())
    assert metrics["ar"] == metrics["tar"] == 0 and "ar_losses" not in metrics


def test_a_training_step_adds_the_manual_terms_to_its_loss(files, monkeypatch):
    """Step 1 of `train`: the logged terms are those of a twin model's replay on the
    same batch with the same RNG state, and the weights after it are one AdamW step
    on cross-entropy + AR + TAR."""
    import rnnspec.train.loop as loop

    seen = {}

    def recording_step(run, state, step, batch, precision):
        seen.update(
            batch=batch, rng=torch.get_rng_state(), model=copy.deepcopy(state.model)
        )
        return real_step(run, state, step, batch, precision)

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", recording_step)
    result = train(config(files, steps=1, ar=2.0, tar=3.0, clip=0))

    x, y, lengths = seen["batch"]
    assert len(set(lengths.tolist())) > 1  # a packed batch of different lengths
    twin = seen["model"].train()
    torch.set_rng_state(seen["rng"])
    raw, dropped, logits = replay(twin, x, lengths)
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    ar, tar = 2.0 * manual_ar(dropped, lengths), 3.0 * manual_tar(raw, lengths)
    assert result.losses == pytest.approx([ce.item()], rel=1e-6)
    assert result.regularization["ar"] == pytest.approx([ar.item()], rel=1e-6)
    assert result.regularization["tar"] == pytest.approx([tar.item()], rel=1e-6)

    optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.01)
    (ce + ar + tar).backward()
    optimizer.step()
    for name, value in twin.state_dict().items():
        assert_close(result.model.state_dict()[name], value, msg=name)
    assert not result.model.rnn._forward_hooks  # removed after training
    assert not result.model.head._forward_pre_hooks


def test_the_terms_change_training_and_are_recorded(files, tmp_path, capsys):
    plain = train(config(files, out=tmp_path / "plain"))
    out = tmp_path / "reg"
    reg = train(config(files, out=out, ar=2.0, tar=1.0, checkpoint_every=2))
    assert reg.losses[0] == plain.losses[0]  # step 1's cross-entropy: same weights
    assert reg.losses[1] != plain.losses[1]  # then the terms moved the weights
    assert sorted(reg.regularization) == ["ar", "tar"]
    assert all(len(v) == 4 and min(v) > 0 for v in reg.regularization.values())
    said = capsys.readouterr().out
    assert "AR 2 and TAR 1 (AWD-LSTM)" in said and "step 2: loss " in said
    assert ", ar " in said and "AR term" in said and ", TAR term" in said

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["ar"], metrics["tar"]) == (2.0, 1.0)
    assert metrics["ar_losses"] == reg.regularization["ar"]
    assert metrics["tar_losses"] == reg.regularization["tar"]
    checkpoint = load_checkpoint(out)
    assert (checkpoint["settings"]["ar"], checkpoint["settings"]["tar"]) == (2.0, 1.0)
    assert checkpoint["regularization"] == reg.regularization


def test_resume_keeps_the_terms_and_refuses_other_weights(files, tmp_path):
    straight = train(config(files, out=tmp_path / "a", steps=6, ar=1.0, tar=2.0))
    train(config(files, out=tmp_path / "b", steps=3, ar=1.0, tar=2.0))
    with pytest.raises(TrainError, match=r"ar 0.5 \(the run has 1.0\)"):
        train(config(files, out=tmp_path / "b", steps=6, ar=0.5, resume=True))
    resumed = train(config(files, out=tmp_path / "b", steps=6, resume=True))
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    for name in ("ar", "tar"):
        assert resumed.regularization[name] == pytest.approx(
            straight.regularization[name], abs=1e-6
        )


def test_checkpoints_from_before_ar_and_tar_resume_without_them(files, tmp_path):
    train(config(files, steps=2))
    path = Path(files["out"]) / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["settings"]["ar"], old["settings"]["tar"], old["regularization"]
    torch.save(old, path)
    resumed = train(config(files, steps=3, resume=True))
    assert len(resumed.losses) == 3 and resumed.regularization == {}
    old["regularization"] = {"ar": [0.1, 0.2]}  # terms of a run that had none
    torch.save(old, path)
    with pytest.raises(TrainError, match=r"expected regularization terms \[\]"):
        train(config(files, steps=4, resume=True))


def test_ar_and_tar_from_json_and_toml_configs(files, tmp_path):
    tomllib = pytest.importorskip("tomllib")  # the standard library from 3.11
    toml = tomllib.loads("ar = 2\ntar = 1.5\n")
    from_json = json.loads('{"ar": 2.0, "tar": 1}')
    for options in (toml, from_json):
        result = train(config(files, steps=1, force=True, **options))
        assert sorted(result.regularization) == ["ar", "tar"]


@pytest.mark.parametrize(
    "field, value",
    [("ar", -1.0), ("ar", math.nan), ("tar", math.inf), ("tar", "0.5"), ("ar", True)],
)
def test_bad_weights_are_one_line_before_anything_is_written(files, field, value):
    with pytest.raises(TrainError, match=rf"^expected {field} to be a finite number "):
        train(config(files, **{field: value}))
    assert not Path(files["out"]).exists()


@pytest.mark.parametrize("flag, value", [("--ar", "nan"), ("--tar", "-0.1")])
def test_bad_weights_on_the_command_line(files, capsys, flag, value):
    args = ["train", files["spec"], "--data", files["text"], "--out", files["out"]]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a finite number >= 0, got '{value}'" in err
    assert not Path(files["out"]).exists()


def test_cli_ar_tar_and_generated_class_train_as_instantiate(files, tmp_path, capsys):
    """`--ar/--tar` through the CLI; the class `rnnspec build` wrote trains to the
    same losses and terms, bit for bit."""
    spec = tmp_path / "lm17.rnn"  # the text's vocabulary: no fitting, so the same
    spec.write_text(LM.replace("tokens 20", "tokens 17"))
    assert main(["build", str(spec), "-o", str(tmp_path / "gen")]) == 0
    common = ["train", str(spec), "--data", files["text"], "--steps", "3"]
    common += ["--batch", "6", "--seq-len", "20", "--no-progress", "--no-plot"]
    common += ["--ar", "2", "--tar", "1"]
    assert main([*common, "--out", str(tmp_path / "rt")]) == 0
    assert main([*common, "--out", str(tmp_path / "gn")]
                + ["--generated", str(tmp_path / "gen" / "lm17.py")]) == 0  # fmt: skip
    capsys.readouterr()
    runtime, generated = (
        json.loads((tmp_path / name / "metrics.json").read_text())
        for name in ("rt", "gn")
    )
    assert runtime["ar_losses"] and runtime["tar_losses"]
    for key in ("losses", "ar_losses", "tar_losses", "val_loss"):
        assert generated[key] == runtime[key], key


def test_ar_sees_the_locked_head_dropout_inside_the_head():
    """`head ... dropout=P locked=true` drops inside the head (`head.dropout`): AR
    is taken on what that returns, the top outputs times the recorded mask."""
    text = spec_of("cell lstm\n hidden 6\n impl custom").replace(
        "dropout=0.5", "dropout=0.5 locked=true"
    )
    torch.manual_seed(0)
    model = rnnspec.instantiate(rnnspec.parse(text)[0]).double().train()
    masks = []
    draw = model.head.dropout.mask

    def record(shape, like):
        masks.append(draw(shape, like))
        return masks[-1]

    model.head.dropout.mask = record
    raw_outputs = []
    model.rnn.register_forward_hook(lambda m, a, out: raw_outputs.append(out[0]))
    regularizer = ActivationRegularizer(ar=2.0)
    x = torch.randint(0, 11, (5, 7))
    with regularizer.capture(model):
        model(x)
    (mask,) = masks  # (B, 1, F): one per sequence, every step
    dropped = raw_outputs[0] * mask
    assert not torch.equal(dropped, raw_outputs[0])
    assert_close(regularizer.terms()["ar"], 2.0 * dropped.pow(2).mean())
