"""The report's sections, built from collected results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from attacks import convergence_words, cross_check_words, eps_label

from . import figures
from .collect import ReportData, RunRecord
from .document import Figure, Report, Section, Table, table
from .headline import headline_section

FLAG_WORDS = {
    "iterative_weaker_than_single_step":
        "an iterative attack did worse than a single-step one: gradients may be masked",
    "accuracy_not_monotone_in_eps": "robust accuracy rose with a larger eps: the attack is not converging",
    "large_eps_not_zero": "robust accuracy stays well above 0% at a very large eps: gradients may be masked",
    "black_box_beats_white_box":
        "a black-box attack broke points the white-box attacks missed: gradients may be masked",
    "zero_or_nan_gradients": "gradients were zero or NaN on some points: the model may mask gradients",
    "probabilities_not_logits": "the model seems to return probabilities, not logits",
    "non_deterministic": "the model gave different outputs for the same input",
    "adversarial_examples_outside_the_ball": "an adversarial example left the eps-ball or [0, 1]",
    "nonfinite_outputs": "the model returned NaN or inf on adversarial examples (counted as broken)",
    "engines_disagree": "our engine and the reference packages gave some points different verdicts",
    "not_converged": "the suite's first attack with 5x the steps broke points the suite left robust: not converged",
    "resumed_across_versions": "parts of the evaluation were computed by different versions of robust-kd or torch",
}


REDUCED_SUITES = {  # results written before suites carried their caveat (``suite_caveat``)
    "autoattack_quick": "AutoAttack's four attacks with smaller budgets (a CPU demo, e.g. the quickstart's): its "
                        "robust accuracy is an upper bound of AutoAttack's, not a number to publish as AutoAttack.",
}


def pct(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f}"


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    value = float(value)
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def pval(value: Any) -> str:
    """A p-value readable at any size: 4 decimals, or 2 significant digits below 0.001."""
    if value is None:
        return ""
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.2g}" if 0 < value < 1e-3 else f"{value:.4f}"


def eps_text(eps: Any, norm: Any) -> str:
    """The attack library's label (8/255 for Linf, else the number); "?" when the result lacks eps."""
    return "?" if eps is None else eps_label(float(eps), str(norm))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]


def robust_value(ev: dict[str, Any]) -> Any:
    """Robust accuracy in % of one evaluation: RobustBench names it autoattack_acc for the autoattack suite."""
    return ev.get("robust_acc", ev.get("autoattack_acc"))


# --------------------------------------------------------------------------------------------------- runs
def runs_section(data: ReportData) -> Section | None:
    runs = [r for r in data.runs if r.summary]
    if not runs:
        return None
    rows = []
    for r in runs:
        s = r.summary or {}
        rows.append([r.name, s.get("model", ""), s.get("data", ""), s.get("recipe", ""), s.get("method", "—"),
                     (s.get("teacher") or {}).get("arch", "—"), s.get("epochs", ""), pct(100 * s["final_test_accuracy"])
                     if "final_test_accuracy" in s else "", pct(100 * s["best_test_accuracy"])
                     if "best_test_accuracy" in s else "", s.get("seed", ""), s.get("device", "")])
    return Section("Runs", ["Test accuracy on each run's own test split, in %."], [table(
        ["run", "model", "data", "recipe", "method", "teacher", "epochs", "final test acc", "best test acc", "seed",
         "device"], rows)])


def teacher_section(data: ReportData) -> Section | None:
    rows = []
    for r in data.runs:
        s = r.summary or {}
        teacher = s.get("teacher")
        if not teacher:
            continue
        t_acc = teacher.get("test_accuracy")
        s_acc = s.get("final_test_accuracy")
        rows.append([teacher.get("arch", ""), pct(100 * t_acc) if t_acc is not None else "", s.get("model", ""),
                     s.get("method", ""), pct(100 * s_acc) if s_acc is not None else "",
                     pct(100 * (s_acc - t_acc)) if s_acc is not None and t_acc is not None else "", s.get("data", ""),
                     r.name])
    if not rows:
        return None
    return Section("Teacher vs students", ["Accuracies in % on the test split of the data set shown; "
                                           "gap = student − teacher."],
                   [table(["teacher", "teacher acc", "student", "method", "student acc", "gap", "data", "run"], rows)])


def curves_section(data: ReportData) -> Section | None:
    blocks = [Figure(f"curves_{k:02d}_{_slug(r.name)}.png", figures.training_curves(r.name, r.metrics),
                     f"{r.name}: loss terms and accuracy per epoch") for k, r in enumerate(data.runs) if r.metrics]
    return Section("Training curves", [], blocks) if blocks else None


