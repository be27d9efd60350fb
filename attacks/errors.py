"""The library's errors: each message says what to change."""

from __future__ import annotations


class AttackError(ValueError):
    """A bad attack setting or input (norm, eps, steps, images): the message says what to change."""


class ModelOutputError(ValueError):
    """The model's output cannot be evaluated (NaN, wrong shape)."""
