"""Plain result objects of an evaluation, with a JSON form that is a superset of RobustBench's."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import torch


def eps_label(eps: float, norm: str) -> str:
    """8/255 for Linf values that are k/255, else the number."""
    if norm == "Linf":
        fraction = Fraction(eps).limit_denominator(255)
        if fraction.denominator in (255, 85, 51, 17, 15, 5, 3, 1) and abs(float(fraction) - eps) < 1e-9:
            scaled = fraction * 255
            if scaled.denominator == 1 and (scaled.numerator or not eps):
                return f"{scaled.numerator}/255"
    return f"{eps:g}"


def convergence_words(check: dict[str, Any] | None) -> str:
    """The convergence check in words (None: it did not run)."""
    if not check:
        return ""
    if check.get("attack") is None:
        return f"not checked: {check.get('reason', 'no iterative attack')}"
    if not check.get("points"):
        return f"nothing to check: {check['attack']} and the rest of the suite left no point robust"
    steps = check.get("probe", {}).get("steps")
    precision = f" in {check['precision']}" if check.get("precision") else ""   # set where the suite ran in another
    return (f"{check['attack']}{precision} with {steps} steps on {check['points']} of the {check['survivors']} "
            "robust points "
            f"broke {check['broken']} (robust accuracy overstated by about "
            f"{100 * check['estimated_overstatement']:.1f} points)")


@dataclass
class Flag:
    """A sanity check that fired: a short code, a sentence for people, and its numbers."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackRecord:
    label: str
    settings: dict[str, Any]
    points_attacked: int = 0
    points_broken: int = 0
    invalid_examples: int = 0
    nonfinite_outputs: int = 0      # examples on which the model gave NaN or inf (counted as broken)
    robust_accuracy_after: float = 0.0
    seconds: float = 0.0
    forwards: int = 0
    backwards: int = 0

    @property
    def success_rate(self) -> float:
        return self.points_broken / self.points_attacked if self.points_attacked else 0.0


@dataclass
class EvaluationResult:
    suite: str
    norm: str
    eps: float
    seed: int
    batch_size: int
    n_examples: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackRecord]
    flags: list[Flag]
    seconds: float
    forwards: int
    backwards: int
    device: str
    points: dict[str, list[Any]]
    versions: dict[str, str]
    convergence: dict[str, Any] | None = None  # the more-steps probe (attacks.checks.more_steps_gain), if run
    precision: str = "fp32"  # what the attacks computed in (attacks.precision); verdicts are always float32
    # the versions that computed its parts (a resumed one may have several)
    computed_with: list[str] = field(default_factory=list)
    caveat: str = ""   # the suite's: what its numbers must not be read as (e.g. a reduced AutoAttack)
    engine: str = "ours"   # or "reference": the steps computed by their reference packages (attacks.reference)
    computed_by: dict[str, str] = field(default_factory=dict)   # step label → the package that computed it
    x_adv: torch.Tensor | None = None  # adversarial examples (where kept), not serialised

    def __repr__(self) -> str:
        """One line; ``to_dict()`` has everything, the per-point verdicts included."""
        flags = f", flags: {', '.join(f.code for f in self.flags)}" if self.flags else ", no flags"
        return (f"EvaluationResult(suite '{self.suite}', {self.norm} eps {eps_label(self.eps, self.norm)}, "
                f"{self.n_examples} points: clean {100 * self.clean_accuracy:.2f}%, robust "
                f"{100 * self.robust_accuracy:.2f}%{flags})")

    def to_dict(self) -> dict[str, Any]:
        """RobustBench's fields (clean_acc, autoattack_acc, eps, …) plus ours."""
        body = {k: v for k, v in asdict(self).items() if k not in ("x_adv", "attacks", "flags")}
        body["attacks"] = [{**asdict(a), "success_rate": a.success_rate} for a in self.attacks]
        body["flags"] = [asdict(f) for f in self.flags]
        robust_bench = {
            "threat_model": self.norm,
            "eps": eps_label(self.eps, self.norm),
            "eps_value": self.eps,
            "clean_acc": round(100 * self.clean_accuracy, 2),
            "autoattack_acc" if self.suite == "autoattack" else "robust_acc": round(100 * self.robust_accuracy, 2),
            "number_forward_passes": 1,
        }
        return {**robust_bench, **{k: v for k, v in body.items() if k != "eps"}}
