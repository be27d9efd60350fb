"""``robust-kd rsa`` and ``robust-kd rsa-adversarial`` behind the command line.

The libraries do the work (:mod:`neuro` for activations, RDMs and statistics, :mod:`attacks` for the
adversarial stimuli); this module decides what the stimuli and brain data are, matches their
condition names, and writes one folder per analysis under the model's run:

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
import torch.nn.functional as F
from torch import nn

import neuro
from neuro import NeuroError, RDMs

from .errors import UserError
from .fileio import write_json, write_text
from .jpeg.variants import is_jpegdl, soft_model_bpda, transfer_source
from .md_escape import inline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
ProgressFn = Callable[[str, int, int], None] | None


# ------------------------------------------------------------------------------------------ stimuli
@dataclass
class Stimuli:
    images: torch.Tensor            # N × C × H × W in [0, 1], at the model's input size and channels
    names: list[str]
    source: str
    original_size: tuple[int, int]


def _to_nchw_float(array: np.ndarray) -> torch.Tensor:
    a = np.asarray(array)
    if a.ndim == 3:                                        # N × H × W grey
        a = a[:, None]
    if a.ndim != 4:
        raise UserError(f"stimuli must be N×H×W×C or N×C×H×W images, got an array of shape {a.shape}")
    if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] == 4:                                    # drop alpha
        a = a[:, :3]
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    t = t.float()
    if not torch.isfinite(t).all():
        raise UserError("the stimuli hold NaN/inf values; fix the array")
    if t.min() < 0 or t.max() > 1:
        raise UserError(f"float stimuli must lie in [0, 1] (found {float(t.min()):.3g}..{float(t.max()):.3g}); "
                        "scale them or save them as uint8")
    return t


def fit_to_model(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Channels (RGB → luminance, grey → RGB) and antialiased resize to the model's input."""
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != channels:
        raise UserError(f"the model takes {channels}-channel images, the stimuli have {x.shape[1]}")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.contiguous()


def load_stimuli(spec: str, channels: int, size: int) -> Stimuli:
    """'rsa92' (the embedded 92 images), a folder of images (sorted by name), or a ``.npy`` array
    (names from a ``<file>.txt`` beside it, one per line, else the row index)."""
    if spec == "rsa92":
        data = neuro.datasets.load_rsa92()
        x, names, source = _to_nchw_float(data.images), [str(c) for c in data.conditions], \
            "rsa92: the 92 object images of Kriegeskorte et al. 2008 (embedded)"
    else:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder '{path}'")
            from PIL import Image
            arrays = []
            for f in files:
                try:
                    img = Image.open(f).convert("RGB")
                except OSError:
                    raise UserError(f"cannot read image '{f}'; remove it or convert it to PNG") from None
                arrays.append(np.asarray(img))
            if len({a.shape for a in arrays}) > 1:
                side = max(a.shape[0] for a in arrays)
                arrays = [np.asarray(Image.fromarray(a).resize((side, side))) for a in arrays]
            x, names, source = _to_nchw_float(np.stack(arrays)), [f.stem for f in files], f"folder {path}"
        elif path.suffix == ".npy":
            if not path.is_file():
                raise UserError(f"stimuli file '{path}' does not exist")
            try:
                array = np.load(path, allow_pickle=False)
            except Exception:  # noqa: BLE001  numpy raises ValueError, EOFError, OSError... for damaged files
                raise UserError(f"'{path}' is not a readable numeric .npy array (damaged, or an object array, "
                                "which is refused)") from None
            x = _to_nchw_float(array)
            names_file = path.with_suffix(".txt")
            try:
                names = (names_file.read_text(encoding="utf-8-sig").split() if names_file.is_file()
                         else [f"{i:04d}" for i in range(len(x))])
            except (OSError, UnicodeDecodeError):
                raise UserError(f"{names_file} is not readable text; give one stimulus name per line") from None
            if len(names) != len(x):
                raise UserError(f"{names_file} has {len(names)} names for {len(x)} images; give one per line")
            source = f"array {path}"
        else:
            raise UserError(f"--stimuli '{spec}': give 'rsa92', a folder of images or a .npy array")
    if len(set(names)) != len(names):
        raise UserError("stimulus names must be unique (they are matched with the brain data's conditions)")
    original = tuple(x.shape[-2:])
    return Stimuli(fit_to_model(x, channels, size), names, source, original)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ brain data
@dataclass
class Brain:
    rois: dict[str, RDMs]
    source: str
    descriptors: dict[str, Any] = field(default_factory=dict)


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
    return Brain(rois_out, "; ".join(sources))


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
             "| layer | ROI | similarity | 95% CI | p | p (FDR) | noise ceiling |", "|---|---|---:|---|---:|---:|---|"]
    for r in p["rows"]:
        ceiling = f"{r['noise_lower']:.3f}–{r['noise_upper']:.3f}" if np.isfinite(r["noise_lower"]) else "n/a"
        lines.append(f"| {inline(r['model'])} | {inline(r['roi'])} | {r['similarity']:.3f} | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['p']:.3g} | {r['p_fdr']:.3g} | {ceiling} |")
    if p.get("descriptors", {}).get("simulated"):
        lines += ["", "**SIMULATED brain data: not a measurement.**"]
    lines += ["", "![RSA](figures/rsa_bars.png)", "", "![network RDMs](figures/network_rdms.png)", ""]
    return "\n".join(lines)


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
def test_split_stimuli(target_data: str | None, data_root: str | None, options: dict, n: int, channels: int,
                       size: int) -> Stimuli:
    """The first ``n`` test images of a data set (the models' own, with the folder of their stored
    config), as stimuli named by index and class."""
    from .data import load_dataset
    from .data.registry import stored_root

    name = target_data or "embedded"
    dataset = load_dataset(name, stored_root(name, data_root), **options)
    if n < 3:
        raise UserError("--n must be at least 3 (an RDM needs 3 stimuli)")
    images = dataset.test_images[:n].float() / 255.0
    names = [f"{i:04d}_{dataset.class_names[int(c)]}" for i, c in enumerate(dataset.test_labels[:n])]
    return Stimuli(fit_to_model(images, channels, size), names, f"test split of {dataset.name} (first {n})",
                   tuple(images.shape[-2:]))  # type: ignore[arg-type]


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
