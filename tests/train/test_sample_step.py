"""`generate` on `model.step` samples what it sampled before the step API: the same
tokens for the same seed, against a copy of the loop it replaced (forward with T=1
and the carried state; attention models rerun their window at every token)."""

from __future__ import annotations

import pytest
import torch

import rnnspec
from rnnspec.train import generate
from rnnspec.train.model import forward_batch_first
from tests.specs import spec_with

V = 20


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pick_before(logits, temperature, generator):
    """rnnspec.train.sample._pick as it was (without top_k)."""
    if temperature <= 0:
        return int(logits.argmax())
    scaled = logits / temperature
    if not bool(torch.isfinite(scaled).all()):
        return int(logits.argmax())
    probs = torch.softmax(scaled, -1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def generate_before(model, spec, prompt, length, temperature, generator, context):
    """rnnspec.train.sample.generate as it was before the step API."""
    model.eval()
    ids = list(prompt)
    stateful = spec.attention is None
    first = ids if stateful else ids[-context:]
    with torch.no_grad():
        logits, state = forward_batch_first(model, spec, torch.tensor([first]), None)
        generated = []
        for i in range(length):
            token = pick_before(logits[0, -1, :V].float(), temperature, generator)
            generated.append(token)
            ids.append(token)
            if i == length - 1:
                break
            if stateful:
                x = torch.tensor([[token]])
                logits, state = forward_batch_first(model, spec, x, None, state)
            else:
                x = torch.tensor([ids[-context:]])
                logits, _ = forward_batch_first(model, spec, x, None)
    return generated


MODELS = {
    "lstm": ["cell lstm", "hidden 12", "layers 2", "head logits tie=true"],
    "gru-time-major": ["cell gru", "hidden 12", "batch_first false", "head logits"],
    "peephole-zoneout": ["cell lstm", "peephole true", "hidden 12"]
    + ["zoneout 0.2", "head logits dropout=0.3"],
    "attention": ["cell lstm", "hidden 12", "attention general mask=strict"]
    + ["head logits"],
    "additive": ["cell gru", "hidden 12", "attention additive", "head logits"],
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("temperature", [0.0, 1.5, 1e-45])
@pytest.mark.parametrize("prompt", [[3], [1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9]])
def test_generate_samples_what_it_did_before_the_step_api(name, temperature, prompt):
    (spec,) = rnnspec.parse(spec_with(f"input tokens {V} embed=12", *MODELS[name]))
    torch.manual_seed(0)
    model = rnnspec.instantiate(spec)
    with torch.no_grad():  # sharper scores than at init: draws that tell apart
        for p in model.parameters():
            p.mul_(4)
    context = 8  # attention: prompts within and beyond the window, and sliding
    now = generate(
        model,
        spec,
        prompt,
        30,
        temperature=temperature,
        generator=torch.Generator().manual_seed(5),
        context=context,
    )
    before = generate_before(
        model, spec, prompt, 30, temperature, torch.Generator().manual_seed(5), context
    )
    assert now == before
    if temperature > 1:
        assert len(set(now)) > 3  # draws, not one token over and over
