"""Training library, bucketing sampler, `rnnspec train` and `rnnspec sample`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnspec
from rnnspec.cli import main
from rnnspec.train import (
    TextDataset,
    TrainConfig,
    TrainError,
    Vocab,
    fit_vocab,
    generate,
    load_checkpoint,
    model_from_checkpoint,
    stdlib_corpus,
    token_lines,
    train,
)
from rnnspec.train.batching import BucketBatchSampler
from rnnspec.train.text import EOL, IGNORE

TINY = """
model Tiny {
    input tokens 20 embed=16
    cell lstm
    hidden 16
    head logits tie=true
}
"""

# Dropout everywhere, so that resuming is exact only if the RNG state is restored.
DROPOUT = """
model Drop {
    input tokens 20 embed=12 dropout=0.1
    cell gru
    hidden 16
    layers 2
    dropout 0.3
    head logits dropout=0.1
}
"""


def corpus(lines: int = 300) -> str:
    """Predictable text: the loss of any working model falls fast on it."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    return "".join(
        " ".join(words[(i + k) % 5] for k in range(1 + i % 6)) + "\n"
        for i in range(lines)
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and so does a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tiny.rnn").write_text(TINY)
    (tmp_path / "drop.rnn").write_text(DROPOUT)
    (tmp_path / "text.txt").write_text(corpus())
    return {
        "tiny": str(tmp_path / "tiny.rnn"),
        "drop": str(tmp_path / "drop.rnn"),
        "text": str(tmp_path / "text.txt"),
        "out": str(tmp_path / "run"),
    }


def config(files: dict[str, str], **changes) -> TrainConfig:
    base = dict(
        spec=files["tiny"],
        data=files["text"],
        out=files["out"],
        steps=30,
        seq_len=24,
        batch_size=8,
        lr=1e-2,
        progress=False,
        plot=False,
        checkpoint_every=10,
    )
    base.update(changes)
    return TrainConfig(**base)


# -- the bucketing sampler ------------------------------------------------------------


def test_sampler_covers_every_index_once_in_similar_length_batches():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1000,), generator=gen).tolist()
    sampler = BucketBatchSampler(lengths, 16, pool_batches=8, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert Counter(map(len, batches)) == {16: 62, 8: 1}
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    # Random batches of 16 would span ~180 of the 199 possible lengths.
    assert sum(spread) / len(spread) < 30


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = list(range(1, 101))
    a = BucketBatchSampler(lengths, 4, seed=1)
    b = BucketBatchSampler(lengths, 4, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(BucketBatchSampler(lengths, 4, seed=2)) != first
    ordered = BucketBatchSampler(lengths, 4, shuffle=False)
    assert list(ordered)[0] == [99, 98, 97, 96]  # longest first within a pool


def test_sampler_shards_steps_of_similar_length_across_replicas():
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 100, (203,), generator=gen).tolist()
    shards = [
        BucketBatchSampler(lengths, 10, seed=5, num_replicas=2, rank=r) for r in (0, 1)
    ]
    batches = [list(s) for s in shards]
    assert len(batches[0]) == len(batches[1]) == len(shards[0]) == 11
    seen = Counter(i for shard in batches for b in shard for i in b)
    assert set(seen) == set(range(203))  # everything, a few repeated to fill a step
    assert max(seen.values()) == 2 and sum(seen.values()) - 203 <= 10
    for b0, b1 in zip(*batches):  # the two replicas of a step have similar lengths
        assert (
            abs(_mean([lengths[i] for i in b0]) - _mean([lengths[i] for i in b1])) < 15
        )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    batch=st.integers(1, 17),
    replicas=st.integers(1, 4),
    drop_last=st.booleans(),
    pool=st.integers(1, 5),
)
def test_sampler_len_matches_iteration(n, batch, replicas, drop_last, pool):
    shards = [
        BucketBatchSampler(
            [i % 7 + 1 for i in range(n)],
            batch,
            pool_batches=pool,
            drop_last=drop_last,
            num_replicas=replicas,
            rank=r,
        )
        for r in range(replicas)
    ]
    counts = [len(list(s)) for s in shards]
    assert counts == [len(shards[0])] * replicas
    indices = [i for s in shards for b in s for i in b]
    if drop_last:
        assert len(indices) == len(set(indices))
        assert all(len(b) == batch for s in shards for b in s)
    else:
        assert set(indices) == set(range(n))


