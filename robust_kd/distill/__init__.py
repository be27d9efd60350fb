"""Knowledge distillation: one class per method, a registry, and the trainer objective.

Importing this package registers every method; ``list_methods()`` names them.
"""

from . import cskd, dkd, energy, kd, r2kd, ttm  # noqa: F401  (registration side effects)
from .base import (
    CommonOptions, DistillSetup, Distiller, MethodEntry, StepContext, create_distiller, default_options,
    list_methods, method_entry, register_method,
)

__all__ = [
    "CommonOptions", "DistillSetup", "Distiller", "MethodEntry", "StepContext", "create_distiller",
    "default_options", "list_methods", "method_entry", "register_method",
]