# ----------------------------------------------------------------------------------------------- attacks
def _evaluations(run: RunRecord):
    for result in run.attacks:
        for ev in result.get("evaluations", []):
            yield result, ev


def _precision_note(ev: dict) -> str:
    precision = ev.get("precision", "fp32")
    engine = "; reference engine" if ev.get("engine", "ours") == "reference" else ""
    return engine + ("" if precision == "fp32" else f"; attacks in {precision}")


def _row_key(run: RunRecord, result: dict[str, Any], ev: dict[str, Any]) -> tuple:
    return (run.name, ev.get("variant", "model"), str(result.get("suite", "")), ev.get("norm", ""),
            str(ev.get("eps", "")), str(result.get("data", {}).get("name", "")), ev.get("n_examples", ""),
            ev.get("seed", ""))


def _row_names(data: ReportData) -> dict[tuple[int, int], str]:
    """Each evaluation's name in the tables: its run's, and where two results files of a run would
    give rows that look the same (another checkpoint, precision, or eps list), the file's too."""
    keys: dict[tuple, int] = {}
    for run in data.runs:
        for result, ev in _evaluations(run):
            keys[_row_key(run, result, ev)] = keys.get(_row_key(run, result, ev), 0) + 1
    return {(id(result), id(ev)): run.name + (f" ({Path(str(result.get('_file', ''))).stem})"
                                              if keys[_row_key(run, result, ev)] > 1 else "")
            for run in data.runs for result, ev in _evaluations(run)}


def robustness_section(data: ReportData) -> Section | None:
    rows, breakdown, flags, checked, crossed = [], [], [], [], []
    names = _row_names(data)
    for run in data.runs:
        for result, ev in _evaluations(run):
            variant = ev.get("variant", "model")
            d = result.get("data", {})
            name = names[(id(result), id(ev))]
            rows.append([name, variant, result.get("suite", ""), ev.get("norm", ""), ev.get("eps", ""),
                         d.get("name", ""), ev.get("n_examples", ""), ev.get("seed", ""), pct(ev.get("clean_acc")),
                         pct(robust_value(ev)), ev.get("device", "") + _precision_note(ev)])
            breakdown.append((name, variant, str(result.get("suite", "")), ev.get("eps", ""),
                              ev.get("attacks", []), pct(robust_value(ev))))
            if ev.get("convergence"):
                checked.append(f"{name} · {variant} · {result.get('suite', '')} · eps {ev.get('eps', '')}: "
                               f"{convergence_words(ev['convergence'])}")
            if ev.get("cross_check"):
                crossed.append(f"{name} · {variant} · {result.get('suite', '')} · eps {ev.get('eps', '')}: "
                               f"{cross_check_words(ev['cross_check'])}")
            for flag in ev.get("flags", []):
                code = flag.get("code", "")
                words = FLAG_WORDS.get(code, code.replace("_", " "))
                detail = f" ({flag['message']})" if flag.get("message") else ""
                flags.append(f"{name} · {variant} · {result.get('suite', '')} · eps {ev.get('eps', '')}: "
                             f"{words}{detail}")
    if not rows:
        return None
    paragraphs = ["Clean and robust accuracy in % over the points shown; robust accuracy is the per-point worst case "
                  "over the suite's attacks, each attack run only on the points still robust (as AutoAttack does)."]
    caveats = {str(result.get("suite", "")): result.get("suite_caveat") or REDUCED_SUITES.get(str(result.get("suite")))
               for run in data.runs for result in run.attacks}
    for suite, caveat in sorted(caveats.items()):
        if caveat:
            paragraphs.append(f"⚠ {suite}: {caveat}")
    for run in data.runs:
        for result in run.attacks:
            pending = result.get("variants_pending")
            if isinstance(pending, list) and pending:    # written by a run that was stopped before its last variant
                paragraphs.append(f"⚠ {run.name} · {result.get('suite', '')}: unfinished, the variants "
                                  f"{', '.join(map(str, pending))} are not evaluated yet (rerun its robust-kd attack "
                                  "command to finish); its top-level accuracies cover the others only")
    if flags:
        paragraphs.append("Sanity flags raised (read these before trusting a number):")
        paragraphs += [f"⚠ {f}" for f in flags]
    else:
        paragraphs.append("No sanity flag was raised by any evaluation.")
    if checked:
        paragraphs.append("Convergence checks (the suite's first iterative attack again with 5x the steps, on up to "
                          "32 of the points the suite left robust):")
        paragraphs += checked
    if crossed:
        paragraphs.append("Cross-checks against the reference packages (pyautoattack, torchattacks) on the same points "
                          "(robust accuracy and time of each engine; the points whose verdicts differ):")
        paragraphs += crossed
    return Section("Robustness", paragraphs, [
        table(["run", "variant", "suite", "norm", "eps", "data", "points", "seed", "clean acc", "robust acc", "device"],
              rows, "Clean and robust accuracy"),
        *_breakdown_tables(breakdown)])