def test_sampler_drives_a_dataloader():
    dataset = torch.utils.data.TensorDataset(torch.arange(50))
    sampler = BucketBatchSampler([i % 5 + 1 for i in range(50)], 8, seed=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == 7
    got = [batch[0].tolist() for batch in loader]
    assert got == list(sampler)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([1, 2], 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler([1, 2], 0)


def _mean(values):
    return sum(values) / len(values)


# -- text, vocabulary, batches --------------------------------------------------------


def test_char_and_word_vocab_round_trip():
    text = "ab c\nca b\n"
    chars = Vocab.build(token_lines(text, "char"), "char")
    assert chars.tokens == ["\n", " ", "a", "b", "c"]
    ids, unknown = chars.encode(text)
    assert chars.decode(ids) == text and unknown == []
    assert chars.encode("abz")[1] == ["z"]
    words = Vocab.build(token_lines(text, "word"), "word")
    assert words.tokens == sorted(["ab", "c", "ca", "b", EOL])
    ids, _ = words.encode(text)
    assert words.decode(ids) == "ab c\nca b\n"
    assert words.encode("ab c")[0] == [words.index["ab"], words.index["c"]]
    assert Vocab.from_json(json.loads(json.dumps(words.to_json()))) == words


def test_cut_keeps_the_text_in_order_within_max_len():
    lines = [[1] * 5, [2] * 3, [3] * 12, [4] * 2, [5]]
    sequences = TextDataset.cut(lines, 8)
    assert all(2 <= len(s) <= 8 for s in sequences)
    assert [i for s in sequences for i in s] == [i for line in lines for i in line]
    assert sequences[0] == [1] * 5 + [2] * 3  # whole lines packed together


def test_collate_pads_inputs_and_ignores_padded_targets():
    data = TextDataset([[1, 2, 3, 4], [5, 6]])
    x, y, lengths = data.collate([0, 1])
    assert lengths.tolist() == [3, 1]
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[2, 3, 4], [6, IGNORE, IGNORE]]


def test_stdlib_corpus_is_deterministic_ascii_python():
    text = stdlib_corpus()
    assert text == stdlib_corpus()
    assert len(text) > 200_000
    assert "def " in text and all(c == "\n" or " " <= c <= "~" for c in text)


# -- the language model of a spec -----------------------------------------------------


def test_vocab_mismatch_fits_the_model_and_says_so():
    spec = rnnspec.parse(TINY)[0]
    fitted, note = fit_vocab(spec, 33)
    assert fitted.input.vocab == 33 and fitted.input.embed == 16
    assert "input tokens 33" in note and "input tokens 20" in note
    model = rnnspec.instantiate(fitted)
    assert model.head.out_features == 33 and model.head.weight is model.embedding.weight
    assert fit_vocab(spec, 20) == (spec, None)
    with pytest.raises(TrainError, match=r"put `input tokens 33 embed=16` in the spec"):
        fit_vocab(spec, 33, strict=True)


@pytest.mark.parametrize(
    "body, reason",
    [
        ("input features 4\n cell lstm\n hidden 8\n head linear 3", "reads features"),
        ("input tokens 9 embed=4\n cell gru\n hidden 8\n head classes 2", "head is"),
        ("input tokens 9 embed=4\n cell gru\n hidden 8", "head is none"),
        (
            "input tokens 9 embed=4\n cell gru\n hidden 8\n directions 2\n head logits",
            "bidirectional",
        ),
    ],
)
def test_non_language_models_are_refused(body, reason):
    spec = rnnspec.parse(f"model M {{\n {body}\n}}")[0]
    with pytest.raises(TrainError, match=reason):
        fit_vocab(spec, 9)


# -- training -------------------------------------------------------------------------


def test_training_lowers_the_loss_and_writes_the_run(files):
    result = train(config(files, plot=True))
    out = Path(files["out"])
    assert result.steps == 30 and len(result.losses) == 30
    assert _mean(result.losses[-5:]) < 0.6 * _mean(result.losses[:5])
    assert math.isfinite(result.val_ppl) and result.val_ppl < len(result.vocab)
    assert result.notes and "input tokens" in result.notes[0]
    for name in ("checkpoint.pt", "vocab.json", "spec.rnn", "metrics.json", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["losses"] == result.losses
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    spec = rnnspec.parse((out / "spec.rnn").read_text())[0]
    assert spec.input.vocab == len(result.vocab) == 16
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 30 and ckpt["spec"] == spec.model_dump()
    model, _, vocab = model_from_checkpoint(ckpt)
    assert vocab == result.vocab
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(files, tmp_path):
    straight = train(config(files, spec=files["drop"], steps=16, out=tmp_path / "a"))
    half = train(config(files, spec=files["drop"], steps=8, out=tmp_path / "b"))
    assert half.losses == straight.losses[:8]
    resumed = train(
        config(files, spec=files["drop"], steps=16, out=tmp_path / "b", resume=True)
    )
    assert resumed.start_step == 8 and len(resumed.losses) == 16
    assert abs(resumed.losses[-1] - straight.losses[-1]) < 1e-6
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], value, atol=1e-6), name


