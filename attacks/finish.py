"""What an evaluation does after its suite's last step: the ranks' verdicts gathered, the flags that
compare the steps, the checks after the suite (kept in the state, so that a rerun of a finished
evaluation does not run them again) and the result."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from . import checks
from .adaptive import BPDA
from .pgd import PGD
from .provenance import device_name, versions
from .reference import computed_by
from .results import AttackRecord, EvaluationResult, Flag
from .run import EvaluationRun
from .shard import gather, owns
from .state import merge_batches, robust_after, step_record
from .suites import Suite

WHITE_BOX_KINDS = ("white-box", "adaptive")
SANITY_POINTS = 32
BLACK_BOX_TOLERANCE = 0.002  # AutoAttack's check_square_sr threshold (share of all points)


def gather_shards(run: EvaluationRun, records: list[AttackRecord]) -> list[AttackRecord]:
    """Merge the ranks' verdicts (each rank decided its own points) and batches, and recompute each
    step's counts and robust accuracy from them."""
    state, kept = run.state, run.kept
    mine = [i for i in range(len(state.robust)) if owns(i, run.shard)]
    part = {"index": mine, "robust": [state.robust[i] for i in mine], "broken_by": [state.broken_by[i] for i in mine],
            "batches": state.batches, "x_adv": kept[mine].cpu() if kept is not None and mine else None}
    parts = gather(part, run.shard)
    for p in parts:
        for k, i in enumerate(p["index"]):
            state.robust[i], state.broken_by[i] = p["robust"][k], p["broken_by"][k]
        if kept is not None and p["x_adv"] is not None:
            kept[p["index"]] = p["x_adv"].to(kept.device)
    state.batches = merge_batches(p["batches"] for p in parts)
    merged = []
    total = max(len(state.robust), 1)
    for k, record in enumerate(records):
        merged_record = step_record(record.label, record.settings, state.batches)
        merged_record.robust_accuracy_after = robust_after(state.broken_by, {r.label for r in records[:k + 1]}) / total
        merged.append(merged_record)
    return merged


def suite_flags(suite: Suite, records: list[AttackRecord], total: int, eps: float, norm: str) -> list[Flag]:
    """Flags that compare the steps of a suite with each other."""
    flags = []
    kinds = {step.label: step.kind for step in suite.steps}
    seen_white = False
    for record in records:
        kind = kinds[record.label]
        if kind in WHITE_BOX_KINDS:
            seen_white = True
        elif kind == "single-step" and seen_white and record.points_broken:
            flags.append(Flag("iterative_weaker_than_single_step",
                              f"{record.label} broke {record.points_broken} points that the iterative attacks before "
                              "it left robust: the iterative attacks are failing (gradient masking or too few steps)",
                              {"attack": record.label, "points": record.points_broken}))
        elif kind in ("black-box", "transfer") and seen_white and record.points_broken > BLACK_BOX_TOLERANCE * total:
            flags.append(Flag("black_box_beats_white_box",
                              f"{record.label} broke {record.points_broken} points "
                              f"({100 * record.points_broken / total:.1f}%) "
                              "that the white-box attacks left robust: the white-box evaluation may be unreliable",
                              {"attack": record.label, "points": record.points_broken}))
        flags.extend(_record_flags(record, eps, norm))
    return flags


def _record_flags(record: AttackRecord, eps: float, norm: str) -> list[Flag]:
    flags = []
    if record.nonfinite_outputs:
        flags.append(Flag("nonfinite_outputs",
                          f"the model returned NaN or inf on {record.nonfinite_outputs} of {record.label}'s examples; "
                          "they count as broken, since no class was predicted: check the model on inputs near "
                          "these (e.g. a division or a log of a value that can reach zero)",
                          {"attack": record.label, "points": record.nonfinite_outputs}))
    if record.invalid_examples:
        flags.append(Flag("adversarial_examples_outside_the_ball",
                          f"{record.label} returned {record.invalid_examples} examples outside the {norm} ball of "
                          f"radius {eps:g} or outside [0, 1]; they were not counted",
                          {"attack": record.label, "points": record.invalid_examples}))
    return flags


def large_eps_check(run: EvaluationRun, clean_correct: list[bool]) -> list[Flag]:
    """PGD where any image is reachable must break (nearly) every point (kept in the state)."""
    state, options = run.state, run.options
    if "large_eps" not in state.checks:
        survivors = [i for i in range(run.total) if clean_correct[i]][:SANITY_POINTS]
        flag = None
        if survivors:
            xs, ys, _ = run.rows(survivors)
            model = BPDA(run.counting, run.bpda) if run.bpda is not None else run.counting
            # an L2 ball of radius √pixels reaches every image as an L1 one does, and PGD has no L1 version
            norm = "L2" if options.norm == "L1" else options.norm
            flag = checks.large_eps_attack_fails(
                model, xs, ys, norm,
                lambda e: PGD(eps=e, norm=norm, steps=20, alpha=e / 8, loss="margin", seed=options.seed))
        state.keep_check("large_eps", {"flags": [] if flag is None else [asdict(flag)]})
    return [Flag(**f) for f in state.checks["large_eps"]["flags"]]