def _breakdown_tables(evaluations: list[tuple]) -> list[Table]:
    """One table per suite: a row per evaluation, a column per attack with the points it broke (each
    attack runs on the points still robust, in suite order), so a glance shows which attack did the work."""
    by_suite: dict[str, list[tuple]] = {}
    for evaluation in evaluations:
        by_suite.setdefault(evaluation[2], []).append(evaluation)
    tables = []
    for suite, rows in by_suite.items():
        labels: list[str] = []
        for *_, attacks, _robust in rows:
            labels += [a.get("label", "") for a in attacks if a.get("label", "") not in labels]
        body = []
        for run_name, variant, _, eps, attacks, robust in rows:
            broken = {a.get("label", ""): a.get("points_broken", 0) for a in attacks}
            attacked = attacks[0].get("points_attacked", 0) if attacks else ""
            body.append([run_name, variant, suite, eps, attacked, *(broken.get(label, "—") for label in labels),
                         robust])
        tables.append(table(["run", "variant", "suite", "eps", "attacked", *labels, "robust acc"], body,
                            f"{suite}: points broken by each attack, in suite order (each attack runs on the points "
                            "still robust; attacked: the points correct on clean input; —: not in that evaluation)"))
    return tables


def eps_section(data: ReportData) -> Section | None:
    by_norm: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for run in data.runs:
        for result, ev in _evaluations(run):
            if robust_value(ev) is None or ev.get("eps_value") is None:
                continue
            label = f"{run.name} · {ev.get('variant', 'model')} · {result.get('suite', '')}"
            by_norm.setdefault(ev.get("norm", "Linf"), {}).setdefault(label, []).append(
                (float(ev["eps_value"]), float(robust_value(ev))))
    blocks = []
    for norm, curves in by_norm.items():
        for label in curves:
            curves[label] = sorted(set(curves[label]))
        if any(len(p) >= 2 for p in curves.values()):
            blocks.append(Figure(f"eps_curves_{norm}.png", figures.eps_curves(curves, norm),
                                 f"Robust accuracy vs eps ({norm}), every model and variant on one plot"))
    return Section("Accuracy vs eps", [], blocks) if blocks else None


def examples_section(data: ReportData) -> Section | None:
    """The figures ``robust-kd attack --save-examples`` wrote beside its results."""
    blocks = []
    for k, run in enumerate(data.runs):
        for result, ev in _evaluations(run):
            examples = ev.get("examples")
            if not isinstance(examples, dict) or not isinstance(examples.get("figure"), str) or \
                    not isinstance(examples.get("points"), int):
                continue
            figure = Path(result.get("_file", "")).parent / Path(examples["figure"]).name
            if not figure.is_file():
                continue
            shown = min(8, examples["points"])
            # numbered, not named after the file: long stems are cut to the same slug
            blocks.append(Figure(f"examples_{k:02d}_{len(blocks):03d}.png", figure.read_bytes(),
                                 f"{run.name} · {ev.get('variant', 'model')} · {result.get('suite', '')} · eps "
                                 f"{ev.get('eps', '')}: the first {shown} of {examples.get('points')} broken points "
                                 "(clean, adversarial, perturbation stretched to the full grey range), with the true "
                                 "class → the prediction on the example and the attack that broke it"))
    return Section("Adversarial examples", [], blocks) if blocks else None


def _success(cell: dict[str, Any]) -> float:
    """Success rate in %, NaN where the target got no point right (nothing to break)."""
    return float("nan") if cell.get("points", 1) == 0 else 100 * float(cell["success_rate"])


def _jpeg_source_note(gradients: dict[str, str]) -> str:
    """How JPEG-DL sources were differentiated (matrices written before this was recorded say nothing)."""
    identity = sorted(Path(s).name for s, g in gradients.items() if g == "bpda-identity")
    return f"; crafted on {', '.join(identity)} with its JPEG layer as the identity (BPDA)" if identity else ""


