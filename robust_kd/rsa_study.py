"""``robust-kd rsa`` and ``robust-kd rsa-adversarial`` behind the command line.

The libraries do the work (:mod:`neuro` for activations, RDMs and statistics, :mod:`attacks` for the
adversarial stimuli; the stimuli are read by :mod:`robust_kd.stimuli`); this module decides what the brain
data are, matches their condition names, and writes one folder per analysis under the model's run:

    <run>/rsa/<name>/
        rsa.json, rsa.csv                 layer × ROI table (similarity, CI, p, FDR, noise ceiling)
        network_rdms/<layer>.npz          one RDM per layer (and per stimulus variant)
        brain_rdms/<roi>.npz              subject RDMs per ROI
        figures/*.png                     RDM heatmaps, bars with CIs and noise ceiling
        stimuli/<variant>.npy             adversarial stimuli (rsa-adversarial; reused on a rerun with the
                                          same weights, images and attack settings)
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

import neuro
from neuro import NeuroError, RDMs

from .errors import UserError
from .fileio import write_json, write_text
from .jpeg.variants import is_jpegdl, soft_model_bpda, transfer_source
from .md_escape import inline
from .stimuli import Stimuli, fit_to_model, load_stimuli, test_split_stimuli  # noqa: F401  (re-exported)

ProgressFn = Callable[[str, int, int], None] | None


# ------------------------------------------------------------------------------------------ brain data
@dataclass
class Brain:
    rois: dict[str, RDMs]
    source: str
    descriptors: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)      # one-line warnings for the user


def infinite_notes(rois: dict[str, RDMs]) -> list[str]:
    """A line per ROI whose RDMs hold inf: neuro leaves every non-finite dissimilarity out as missing,
    which is sound for the statistics (each comparison uses the pairs finite in both RDMs) but hides
    what was likely a division by zero upstream, so the user hears of it."""
    notes = []
    for roi, rdms in rois.items():
        count = int(np.isinf(rdms.vectors).sum())
        if count:
            notes.append(f"brain RDM '{roi}': {count} of {rdms.vectors.size} dissimilarities are inf; they are "
                         "left out as missing, like NaN (check how the RDM was computed)")
    return notes


def rsa92_brain() -> Brain:
    """hIT RDMs of the 4 subjects (the 2 sessions of each averaged), for the noise ceiling."""
    data = neuro.datasets.load_rsa92()
    subj = data.hit_subjects
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(subj.names):
        groups.setdefault(str(name).split("_")[0], []).append(i)
    vectors = np.stack([subj.vectors[idx].mean(0) for idx in groups.values()])
    rdms = RDMs(vectors, subj.conditions, subj.measure, list(groups), dict(subj.descriptors))
    return Brain({"hIT": rdms}, "rsa92: human IT fMRI RDMs of Kriegeskorte et al. 2008, 4 subjects "
                                "(2 sessions averaged)")


def load_brain(fmri: Sequence[str], rois: Sequence[str], conditions: str | None, runs: str | None,
               brain_rdms: Sequence[str], rdm_method: str, noise: str | None) -> Brain:
    """Brain RDMs per ROI from beta images (one ``--fmri`` per subject) and masks, or from RDM files."""
    out: dict[str, list[RDMs]] = {}
    sources = []
    try:
        for spec in brain_rdms:
            if spec == "rsa92":
                b = rsa92_brain()
                for roi, r in b.rois.items():
                    out.setdefault(roi, []).append(r)
                sources.append(b.source)
                continue
            roi, _, path = spec.rpartition("=")
            roi = roi or Path(path).stem
            out.setdefault(roi, []).append(neuro.io.load_rdm(path))
            sources.append(f"RDM file {path}")
        if fmri and not rois:
            raise UserError("--fmri needs --roi (a mask image in the same space as the betas)")
        for subject, betas in enumerate(fmri):
            images: Any = betas
            if Path(betas).is_dir():
                images = sorted(str(p) for p in Path(betas).iterdir() if p.name.endswith((".nii", ".nii.gz")))
                if not images:
                    raise UserError(f"no .nii/.nii.gz beta images in folder '{betas}'")
            for mask in rois:
                patterns = neuro.io.load_betas(images, mask, conditions=conditions, runs=runs)
                for roi, p in patterns.items():
                    kwargs = {}
                    if noise and p.runs is not None:
                        kwargs["noise"] = neuro.noise_from_patterns(p, noise)
                    rdm = neuro.compute_rdm(p, rdm_method, name=f"subject{subject + 1}", **kwargs)
                    out.setdefault(roi, []).append(rdm)
            sources.append(f"betas {betas}")
    except NeuroError as err:
        raise UserError(str(err)) from None
    if not out:
        raise UserError("no brain data: give --fmri with --roi, or --brain-rdm (a file, ROI=file, or 'rsa92')")
    rois_out = {}
    for roi, items in out.items():
        base = items[0]
        fixed = [r if list(r.conditions) == list(base.conditions) else r.subset_conditions(base.conditions)
                 for r in items]
        rois_out[roi] = RDMs.concat(fixed)
    return Brain(rois_out, "; ".join(sources), notes=infinite_notes(rois_out))


def match_conditions(stimuli: Stimuli, brain: Brain) -> Stimuli:
    """Order the stimuli as the brain data's conditions; every condition needs a stimulus of that name."""
    first = next(iter(brain.rois.values()))
    wanted = [str(c) for c in first.conditions]
    have = {n: i for i, n in enumerate(stimuli.names)}
    missing = [c for c in wanted if c not in have]
    if missing:
        raise UserError(f"{len(missing)} brain conditions have no stimulus of that name (e.g. {missing[:3]}); "
                        f"stimulus names look like {stimuli.names[:3]}: name the image files after the conditions")
    idx = [have[c] for c in wanted]
    return Stimuli(stimuli.images[idx], wanted, stimuli.source, stimuli.original_size)