def test_resume_is_exact_only_because_the_rng_state_is_restored(
    files, tmp_path, monkeypatch
):
    # The check above can fail: without restoring RNG states, dropout differs.
    straight = train(config(files, spec=files["drop"], steps=12, out=tmp_path / "a"))
    train(config(files, spec=files["drop"], steps=6, out=tmp_path / "b"))
    monkeypatch.setattr("rnnspec.train.run.set_rng_state", lambda state, device: None)
    torch.manual_seed(12345)
    resumed = train(
        config(files, spec=files["drop"], steps=12, out=tmp_path / "b", resume=True)
    )
    assert abs(resumed.losses[-1] - straight.losses[-1]) > 1e-6


def test_a_run_is_never_overwritten_without_resume_or_force(files):
    train(config(files, steps=2))
    with pytest.raises(TrainError, match="--resume .* --force"):
        train(config(files, steps=2))
    with pytest.raises(TrainError, match="batch_size 4 \\(the run has 8\\)"):
        train(config(files, steps=4, batch_size=4, resume=True))
    result = train(config(files, steps=3, force=True))
    assert result.start_step == 0 and len(result.losses) == 3
    with pytest.raises(TrainError, match="nothing to resume"):
        train(config(files, steps=3, out=files["out"] + "-new", resume=True))


def test_resume_refuses_other_data(files, tmp_path):
    train(config(files, steps=2))
    other = tmp_path / "other.txt"
    other.write_text(corpus(301))
    with pytest.raises(TrainError, match="not the text"):
        train(config(files, data=str(other), steps=4, resume=True))


def test_word_tokens_train(files):
    result = train(config(files, tokens="word", steps=20, seq_len=12))
    assert result.vocab.mode == "word" and EOL in result.vocab.index
    assert len(result.vocab) == 6
    assert _mean(result.losses[-5:]) < _mean(result.losses[:5])


