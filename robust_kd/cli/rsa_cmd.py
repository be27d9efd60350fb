"""``robust-kd rsa`` and ``robust-kd rsa-adversarial``: network layers against brain data, and how
adversarial stimuli change a network's representation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import click

from ..paths import check_folder, fit_name
from .output import StepProgress, print_json, print_line, print_table
from .params import NORM, SEED


def _common(fn):
    options = [
        click.option("--model", "-m", "model_spec", required=True, metavar="NAME|CHECKPOINT|RUN",
                     help="A model name (its newest run), a checkpoint, a run folder, or a pretrained model "
                          "(autoattack_resnet18_cifar10)."),
        click.option("--stimuli", default="rsa92", show_default=True, metavar="rsa92|FOLDER|NPY",
                     help="The images shown to the network: 'rsa92' (embedded 92 object images), a folder, or a .npy; "
                          "rsa-adversarial also takes 'test' (the first --n images of the model's test split)."),
        click.option("--layers", default="blocks", show_default=True, metavar="blocks|all|L1,L2,...",
                     help="Dotted module names (--list-layers shows them), 'blocks' (stem, each block, pool, "
                          "logits), or 'all'."),
        click.option("--list-layers", is_flag=True, help="Print the model's layer names and exit."),
        click.option("--rdm-method", default="correlation", show_default=True,
                     type=click.Choice(["correlation", "euclidean", "cosine"])),
        click.option("--compare", "comparator", default="spearman", show_default=True,
                     type=click.Choice(["spearman", "pearson", "kendall-tau-a", "rho-a", "cosine",
                                        "whitened-cosine", "whitened-pearson"])),
        click.option("--n-bootstrap", type=int, default=1000, show_default=True),
        click.option("--n-permutations", type=int, default=1000, show_default=True),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--device", default="auto", show_default=True),
        click.option("--runs-dir", default="runs", show_default=True, help="Where model names are looked up."),
        click.option("--out", metavar="FOLDER", help="Analysis folder; default: <run>/rsa/<name>."),
        click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of tables."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _layers(text: str) -> Sequence[str] | str:
    return text if text in ("blocks", "all", "leaves") else [t.strip() for t in text.split(",") if t.strip()]


def _check_counts(n_bootstrap: int, n_permutations: int) -> None:
    from ..errors import UserError
    if n_bootstrap < 0 or n_permutations < 0:
        raise UserError("--n-bootstrap and --n-permutations must be 0 (off) or more")


def _print_layers(model: Any) -> None:
    import neuro
    blocks = set(neuro.list_layers(model, "blocks"))
    for name in neuro.list_layers(model, "all"):
        print_line(f"{name}{'   (block)' if name in blocks else ''}")


def _warn(lines: Sequence[str | None]) -> None:
    """One-line warnings on stderr (the run goes on)."""
    from .. import console
    for line in lines:
        if line:
            console.stderr().print(line, markup=False)


def _flag_column(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """An 'undefined' column (why a similarity is n/a) when some row needs it, else nothing."""
    if not any(r.get("undefined") for r in rows):
        return [], [[] for _ in rows]
    return ["undefined"], [[r.get("undefined") or ""] for r in rows]


def _surrogate(spec: str, target: Any, runs_dir: str) -> Any:
    """The transfer attack's source model; it must have the model's classes, image shape and pixel range
    (its examples are aimed at the model's own predictions)."""
    from ..compatibility import of_model, require_match
    from ..targets import resolve_model

    surrogate = resolve_model(spec, runs_dir)
    require_match(of_model(f"--model '{target.name}'", target.model),
                  of_model(f"--surrogate '{spec}'", surrogate.model),
                  "use a --surrogate trained on the data set of --model")
    return surrogate.model


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _fmt_p(x: float) -> str:
    return "n/a" if x != x else f"{x:.3g}"


@click.command(epilog="""\b
Examples:
  robust-kd rsa --model autoattack_resnet18_cifar10 --stimuli rsa92 --brain-rdm rsa92
  robust-kd rsa --model resnet8x4 --stimuli images/ --fmri betas.nii.gz --conditions conds.txt --roi vt.nii.gz
""")
@_common
@click.option("--fmri", multiple=True, metavar="BETAS",
              help="Beta images of one subject: a 4-D NIfTI (with --conditions) or a folder of 3-D NIfTIs named "
                   "after the conditions. Repeat for several subjects.")
@click.option("--roi", "rois", multiple=True, metavar="MASK", help="ROI mask (binary or label image). Repeatable.")
@click.option("--conditions", metavar="FILE", help="Condition label per volume of a 4-D --fmri (one per line, "
                                                   "or 'label run' to give runs for crossnobis).")
@click.option("--brain-rdm", "brain_rdms", multiple=True, metavar="[ROI=]FILE|rsa92",
              help="Pre-computed brain RDMs (.npy/.mat/.csv/.npz, several subjects per file allowed), or 'rsa92' "
                   "for the embedded human-IT RDMs. Repeatable.")
@click.option("--brain-method", default="correlation", show_default=True,
              type=click.Choice(["correlation", "euclidean", "cosine", "crossnobis"]),
              help="RDM method for --fmri betas (crossnobis needs runs in --conditions).")
@click.option("--noise", type=click.Choice(["diag", "shrinkage_diag", "shrinkage_eye"]),
              help="Noise normalisation for crossnobis, estimated from the runs.")
@click.option("--bootstrap-over", default="conditions", show_default=True,
              type=click.Choice(["conditions", "subjects", "both"]))
def rsa(model_spec: str, stimuli: str, layers: str, list_layers: bool, rdm_method: str, comparator: str,
        n_bootstrap: int, n_permutations: int, seed: int, batch_size: int, device: str, runs_dir: str, out: str | None,
        as_json: bool, fmri: tuple[str, ...], rois: tuple[str, ...], conditions: str | None,
        brain_rdms: tuple[str, ...], brain_method: str, noise: str | None, bootstrap_over: str) -> None:
    """Compare a network's layer RDMs with brain RDMs (per ROI), with CIs, p-values and noise ceiling."""
    from ..device import resolve_device
    from ..rsa_study import load_brain, run_rsa, undefined_summary
    from ..stimuli import load_stimuli
    from ..targets import resolve_model

    _check_counts(n_bootstrap, n_permutations)
    target = resolve_model(model_spec, runs_dir)
    model = target.model
    if list_layers:
        _print_layers(model)
        return
    torch_device = resolve_device(device)
    brain = load_brain(fmri, rois, conditions, None, brain_rdms, brain_method, noise)
    images = load_stimuli(stimuli, int(getattr(model, "in_channels", 3)), int(getattr(model, "image_size", 32)))
    _warn(brain.notes + images.notes)
    name = fit_name(f"{Path(stimuli).name}-{'-'.join(brain.rois)}")
    folder = check_folder(Path(out) if out else target.results_dir.parent / "rsa" / name, "--out")
    progress = StepProgress()
    try:
        payload = run_rsa(model, target.name, target.source, images, brain, folder, layers=_layers(layers),
                          rdm_method=rdm_method, comparator=comparator, n_bootstrap=n_bootstrap,
                          n_permutations=n_permutations, over=bootstrap_over, seed=seed,
                          device=torch_device, batch_size=batch_size, progress=progress)
    finally:
        progress.close()
    _warn([undefined_summary(payload["rows"])])
    if as_json:
        print_json(payload)
        return
    flag, flags = _flag_column(payload["rows"])
    print_table(f"RSA {target.name}: {payload['n_stimuli']} stimuli, {payload['rdm_method']} RDMs, "
                f"{payload['settings']['method']} ({n_bootstrap} bootstrap, {n_permutations} permutations)",
                ["layer", "ROI", "similarity", "95% CI", "p", "p FDR", "noise ceiling", *flag],
                [[r["model"], r["roi"], _fmt(r["similarity"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                  _fmt_p(r["p"]), _fmt_p(r["p_fdr"]),
                  f"{_fmt(r['noise_lower'])}–{_fmt(r['noise_upper'])}", *f] for r, f in zip(payload["rows"], flags)],
                right=["similarity", "p", "p FDR"])
    print_line(f"results: {folder / 'rsa.json'} (table rsa.csv, figures in {folder / 'figures'})")


@click.command("rsa-adversarial", epilog="""\b
Examples:
  robust-kd rsa-adversarial --model autoattack_resnet18_cifar10 --stimuli rsa92 --brain-rdm rsa92
  robust-kd rsa-adversarial --model jpegdl_resnet8x4 --black transfer --surrogate resnet8x4 --eps 4/255
  robust-kd rsa-adversarial --model resnet8x4 --stimuli test --n 100     # network side only, own test images
""")
@_common
@click.option("--eps", default="8/255", show_default=True, help="Perturbation budget of both attacks.")
@click.option("--norm", type=NORM, default="Linf", show_default=True)
@click.option("--white-steps", type=int, default=20, show_default=True, help="PGD steps of the white-box attack.")
@click.option("--black", type=click.Choice(["square", "transfer"]), default="square", show_default=True)
@click.option("--queries", type=int, default=1000, show_default=True, help="Square attack query budget.")
@click.option("--surrogate", metavar="NAME|CHECKPOINT|RUN", help="Source model of the transfer attack.")
@click.option("--brain-rdm", "brain_rdms", multiple=True, metavar="[ROI=]FILE|rsa92",
              help="Optional brain RDMs over the same stimuli (e.g. 'rsa92').")
@click.option("--n", "n_test", type=int, default=100, show_default=True,
              help="Number of test images for --stimuli test (the model's own test split).")
def rsa_adversarial(model_spec: str, stimuli: str, layers: str, list_layers: bool, rdm_method: str, comparator: str,
                    n_bootstrap: int, n_permutations: int, seed: int, batch_size: int, device: str, runs_dir: str,
                    out: str | None, as_json: bool, eps: str, norm: str, white_steps: int, black: str, queries: int,
                    surrogate: str | None, brain_rdms: tuple[str, ...], n_test: int) -> None:
    """Clean vs white-box vs black-box adversarial stimuli: per-layer RDMs, the white- vs black-box test,
    and (with brain RDMs) their similarity to the brain (the design of Han et al. 2019).

    --stimuli test uses the first --n images of the model's own test split (network side only)."""
    from ..device import resolve_device
    from ..errors import UserError
    from ..robustness import check_eps, parse_eps
    from ..rsa_study import AdversarialSettings, load_brain, run_rsa_adversarial, undefined_summary
    from ..stimuli import load_stimuli, test_split_stimuli
    from ..targets import resolve_model

    _check_counts(n_bootstrap, n_permutations)
    eps_values = parse_eps(eps) or []
    if len(eps_values) != 1:
        raise UserError("--eps takes one value here, e.g. 8/255")
    if (black == "transfer") != (surrogate is not None):
        raise UserError("--black transfer needs --surrogate (a model name, checkpoint or run folder)"
                        if black == "transfer" else
                        "--surrogate applies to --black transfer only; add --black transfer or drop --surrogate")
    target = resolve_model(model_spec, runs_dir)
    model = target.model
    if list_layers:
        _print_layers(model)
        return
    torch_device = resolve_device(device)
    surrogate_model = _surrogate(surrogate, target, runs_dir) if surrogate else None
    channels, size = int(getattr(model, "in_channels", 3)), int(getattr(model, "image_size", 32))
    if stimuli == "test":
        if brain_rdms:
            raise UserError("--brain-rdm needs the stimuli the brain saw (e.g. --stimuli rsa92), not --stimuli test")
        images = test_split_stimuli(target.data, target.data_root, target.data_options, n_test, channels, size)
    else:
        images = load_stimuli(stimuli, channels, size)
    check_eps(eps_values, norm, images.images[0].numel())
    brain = load_brain((), (), None, None, brain_rdms, "correlation", None) if brain_rdms else None
    _warn(images.notes + (brain.notes if brain else []))
    settings = AdversarialSettings(eps=eps_values[0], norm=norm, white_steps=white_steps, black=black,
                                   queries=queries, surrogate=surrogate, seed=seed)
    folder = check_folder(Path(out) if out else
                          target.results_dir.parent / "rsa" / fit_name(f"adversarial-{Path(stimuli).name}-{black}"),
                          "--out")
    progress = StepProgress()
    try:
        payload = run_rsa_adversarial(model, target.name, target.source, images, folder, settings=settings,
                                      brain=brain, surrogate=surrogate_model, layers=_layers(layers),
                                      rdm_method=rdm_method, comparator=comparator, n_bootstrap=n_bootstrap,
                                      n_permutations=n_permutations, seed=seed, device=torch_device,
                                      batch_size=batch_size, progress=progress)
    finally:
        progress.close()
    _warn([undefined_summary(payload["similarity_to_clean"]), undefined_summary(payload["brain_rows"])])
    if as_json:
        print_json(payload)
        return
    _print_adversarial(payload)
    print_line(f"results: {folder / 'rsa_adversarial.json'} (figures in {folder / 'figures'})")


def _print_adversarial(payload: dict) -> None:
    """The tables of rsa-adversarial: the attacks' effect, white- vs black-box, and (with brain RDMs) the brain."""
    effect = payload["attack_effect"]
    print_line(f"prediction changed: white-box {100 * effect['white']['prediction_changed']:.1f}%, "
               f"black-box {100 * effect['black']['prediction_changed']:.1f}% of {payload['n_stimuli']} stimuli")
    flag, flags = _flag_column(payload["white_vs_black"])
    print_table("White- vs black-box: RDM similarity to the clean RDM, and displacement from the clean pattern",
                ["layer", "sim white", "sim black", "diff [95% CI]", "p boot (FDR)", "displ. white", "displ. black",
                 "p Wilcoxon (FDR)", *flag],
                [[r["model"] if "model" in r else r["layer"], _fmt(r["similarity_a"]), _fmt(r["similarity_b"]),
                  f"{_fmt(r['difference'])} [{_fmt(r.get('ci_low', float('nan')))}, "
                  f"{_fmt(r.get('ci_high', float('nan')))}]",
                  f"{_fmt_p(r.get('p_bootstrap', float('nan')))} ({_fmt_p(r.get('p_bootstrap_fdr', float('nan')))})",
                  _fmt(r["displacement_a"]), _fmt(r["displacement_b"]),
                  f"{_fmt_p(r['p_wilcoxon'])} ({_fmt_p(r['p_wilcoxon_fdr'])})", *f]
                 for r, f in zip(payload["white_vs_black"], flags)],
                right=["sim white", "sim black"])
    if payload["brain_rows"]:
        flag, flags = _flag_column(payload["brain_rows"])
        print_table("Network RDMs (layer/variant) vs brain",
                    ["layer/variant", "ROI", "similarity", "95% CI", "p FDR", "noise ceiling", *flag],
                    [[r["model"], r["roi"], _fmt(r["similarity"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                      _fmt_p(r["p_fdr"]), f"{_fmt(r['noise_lower'])}–{_fmt(r['noise_upper'])}", *f]
                     for r, f in zip(payload["brain_rows"], flags)], right=["similarity"])


@click.command("rsa-models", epilog="""\b
Examples:
  robust-kd rsa-models --models resnet32x4,resnet8x4,jpegdl_resnet8x4 --stimuli test --n 200
  robust-kd rsa-models --models runs/teacher,runs/kd,runs/wttm --stimuli rsa92 --layers net.avgpool,logits
""")
@click.option("--models", "model_specs", required=True, metavar="A,B,...",
              help="Models to compare (names, checkpoints, run folders, pretrained names), comma-separated.")
@click.option("--stimuli", default="test", show_default=True, metavar="test|rsa92|FOLDER|NPY",
              help="'test': the first --n test images of the first model's data set; or as for 'robust-kd rsa'.")
@click.option("--n", "n", type=int, default=200, show_default=True, help="Number of test images for --stimuli test.")
@click.option("--layers", default="logits", show_default=True, metavar="L1,L2,...",
              help="Dotted layer names present in every model (e.g. net.avgpool), and/or 'logits'.")
@click.option("--rdm-method", default="correlation", show_default=True,
              type=click.Choice(["correlation", "euclidean", "cosine"]))
@click.option("--compare", "comparator", default="spearman", show_default=True,
              type=click.Choice(["spearman", "pearson", "kendall-tau-a", "rho-a", "cosine"]))
@click.option("--n-bootstrap", type=int, default=1000, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--out", metavar="FOLDER", help="Default: <runs-dir>/rsa-models/<models>-<stimuli>.")
@click.option("--json", "as_json", is_flag=True)
def rsa_models(model_specs: str, stimuli: str, n: int, layers: str, rdm_method: str, comparator: str,
               n_bootstrap: int, seed: int, batch_size: int, device: str, runs_dir: str, out: str | None,
               as_json: bool) -> None:
    """How similar are the representations of several models (teacher vs students vs JPEG-DL twins)?
    Model × model RDM similarity per layer on the same stimuli, with bootstrap CIs over stimuli."""
    from ..device import resolve_device
    from ..errors import UserError
    from ..rsa_study import run_rsa_models
    from ..stimuli import load_stimuli, test_split_stimuli
    from ..targets import resolve_model

    _check_counts(n_bootstrap, 0)
    specs = [s.strip() for s in model_specs.split(",") if s.strip()]
    if len(specs) < 2:
        raise UserError("--models needs at least two models, comma-separated")
    torch_device = resolve_device(device)
    targets = [resolve_model(s, runs_dir) for s in specs]
    labels = [t.name for t in targets]
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}:{t.name}" for i, t in enumerate(targets)]
    fitted = {}
    for label, t in zip(labels, targets):
        channels, size = int(getattr(t.model, "in_channels", 3)), int(getattr(t.model, "image_size", 32))
        if stimuli == "test":
            first = targets[0]
            fitted[label] = test_split_stimuli(first.data, first.data_root, first.data_options, n, channels, size)
        else:
            fitted[label] = load_stimuli(stimuli, channels, size)
    _warn(next(iter(fitted.values())).notes)
    layer_list = [x.strip() for x in layers.split(",") if x.strip()]
    folder = check_folder(Path(out) if out else
                          Path(runs_dir) / "rsa-models" / fit_name(f"{'-'.join(t.name for t in targets)}-"
                                                                   f"{Path(stimuli).name}"), "--out")
    progress = StepProgress()
    try:
        payload = run_rsa_models({lab: (t.model, t.source) for lab, t in zip(labels, targets)}, fitted, folder,
                                 layers=layer_list, rdm_method=rdm_method, comparator=comparator,
                                 n_bootstrap=n_bootstrap, seed=seed, device=torch_device,
                                 batch_size=batch_size, progress=progress)
    finally:
        progress.close()
    if as_json:
        print_json(payload)
        return
    for layer, res in payload["results"].items():
        rows = []
        for i, a in enumerate(res["models"]):
            for j, b in enumerate(res["models"]):
                if j > i:
                    rows.append([a, b, _fmt(res["similarity"][i][j]),
                                 f"[{_fmt(res['ci_low'][i][j])}, {_fmt(res['ci_high'][i][j])}]"])
        print_table(f"{layer}: {comparator} between model RDMs ({payload['n_stimuli']} stimuli, {payload['stimuli']})",
                    ["model A", "model B", "similarity", "95% CI"], rows, right=["similarity"])
    print_line(f"results: {folder / 'rsa_models.json'} (figures in {folder / 'figures'})")
