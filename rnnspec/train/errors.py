"""The one error of the training path: a run that cannot start or go on."""

from __future__ import annotations


class TrainError(Exception):
    """A training run cannot start or continue; the message says why and what to do."""