def convergence_check(run: EvaluationRun) -> tuple[list[Flag], dict[str, Any]]:
    """The checklist's "more iterations give no gain" (reference note §5.3, item 5), kept in the state:
    the suite's first iterative white-box step, with more steps, on up to ``SANITY_POINTS`` of the points
    the suite left robust (the first by index, so every rank and every rerun draws the same). It is
    snapshotted like a batch of the suite: an interrupted check resumes inside."""
    state = run.state
    if "convergence" not in state.checks:
        flag, found = _probe_convergence(run)
        if run.options.precision != "fp32":   # the check of what a bf16 suite may have missed
            found["precision"] = "fp32"
            if flag is not None:
                flag = replace(flag, message=f"{flag.message}; the suite ran in {run.options.precision} and this check "
                                             "in fp32: evaluate in fp32 (--precision fp32) for numbers to report")
        state.keep_check("convergence", {"flags": [] if flag is None else [asdict(flag)], "result": found})
    return [Flag(**f) for f in state.checks["convergence"]["flags"]], state.checks["convergence"]["result"]


def _probe_convergence(run: EvaluationRun) -> tuple[Flag | None, dict[str, Any]]:
    step = next((s for s in run.built.steps if s.kind in WHITE_BOX_KINDS and s.attack.iterative),
                None)
    survivors = [i for i in range(run.total) if run.state.robust[i]]
    if step is None:
        return None, {"attack": None, "reason": "the suite has no iterative white-box attack"}
    probe = step.attack.more_steps(checks.CONVERGENCE_FACTOR)
    if not survivors:
        return None, {"attack": step.label, "probe": probe.describe(), "points": 0, "survivors": 0, "broken": 0,
                      "estimated_overstatement": 0.0}
    rows = survivors[:SANITY_POINTS]
    # reported like an attack: at CPU speed the probe can take minutes
    label = f"convergence check ({step.label}, {checks.CONVERGENCE_FACTOR}x steps)"
    run.progress.attack_started(label, len(rows))
    xs, ys, index = run.rows(rows)
    with run.tracked(label, rows, [run.counting], 0):
        found = checks.more_steps_gain(run.view_of(step), xs, ys, index, probe, checks.ProbeContext(
            step.label, run.counting, len(survivors), run.total, run.options.eps, run.options.norm))
    run.progress.points_done(label, len(rows), sum(run.state.robust), run.total)
    return found


def versions_flag(computed_with: list[str]) -> Flag | None:
    if len(computed_with) < 2:
        return None
    return Flag("resumed_across_versions",
                f"parts of this evaluation were computed by different versions ({'; '.join(computed_with)}): "
                "start over (--fresh, or delete its state file) for numbers from one version",
                {"versions": computed_with})


def result(run: EvaluationRun, records: list[AttackRecord], flags: list[Flag], convergence: dict[str, Any] | None,
           started: float) -> EvaluationResult:
    state, total, options = run.state, run.total, run.options
    clean_correct = [b is None or b != "clean" for b in state.broken_by]
    computed_with = state.computed_by()
    return EvaluationResult(
        suite=run.built.name, norm=options.norm, eps=options.eps, seed=options.seed, batch_size=run.batch_size,
        n_examples=total, clean_accuracy=sum(clean_correct) / max(total, 1),
        robust_accuracy=sum(state.robust) / max(total, 1), attacks=records, flags=flags,
        # the suite's passes and time over every run of it (a resumed evaluation adds up like an uninterrupted
        # one): its attacks' counts plus one clean pass; the sanity checks are not counted
        seconds=sum(r.seconds for r in records) + max(time.perf_counter() - started - state.seconds_now, 0.0),
        forwards=sum(r.forwards for r in records) + total, backwards=sum(r.backwards for r in records),
        device=device_name(run.device), versions=versions(),
        points={"label": run.y.tolist(), "clean_correct": clean_correct, "robust": list(state.robust),
                "broken_by": list(state.broken_by)},
        convergence=convergence, x_adv=run.kept, precision=options.precision, computed_with=computed_with,
        caveat=run.built.caveat, engine=options.engine, computed_by=computed_by(run.built),
    )