def test_generate_with_state_matches_rerunning_the_whole_sequence(files):
    result = train(config(files, steps=10))
    model, spec = result.model.eval(), result.spec
    prompt = result.vocab.encode("alpha beta")[0]
    ids = generate(model, spec, prompt, 15, temperature=0)
    # Greedy decoding without carried state: rerun the full sequence every step.
    seq = list(prompt)
    for _ in range(15):
        logits, _ = model(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    assert ids == seq[len(prompt) :]


# -- the command line -----------------------------------------------------------------


def test_cli_train_then_sample(files, capsys):
    code = main(
        ["train", files["tiny"], "--data", files["text"], "--out", files["out"]]
        + ["--steps", "12", "--batch", "8", "--seq-len", "24", "--lr", "0.01"]
        + ["--checkpoint-every", "5", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "the data has 16 distinct tokens" in captured.out
    assert "step 10: loss" in captured.out and "validation: loss" in captured.out
    assert "perplexity" in captured.out and "tokens/s" in captured.out
    assert load_checkpoint(files["out"])["step"] == 12

    code = main(["sample", files["out"], "--length", "40", "--prompt", "alpha"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("alpha") and len(captured.out) == 5 + 40 + 1
    assert set(captured.out) <= set("alphbetgmdsion \n")

    again = main(["sample", files["out"], "--length", "40", "--prompt", "alpha"])
    assert again == 0 and capsys.readouterr().out == captured.out  # seeded


def test_training_the_generated_class_equals_training_instantiate(files, tmp_path):
    spec16 = tmp_path / "tiny16.rnn"  # the text has 16 tokens: no vocab fitting
    spec16.write_text(TINY.replace("tokens 20", "tokens 16"))
    assert main(["build", str(spec16), "-o", str(tmp_path / "gen")]) == 0
    built = str(tmp_path / "gen" / "tiny16.py")
    runtime = train(config(files, spec=str(spec16), steps=12))
    generated = train(
        config(files, spec=str(spec16), steps=12, generated=built, force=True)
    )
    assert type(generated.model).__module__ == "_rnnspec_generated_tiny16"
    assert generated.losses == runtime.losses  # bit for bit: the same model
    assert generated.val_loss == runtime.val_loss


def test_generated_class_keeps_its_vocab_and_refuses_stale_builds(files, tmp_path):
    assert main(["build", files["tiny"], "-o", str(tmp_path / "gen")]) == 0
    built = str(tmp_path / "gen" / "tiny.py")
    result = train(config(files, steps=6, generated=built))  # 16 tokens fit in 20
    assert not result.notes and result.spec.input.vocab == 20
    assert result.model.head.out_features == 20
    ids = generate(result.model, result.spec, [0], 50, vocab_size=len(result.vocab))
    assert max(ids) < len(result.vocab) == 16

    Path(files["tiny"]).write_text(TINY.replace("tokens 20", "tokens 12"))
    with pytest.raises(TrainError, match="built from another version of the spec"):
        train(config(files, generated=built, force=True))
    assert main(["build", files["tiny"], "-o", str(tmp_path / "gen")]) == 0
    with pytest.raises(TrainError, match="the data has 16 distinct tokens but the"):
        train(config(files, generated=built, force=True))


def test_cli_errors_are_messages_not_tracebacks(files, capsys):
    args = ["train", files["tiny"], "--data", files["text"], "--out", files["out"]]
    assert main([*args, "--steps", "1", "--no-progress", "--strict-vocab"]) == 1
    err = capsys.readouterr().err
    assert "rnnspec train: error:" in err and "input tokens 16 embed=16" in err
    assert main([*args[:3], "missing.txt", "--no-progress"]) == 1
    assert "no such data file: missing.txt" in capsys.readouterr().err
    assert main(["sample", files["out"] + "-none"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_commands_import_torch_only_when_run():
    code = (
        "import sys, rnnspec.cli, rnnspec.cli.train, rnnspec.cli.sample, "
        "rnnspec.train.batching; rnnspec.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m == 'torch' or "
        "(m.startswith('rnnspec.train.') and m != 'rnnspec.train.batching')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