# ------------------------------------------------------------------------------------------ network side
def network_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | str, device: torch.device,
                        batch_size: int, progress: ProgressFn = None,
                        label: str = "activations") -> dict[str, np.ndarray]:
    cb = (lambda d, t: progress(label, d, t)) if progress else None
    try:
        return neuro.activations(model.to(device), x, layers=layers, batch_size=batch_size, device=device,
                                 progress=cb)
    except NeuroError as err:
        raise UserError(str(err)) from None


def layer_rdms(acts: dict[str, np.ndarray], names: Sequence[str], method: str, suffix: str = "") -> RDMs:
    items = []
    for layer, a in acts.items():
        try:
            items.append(neuro.compute_rdm(np.asarray(a, dtype=np.float64).reshape(len(a), -1), method,
                                           conditions=names, name=layer + suffix))
        except NeuroError as err:
            raise UserError(f"layer {layer}: {err}") from None
    return RDMs.concat(items)


# ------------------------------------------------------------------------------------------ outputs
def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("robust-kd", "torch", "numpy", "scipy", "nibabel"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_rdm_folder(folder: Path, rdms: RDMs) -> None:
    for k in range(rdms.n_rdm):
        rdms[k].save(folder / f"{_safe(str(rdms.names[k]))}.npz")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_rsa(model: nn.Module, model_name: str, model_source: str, stimuli: Stimuli, brain: Brain, out: Path, *,
            layers: Sequence[str] | str = "blocks", rdm_method: str = "correlation", comparator: str = "spearman",
            n_bootstrap: int = 1000, n_permutations: int = 1000, over: str = "conditions", seed: int = 0,
            device: torch.device = torch.device("cpu"), batch_size: int = 64, progress: ProgressFn = None) -> dict:
    """Layer × ROI RSA; writes the analysis folder and returns the results dictionary."""
    start = time.time()
    stimuli = match_conditions(stimuli, brain)
    acts = network_activations(model, stimuli.images, layers, device, batch_size, progress)
    net = layer_rdms(acts, stimuli.names, rdm_method)
    try:
        result = neuro.rsa(net, brain.rois, comparator, n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                           over=over, seed=seed, progress=progress)
    except NeuroError as err:
        raise UserError(str(err)) from None
    write_rdm_folder(out / "network_rdms", net)
    for roi, r in brain.rois.items():
        r.save(out / "brain_rdms" / f"{_safe(roi)}.npz")
    figures = {
        "network_rdms": str(neuro.plots.plot_rdms(net, out / "figures" / "network_rdms.png")),
        "brain_rdms": str(neuro.plots.plot_rdms([r.mean() for r in brain.rois.values()],
                                                out / "figures" / "brain_rdms.png", titles=list(brain.rois))),
        "rsa_bars": str(neuro.plots.plot_rsa_bars(result.rows, out / "figures" / "rsa_bars.png",
                                                  method=result.settings["method"], title=model_name)),
    }
    payload = {
        "kind": "rsa", "model": model_name, "model_source": model_source, "stimuli": stimuli.source,
        "n_stimuli": len(stimuli.names), "stimulus_size": list(stimuli.images.shape[1:]),
        "brain": brain.source, "rois": list(brain.rois), "layers": list(acts), "rdm_method": rdm_method,
        **result.to_dict(), "figures": figures, "device": str(device), "versions": versions(),
        "seconds": round(time.time() - start, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "rsa.json", payload)
    result.save_csv(out / "rsa.csv")
    write_text(out / "README.md", _summary_markdown(payload))
    return payload


def _summary_markdown(p: dict) -> str:
    lines = [f"# RSA: {inline(p['model'])}", "", f"- stimuli: {inline(p['stimuli'])} ({p['n_stimuli']} images)",
             f"- brain: {inline(p['brain'])}", f"- RDMs: {p['rdm_method']}; comparison: {p['settings']['method']}; "
             f"{p['settings']['n_bootstrap']} bootstrap samples over {p['settings']['bootstrap_over']}, "
             f"{p['settings']['n_permutations']} permutations, seed {p['settings']['seed']}", "",
             "| layer | ROI | similarity | 95% CI | p | p (FDR) | noise ceiling | undefined |",
             "|---|---|---:|---|---:|---:|---|---|"]
    for r in p["rows"]:
        ceiling = f"{_num(r['noise_lower'])}–{_num(r['noise_upper'])}" if np.isfinite(r["noise_lower"]) else "n/a"
        lines.append(f"| {inline(r['model'])} | {inline(r['roi'])} | {_num(r['similarity'])} | [{_num(r['ci_low'])}, "
                     f"{_num(r['ci_high'])}] | {_num(r['p'], '.3g')} | {_num(r['p_fdr'], '.3g')} | {ceiling} "
                     f"| {inline(r.get('undefined') or '')} |")
    if p.get("descriptors", {}).get("simulated"):
        lines += ["", "**SIMULATED brain data: not a measurement.**"]
    lines += ["", "![RSA](figures/rsa_bars.png)", "", "![network RDMs](figures/network_rdms.png)", ""]
    return "\n".join(lines)


def _num(x: float, spec: str = ".3f") -> str:
    return format(x, spec) if np.isfinite(x) else "n/a"


def undefined_summary(rows: Sequence[dict]) -> str | None:
    """One line for the user when some similarities are undefined (their CI and p are n/a), else None."""
    reasons = list(dict.fromkeys(r["undefined"] for r in rows if r.get("undefined")))
    if not reasons:
        return None
    count = sum(1 for r in rows if r.get("undefined"))
    return (f"{count} of {len(rows)} similarities are undefined, so are their CIs and p-values (n/a, flagged "
            f"'undefined' in the results): {'; '.join(reasons)}")


# ------------------------------------------------------------------------------------------ adversarial
@dataclass
class AdversarialSettings:
    eps: float = 8 / 255
    norm: str = "Linf"
    white_steps: int = 20
    black: str = "square"                 # "square" or "transfer"
    queries: int = 1000
    surrogate: str | None = None
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return dict(self.__dict__)


def predict_labels(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """The model's predicted classes for ``x``, in batches (on the CPU)."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i:i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def white_box_views(model: nn.Module) -> list[str]:
    """How the white-box attack differentiates the model: itself, then (JPEG-DL) BPDA with the identity."""
    return ["model", "bpda-identity"] if is_jpegdl(model) else ["model"]


def _attack_record(settings: AdversarialSettings, model: nn.Module, surrogate: nn.Module | None) -> dict[str, Any]:
    """The attack settings with how each attack differentiated its model (kept with the results)."""
    record = {**settings.key(), "white_views": white_box_views(model)}
    if settings.black == "transfer" and surrogate is not None:
        record["surrogate_gradient"] = transfer_source(surrogate)[1]
    return record


def adversarial_stimuli(model: nn.Module, x: torch.Tensor, settings: AdversarialSettings, out: Path,
                        device: torch.device, batch_size: int, surrogate: nn.Module | None = None,
                        progress: ProgressFn = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """clean, white-box (PGD on the model itself) and black-box (Square, or transfer from a surrogate)
    versions of the stimuli. Labels are the model's own clean predictions (the stimuli have no labels
    in its classes), so "success" means the prediction changed. Saved as .npy and reused on a rerun.

    For a JPEG-DL model the soft quantizer's gradients can mislead PGD (gradient masking), so the
    points whose prediction PGD did not change are attacked again through BPDA with the identity
    (see :func:`white_box_views`); the verdict is always the model's own."""
    import attacks

    model = model.to(device).eval()
    labels = predict_labels(model, x, device, batch_size)
    key_file = out / "stimuli" / "settings.json"
    # the stimuli are reused only for the same weights (another checkpoint in the same --out, or the run
    # trained further, makes new ones), the same images and the same attack
    key = {**_attack_record(settings, model, surrogate), "n": len(x), "shape": list(x.shape),
           "model": attacks.model_fingerprint(model), "images": attacks.tensors_fingerprint([x]),
           "surrogate": None if surrogate is None else attacks.model_fingerprint(surrogate)}
    cached = {}
    if key_file.is_file():
        try:
            if json.loads(key_file.read_text()) == key:
                cached = {v: torch.from_numpy(np.load(out / "stimuli" / f"{v}.npy", allow_pickle=False))
                          for v in ("white", "black")}
        except (OSError, ValueError, json.JSONDecodeError):
            cached = {}
    try:
        white_attack = attacks.PGD(eps=settings.eps, norm=settings.norm, steps=settings.white_steps,
                                   seed=settings.seed)
        if settings.black == "square":
            black_attack: Any = attacks.make_attack("square", eps=settings.eps, norm=settings.norm,
                                                    queries=settings.queries, seed=settings.seed)
        elif settings.black == "transfer":
            if surrogate is None:
                raise UserError("--black transfer needs --surrogate (a model name, checkpoint or run folder)")
            black_attack = attacks.Transfer(eps=settings.eps, norm=settings.norm, seed=settings.seed,
                                            surrogates=[transfer_source(surrogate)[0].to(device).eval()],
                                            surrogate_names=[settings.surrogate or "surrogate"])
        else:
            raise UserError(f"--black must be 'square' or 'transfer', not '{settings.black}'")
    except attacks.AttackError as err:
        raise UserError(str(err)) from None
    if not cached:
        # made as attacks.evaluate makes them (folded, channels-last copies); the verdicts are the model's own
        views = ({"BPDA-identity": soft_model_bpda(model).to(device).eval()}
                 if "bpda-identity" in white_box_views(model) else {})
        cached["white"] = attacks.adversarial_examples(white_attack, model, x, labels, batch_size=batch_size,
                                                       retry_views=views, progress=progress, label="white-box PGD")
        cached["black"] = attacks.adversarial_examples(black_attack, model, x, labels, batch_size=batch_size,
                                                       progress=progress, label=f"black-box {settings.black}")
        from .fileio import atomic_open
        key_file.unlink(missing_ok=True)    # no key naming these weights over another's half-written stimuli
        for variant in ("white", "black"):
            with atomic_open(out / "stimuli" / f"{variant}.npy") as f:
                np.save(f, cached[variant].numpy())
        write_json(key_file, key)
    variants = {"clean": x, "white": cached["white"], "black": cached["black"]}
    stats: dict[str, Any] = {}
    for v, images in variants.items():
        pred = predict_labels(model, images, device, batch_size)
        delta = (images - x).flatten(1)
        size = delta.abs().amax(1) if settings.norm == "Linf" else delta.norm(dim=1)
        stats[v] = {"prediction_changed": float((pred != labels).float().mean()),
                    "max_perturbation": float(size.max()), "mean_perturbation": float(size.mean())}
    return variants, stats


def run_rsa_adversarial(model: nn.Module, model_name: str, model_source: str, stimuli: Stimuli, out: Path, *,
                        settings: AdversarialSettings, brain: Brain | None = None, surrogate: nn.Module | None = None,
                        layers: Sequence[str] | str = "blocks", rdm_method: str = "correlation",
                        comparator: str = "spearman", n_bootstrap: int = 1000, n_permutations: int = 1000,
                        seed: int = 0, device: torch.device = torch.device("cpu"), batch_size: int = 64,
                        progress: ProgressFn = None) -> dict:
    """The study design of seed 001 on the network side, and against brain RDMs when given."""
    from neuro.variants import variant_analysis

    start = time.time()
    if brain is not None:
        stimuli = match_conditions(stimuli, brain)
    variants, attack_stats = adversarial_stimuli(model, stimuli.images, settings, out, device, batch_size,
                                                 surrogate, progress)
    acts = {v: network_activations(model, images, layers, device, batch_size, progress, f"activations ({v})")
            for v, images in variants.items()}
    try:
        analysis = variant_analysis(acts, stimuli.names, reference="clean", rdm_method=rdm_method,
                                    comparator=comparator, n_bootstrap=n_bootstrap, seed=seed,
                                    pairs=[("white", "black")])
    except NeuroError as err:
        raise UserError(str(err)) from None
    all_rdms = RDMs.concat([analysis["rdms"][v][layer] for v in variants for layer in acts["clean"]])
    write_rdm_folder(out / "network_rdms", all_rdms)
    figures = {"network_rdms": str(neuro.plots.plot_rdms(all_rdms, out / "figures" / "network_rdms.png",
                                                         max_cols=len(acts["clean"])))}
    brain_rows: list[dict] = []
    brain_settings: dict[str, Any] = {}
    if brain is not None:
        try:
            res = neuro.rsa(all_rdms, brain.rois, comparator, n_bootstrap=n_bootstrap,
                            n_permutations=n_permutations, seed=seed, progress=progress)
        except NeuroError as err:
            raise UserError(str(err)) from None
        brain_rows, brain_settings = res.rows, res.settings
        for roi, r in brain.rois.items():
            r.save(out / "brain_rdms" / f"{_safe(roi)}.npz")
        figures["rsa_bars"] = str(neuro.plots.plot_rsa_bars(brain_rows, out / "figures" / "rsa_bars.png",
                                                            method=res.settings["method"], title=model_name))
    payload = {
        "kind": "rsa-adversarial", "model": model_name, "model_source": model_source, "stimuli": stimuli.source,
        "n_stimuli": len(stimuli.names), "attack": _attack_record(settings, model, surrogate),
        "attack_effect": attack_stats,
        "labels": "the model's own clean predictions", "rdm_method": rdm_method, "comparator": comparator,
        "n_bootstrap": n_bootstrap, "seed": seed, "similarity_to_clean": analysis["similarity"],
        "white_vs_black": analysis["differences"], "brain": brain.source if brain else None,
        "brain_rows": brain_rows, "brain_settings": brain_settings, "figures": figures, "device": str(device),
        "versions": versions(), "seconds": round(time.time() - start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "rsa_adversarial.json", payload)
    return payload


# ------------------------------------------------------------------------------------------ model vs model
def run_rsa_models(models: dict[str, tuple[nn.Module, str]], stimuli: dict[str, Stimuli], out: Path, *,
                   layers: Sequence[str], rdm_method: str = "correlation", comparator: str = "spearman",
                   n_bootstrap: int = 1000, seed: int = 0, device: torch.device = torch.device("cpu"),
                   batch_size: int = 64, progress: ProgressFn = None) -> dict:
    """Model × model RDM similarity per layer on the same stimuli (e.g. teacher vs students vs JPEG-DL
    twins), with bootstrap CIs over stimuli. ``stimuli`` maps each model to the stimuli fitted to its input."""
    start = time.time()
    names = list(models)
    per_layer: dict[str, RDMs] = {}
    for name, (model, _) in models.items():
        acts = network_activations(model, stimuli[name].images, list(layers), device, batch_size, progress,
                                   f"activations ({name})")
        for layer, a in acts.items():
            rdm = layer_rdms({layer: a}, stimuli[name].names, rdm_method, suffix="")
            rdm.names = np.asarray([name])
            per_layer[layer] = rdm if layer not in per_layer else RDMs.concat([per_layer[layer], rdm])
    results: dict[str, Any] = {}
    figures: dict[str, str] = {}
    for layer, rdms in per_layer.items():
        sim = neuro.compare(rdms, rdms, comparator)
        low = np.full_like(sim, np.nan)
        high = np.full_like(sim, np.nan)
        if n_bootstrap:
            for j in range(len(names)):
                try:
                    boot = neuro.bootstrap(rdms, rdms[j], comparator, n=n_bootstrap, seed=seed, ceiling=False)
                except NeuroError as err:
                    raise UserError(str(err)) from None
                ci = boot.ci()
                low[:, j], high[:, j] = ci[:, 0], ci[:, 1]
        results[layer] = {"models": names, "similarity": sim.tolist(), "ci_low": low.tolist(),
                          "ci_high": high.tolist()}
        write_rdm_folder(out / "model_rdms" / _safe(layer), rdms)
        figures[layer] = str(neuro.plots.plot_similarity_matrix(
            sim, names, out / "figures" / f"similarity_{_safe(layer)}.png",
            title=f"{layer}: {comparator} between RDMs", label=f"{comparator}"))
        figures[layer + " RDMs"] = str(neuro.plots.plot_rdms(rdms, out / "figures" / f"rdms_{_safe(layer)}.png"))
    first = stimuli[names[0]]
    payload = {"kind": "rsa-models", "models": {n: src for n, (_, src) in models.items()}, "stimuli": first.source,
               "n_stimuli": len(first.names), "layers": list(per_layer), "rdm_method": rdm_method,
               "comparator": comparator, "n_bootstrap": n_bootstrap, "bootstrap_over": "stimuli", "seed": seed,
               "results": results, "figures": figures, "device": str(device), "versions": versions(),
               "seconds": round(time.time() - start, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(out / "rsa_models.json", payload)
    return payload
