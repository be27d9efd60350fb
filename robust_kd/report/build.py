"""The report's sections, built from collected results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from .collect import ReportData, RunRecord
from .document import Figure, Report, Section, table

FLAG_WORDS = {
    "iterative_weaker_than_single_step": "an iterative attack did worse than a single-step one: gradients may be masked",
    "not_monotone_in_eps": "robust accuracy rose with a larger eps: the attack is not converging",
    "large_eps_not_zero": "robust accuracy stays well above 0% at a very large eps: gradients may be masked",
    "black_box_beats_white_box": "a black-box attack broke points the white-box attacks missed: gradients may be masked",
    "zero_or_nan_gradients": "gradients were zero or NaN on some points: the model may mask gradients",
    "probabilities_not_logits": "the model seems to return probabilities, not logits",
    "non_deterministic": "the model gave different outputs for the same input",
    "outside_threat_model": "an adversarial example left the eps-ball or [0, 1]",
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
    eps = float(eps or 0.0)
    return f"{eps * 255:.3g}/255" if norm == "Linf" else f"{eps:g}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]


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
    blocks = [Figure(f"curves_{_slug(r.name)}.png", figures.training_curves(r.name, r.metrics),
                     f"{r.name}: loss terms and accuracy per epoch") for r in data.runs if r.metrics]
    return Section("Training curves", [], blocks) if blocks else None


# ----------------------------------------------------------------------------------------------- attacks
def _evaluations(run: RunRecord):
    for result in run.attacks:
        for ev in result.get("evaluations", []):
            yield result, ev


def robustness_section(data: ReportData) -> Section | None:
    rows, breakdown, flags = [], [], []
    for run in data.runs:
        for result, ev in _evaluations(run):
            variant = ev.get("variant", "model")
            d = result.get("data", {})
            rows.append([run.name, variant, result.get("suite", ""), ev.get("norm", ""), ev.get("eps", ""),
                         d.get("name", ""), ev.get("n_examples", ""), ev.get("seed", ""), pct(ev.get("clean_acc")),
                         pct(ev.get("robust_acc")), ev.get("device", "")])
            for a in ev.get("attacks", []):
                breakdown.append([run.name, variant, result.get("suite", ""), ev.get("eps", ""), a.get("label", ""), a.get("points_attacked", 0),
                                  a.get("points_broken", 0), pct(100 * a.get("robust_accuracy_after", 0.0))])
            for flag in ev.get("flags", []):
                words = FLAG_WORDS.get(flag.get("code", ""), "")
                flags.append(f"{run.name} · {variant} · {ev.get('eps', '')}: {flag.get('message') or words}")
    if not rows:
        return None
    paragraphs = ["Clean and robust accuracy in % over the points shown; robust accuracy is the per-point worst case "
                  "over the suite's attacks, each attack run only on the points still robust (as AutoAttack does)."]
    if flags:
        paragraphs.append("Sanity flags raised (read these before trusting a number):")
        paragraphs += [f"⚠ {f}" for f in flags]
    else:
        paragraphs.append("No sanity flag was raised by any evaluation.")
    return Section("Robustness", paragraphs, [
        table(["run", "variant", "suite", "norm", "eps", "data", "points", "seed", "clean acc", "robust acc", "device"],
              rows, "Clean and robust accuracy"),
        table(["run", "variant", "suite", "eps", "attack", "points attacked", "points broken", "robust acc after"], breakdown,
              "Which attack broke the points (cumulative, in suite order)")])


def eps_section(data: ReportData) -> Section | None:
    by_norm: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for run in data.runs:
        for result, ev in _evaluations(run):
            label = f"{run.name} · {ev.get('variant', 'model')} · {result.get('suite', '')}"
            by_norm.setdefault(ev.get("norm", "Linf"), {}).setdefault(label, []).append(
                (float(ev.get("eps_value", 0.0)), float(ev.get("robust_acc", 0.0))))
    blocks = []
    for norm, curves in by_norm.items():
        for label in curves:
            curves[label] = sorted(set(curves[label]))
        if any(len(p) >= 2 for p in curves.values()):
            blocks.append(Figure(f"eps_curves_{norm}.png", figures.eps_curves(curves, norm),
                                 f"Robust accuracy vs eps ({norm}), every model and variant on one plot"))
    return Section("Accuracy vs eps", [], blocks) if blocks else None


def transfer_section(data: ReportData) -> Section | None:
    blocks = []
    for k, t in enumerate(data.transfers):
        sources, targets = t["sources"], t["targets"]
        short = {m: Path(m).name for m in set(sources) | set(targets)}
        matrix = np.array([[100 * t["cells"][s][g]["success_rate"] for g in targets] for s in sources])
        caption = (f"Transfer success rate (%) of MI-FGSM-{t.get('steps', '')} examples, {t.get('norm')} eps "
                   f"{eps_text(t.get('eps'), t.get('norm'))}, "
                   f"{t.get('n_examples')} points of {t.get('data')}, {t.get('device')}")
        blocks.append(Figure(f"transfer_{k}.png", figures.heatmap(matrix, [short[s] for s in sources],
                                                                  [short[g] for g in targets], caption, "success (%)",
                                                                  vmax=100), caption))
        blocks.append(table(["source \\ target"] + [short[g] for g in targets],
                            [[short[s]] + [pct(100 * t["cells"][s][g]["success_rate"]) for g in targets]
                             for s in sources], "The same matrix in numbers (success rate, %)"))
    return Section("Transfer", ["Success rate: the share of points the target classified correctly that the "
                                "source's adversarial examples broke."], blocks) if blocks else None


def jpeg_section(data: ReportData) -> Section | None:
    blocks = [Figure(f"jpeg_tables_{_slug(r.name)}.png", figures.jpeg_tables(r.name, r.jpeg_tables),
                     f"{r.name}: learned quantization tables next to the standard q=50 tables")
              for r in data.runs if r.jpeg_tables]
    return Section("JPEG-DL quantization tables", [], blocks) if blocks else None


# --------------------------------------------------------------------------------------------------- RSA
def _embed(folder: str, name: str, caption: str, prefix: str) -> Figure | None:
    path = Path(folder) / "figures" / name
    return Figure(f"{prefix}_{name}", path.read_bytes(), caption) if path.is_file() else None


def rsa_section(data: ReportData) -> Section | None:
    blocks: list[Any] = []
    paragraphs = []
    for run in data.runs:
        for k, res in enumerate(run.rsa):
            prefix = f"rsa_{_slug(run.name)}_{k}"
            if res.get("kind") == "rsa":
                s = res.get("settings", {})
                caption = (f"{run.name}: {res.get('rdm_method')} RDMs of {res.get('n_stimuli')} stimuli ({res.get('stimuli')}) "
                           f"vs {res.get('brain')}; {s.get('method')}, {s.get('n_bootstrap')} bootstrap samples over "
                           f"{s.get('bootstrap_over')}, {s.get('n_permutations')} permutations, seed {s.get('seed')}, "
                           f"{res.get('device')}")
                blocks.append(table(["layer", "ROI", "similarity", "CI low", "CI high", "p", "p FDR", "noise lower",
                                     "noise upper"],
                                    [[r["model"], r["roi"], num(r["similarity"]), num(r["ci_low"]), num(r["ci_high"]),
                                      pval(r["p"]), pval(r["p_fdr"]), num(r["noise_lower"]), num(r["noise_upper"])]
                                     for r in res.get("rows", [])], caption))
                for name, cap in (("rsa_bars.png", "layer × ROI similarity with 95% CIs and the noise ceiling"),
                                  ("network_rdms.png", "network RDMs per layer"), ("brain_rdms.png", "brain RDMs")):
                    fig = _embed(res["_folder"], name, f"{run.name}: {cap}", prefix)
                    if fig:
                        blocks.append(fig)
                if res.get("descriptors", {}).get("simulated"):
                    paragraphs.append(f"{run.name}: the brain data are SIMULATED, not measured.")
            elif res.get("kind") == "rsa-adversarial":
                a = res.get("attack", {})
                caption = (f"{run.name}: clean vs white-box (PGD-{a.get('white_steps')}) vs black-box ({a.get('black')}) "
                           f"stimuli, {a.get('norm')} eps {eps_text(a.get('eps'), a.get('norm'))}, {res.get('n_stimuli')} "
                           f"stimuli, {res.get('comparator')}, {res.get('n_bootstrap')} bootstrap samples, seed "
                           f"{res.get('seed')}, {res.get('device')}")
                blocks.append(table(["layer", "sim white", "sim black", "difference", "CI low", "CI high", "p boot FDR",
                                     "displ. white", "displ. black", "p Wilcoxon FDR"],
                                    [[r["layer"], num(r["similarity_a"]), num(r["similarity_b"]), num(r["difference"]),
                                      num(r.get("ci_low")), num(r.get("ci_high")), pval(r.get("p_bootstrap_fdr")),
                                      num(r["displacement_a"]), num(r["displacement_b"]), pval(r["p_wilcoxon_fdr"])]
                                     for r in res.get("white_vs_black", [])], caption))
                for name in ("rsa_bars.png", "network_rdms.png"):
                    fig = _embed(res["_folder"], name, f"{run.name}: adversarial RSA, {name[:-4].replace('_', ' ')}",
                                 prefix)
                    if fig:
                        blocks.append(fig)
    for k, res in enumerate(data.rsa_models):
        for layer, r in res.get("results", {}).items():
            names = r["models"]
            rows = [[a, b, num(r["similarity"][i][j]), num(r["ci_low"][i][j]), num(r["ci_high"][i][j])]
                    for i, a in enumerate(names) for j, b in enumerate(names) if j > i]
            blocks.append(table(["model A", "model B", "similarity", "CI low", "CI high"], rows,
                                f"Model vs model, {layer}: {res.get('comparator')} between RDMs over "
                                f"{res.get('n_stimuli')} stimuli ({res.get('stimuli')})"))
            fig = _embed(res["_folder"], f"similarity_{_slug(layer)}.png", f"model × model similarity, {layer}",
                         f"rsa_models_{k}")
            if fig:
                blocks.append(fig)
    return Section("Representational similarity (RSA)", paragraphs, blocks) if blocks else None


SECTIONS = [runs_section, teacher_section, curves_section, robustness_section, eps_section, transfer_section,
            jpeg_section, rsa_section]


def build(data: ReportData, title: str = "robust-kd report") -> Report:
    sections = [s for s in (make(data) for make in SECTIONS) if s is not None]
    subtitle = (f"{len(data.runs)} run(s), {len(data.transfers)} transfer matrix(es); from "
                f"{', '.join(data.sources)}; written {time.strftime('%Y-%m-%d %H:%M')}")
    return Report(title, subtitle, sections)
