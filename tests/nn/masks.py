"""Record the regularizer masks a kernel stack draws, for reference loops in tests.

`KernelStackBase._kernel_step_masks` draws, per layer-direction, the masks that
change the recurrent step (in sequence order); wrapping it on one module instance
records them without changing what is drawn.
"""

from contextlib import contextmanager
from typing import Iterator, List, Optional

from torch import Tensor


@contextmanager
def recorded_step_masks(module) -> Iterator[List[List[Optional[Tensor]]]]:
    """Yields a list that receives, per layer-direction k in run order, the masks
    [rec (B, W), zone_h (T, B, W), zone_c (T, B, H)] the module drew (None: off)."""
    found: List[List[Optional[Tensor]]] = []
    draw = module._kernel_step_masks

    def record(k, batch, steps, like):
        masks = draw(k, batch, steps, like)
        found.append([None if m is None else m.clone() for m in masks])
        return masks

    module._kernel_step_masks = record
    try:
        yield found
    finally:
        del module._kernel_step_masks