def transfer_section(data: ReportData) -> Section | None:
    blocks = []
    for k, t in enumerate(data.transfers):
        sources, targets = t["sources"], t["targets"]
        short = {m: Path(m).name for m in set(sources) | set(targets)}
        matrix = np.array([[_success(t["cells"][s][g]) for g in targets] for s in sources])
        caption = (f"Transfer success rate (%) of MI-FGSM-{t.get('steps', '')} examples, {t.get('norm')} eps "
                   f"{eps_text(t.get('eps'), t.get('norm'))}, "
                   f"{t.get('n_examples')} points of {t.get('data')}, {t.get('device')}"
                   + ("" if t.get("precision", "fp32") == "fp32" else f", made in {t['precision']}")
                   + _jpeg_source_note(t.get("source_gradients") or {}))
        blocks.append(Figure(f"transfer_{k}.png", figures.heatmap(matrix, [short[s] for s in sources],
                                                                  [short[g] for g in targets], caption, "success (%)",
                                                                  vmax=100), caption))
        blocks.append(table(["source \\ target"] + [short[g] for g in targets],
                            [[short[s]] + [num(v, 2) for v in row] for s, row in zip(sources, matrix)],
                            "The same matrix in numbers (success rate, %; n/a: the target got no point right)"))
    return Section("Transfer", ["Success rate: the share of points the target classified correctly that the "
                                "source's adversarial examples broke."], blocks) if blocks else None


def jpeg_section(data: ReportData) -> Section | None:
    blocks = [Figure(f"jpeg_tables_{k:02d}_{_slug(r.name)}.png", figures.jpeg_tables(r.name, r.jpeg_tables),
                     f"{r.name}: learned quantization tables next to the standard q=50 tables")
              for k, r in enumerate(data.runs) if r.jpeg_tables]
    return Section("JPEG-DL quantization tables", [], blocks) if blocks else None


# --------------------------------------------------------------------------------------------------- RSA
def _embed(folder: str, stored: str | None, caption: str, name: str) -> Figure | None:
    """A figure an analysis wrote into ``<folder>/figures/`` (found by file name: the stored path may be
    relative to wherever that analysis ran); None when it is not there."""
    if not stored:
        return None
    path = Path(folder) / "figures" / Path(stored).name
    return Figure(name, path.read_bytes(), caption) if path.is_file() else None


def _undefined(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """An 'undefined' column saying why a similarity (and so its CI and p) is n/a, when a row needs it."""
    if not any(r.get("undefined") for r in rows):
        return [], [[] for _ in rows]
    return ["undefined"], [[str(r.get("undefined") or "")] for r in rows]


def _brain_table(rows: list[dict[str, Any]], caption: str):
    flag, flags = _undefined(rows)
    return table(["layer", "ROI", "similarity", "CI low", "CI high", "p", "p FDR", "noise lower", "noise upper",
                  *flag],
                 [[r.get("model", ""), r.get("roi", ""), num(r.get("similarity")), num(r.get("ci_low")),
                   num(r.get("ci_high")), pval(r.get("p")), pval(r.get("p_fdr")), num(r.get("noise_lower")),
                   num(r.get("noise_upper")), *f] for r, f in zip(rows, flags)], caption)


def _rsa_blocks(run_name: str, k: int, res: dict[str, Any], paragraphs: list[str]) -> list[Any]:
    blocks: list[Any] = []
    prefix = f"rsa_{k:02d}_{_slug(run_name)}"
    folder, figs = res["_folder"], res.get("figures") or {}
    if res.get("descriptors", {}).get("simulated") or "SIMULATED" in str(res.get("brain", "")):
        paragraphs.append(f"{run_name}: the brain data are SIMULATED, not measured.")
    if res.get("kind") == "rsa":
        s = res.get("settings", {})
        caption = (f"{run_name}: {res.get('rdm_method')} RDMs of {res.get('n_stimuli')} stimuli ({res.get('stimuli')}) "
                   f"vs {res.get('brain')}; {s.get('method')}, {s.get('n_bootstrap')} bootstrap samples over "
                   f"{s.get('bootstrap_over')}, {s.get('n_permutations')} permutations, seed {s.get('seed')}, "
                   f"{res.get('device')}")
        blocks.append(_brain_table(res.get("rows", []), caption))
        for key, cap in (("rsa_bars", "layer × ROI similarity with 95% CIs and the noise ceiling"),
                         ("network_rdms", "network RDMs per layer"), ("brain_rdms", "brain RDMs")):
            fig = _embed(folder, figs.get(key), f"{run_name}: {cap}", f"{prefix}_{key}.png")
            if fig:
                blocks.append(fig)
    elif res.get("kind") == "rsa-adversarial":
        a, effect = res.get("attack", {}), res.get("attack_effect", {})
        white = f"PGD-{a.get('white_steps')}" + (", BPDA-identity on the points it missed"
                                                  if "bpda-identity" in (a.get("white_views") or []) else "")
        caption = (f"{run_name}: clean vs white-box ({white}) vs black-box ({a.get('black')}) "
                   f"stimuli, {a.get('norm')} eps {eps_text(a.get('eps'), a.get('norm'))}, {res.get('n_stimuli')} "
                   f"stimuli ({res.get('stimuli')}), {res.get('comparator')}, {res.get('n_bootstrap')} bootstrap "
                   f"samples, seed {res.get('seed')}, {res.get('device')}")
        changed = {kind: (effect.get(kind) or {}).get("prediction_changed") for kind in ("white", "black")}
        if all(v is not None for v in changed.values()):
            paragraphs.append(f"{run_name}: the attacks changed the model's prediction on "
                              f"{100 * changed['white']:.1f}% (white-box) and {100 * changed['black']:.1f}% "
                              f"(black-box) of the {res.get('n_stimuli')} stimuli; labels: {res.get('labels', '')}.")
        pairs = res.get("white_vs_black", [])
        flag, flags = _undefined(pairs)
        blocks.append(table(["layer", "sim. to clean, white", "sim. to clean, black", "difference", "CI low",
                             "CI high", "p boot FDR", "displ. white", "displ. black", "p Wilcoxon FDR", *flag],
                            [[r.get("layer", r.get("model", "")), num(r.get("similarity_a")),
                              num(r.get("similarity_b")), num(r.get("difference")), num(r.get("ci_low")),
                              num(r.get("ci_high")), pval(r.get("p_bootstrap_fdr")), num(r.get("displacement_a")),
                              num(r.get("displacement_b")), pval(r.get("p_wilcoxon_fdr")), *f]
                             for r, f in zip(pairs, flags)], caption))
        if res.get("brain_rows"):
            blocks.append(_brain_table(res["brain_rows"],
                                       f"{run_name}: every layer × stimulus type vs {res.get('brain')}"))
        for key in ("rsa_bars", "network_rdms"):
            fig = _embed(folder, figs.get(key), f"{run_name}: adversarial RSA, {key.replace('_', ' ')}",
                         f"{prefix}_{key}.png")
            if fig:
                blocks.append(fig)
    return blocks


def rsa_section(data: ReportData) -> Section | None:
    blocks: list[Any] = []
    paragraphs: list[str] = []
    for i, run in enumerate(data.runs):
        for k, res in enumerate(run.rsa):
            blocks += _rsa_blocks(run.name, 100 * i + k, res, paragraphs)
    for k, res in enumerate(data.rsa_models):
        figs = res.get("figures") or {}
        for j, (layer, r) in enumerate(res.get("results", {}).items()):
            names = r["models"]
            rows = [[a, b, num(r["similarity"][i][j2]), num(r["ci_low"][i][j2]), num(r["ci_high"][i][j2])]
                    for i, a in enumerate(names) for j2, b in enumerate(names) if j2 > i]
            blocks.append(table(["model A", "model B", "similarity", "CI low", "CI high"], rows,
                                f"Model vs model, {layer}: {res.get('comparator')} between RDMs over "
                                f"{res.get('n_stimuli')} stimuli ({res.get('stimuli')}), {res.get('n_bootstrap')} "
                                f"bootstrap samples, seed {res.get('seed')}, {res.get('device')}"))
            fig = _embed(res["_folder"], figs.get(layer), f"model × model similarity, {layer}",
                         f"rsa_models_{k:02d}_{j:02d}.png")
            if fig:
                blocks.append(fig)
    return Section("Representational similarity (RSA)", paragraphs, blocks) if blocks else None


SECTIONS = [headline_section, runs_section, teacher_section, curves_section, robustness_section, eps_section,
            examples_section,
            transfer_section, jpeg_section, rsa_section]


def build(data: ReportData, title: str = "robust-kd report") -> Report:
    sections = [s for s in (make(data) for make in SECTIONS) if s is not None]
    if data.skipped:
        sections.append(Section("Files left out", [f"{line}" for line in data.skipped]))
    subtitle = (f"{len(data.runs)} run(s), {len(data.transfers)} transfer matrix(es); from "
                f"{', '.join(data.sources)}; written {time.strftime('%Y-%m-%d %H:%M')}")
    return Report(title, subtitle, sections)
