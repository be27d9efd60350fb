"""A study plan file read part by part, every name checked (models, methods, suites, data sets): a mistake
is one line naming the plan's file and line, before any job starts."""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..yamlfile import read_yaml_file
from .plan import (ATTACK_KEYS, DATA_KEYS, METHOD_KEYS, PAIR_KEYS, PLAN_KEYS, PUBLISHED_KEYS, RSA_ADV_KEYS, RSA_KEYS,
                   TRAIN_KEYS, TRANSFER_KEYS, AttackSpec, MethodSpec, Pair, PlainModel, PlanReader, Published,
                   RsaAdversarialSpec, RsaSpec, StudyPlan, TransferSpec)

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")


def _known(r: PlanReader, value: str, where: tuple, names: list[str], what: str, listing: str) -> str:
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise r.fail(where, f"unknown {what} '{value}'; {hint}see '{listing}'")
    return value


def _model(r: PlanReader, value: Any, where: tuple) -> str:
    from ..models import list_models

    return _known(r, r.text(value, where, "a model"), where, list_models(), "model", "robust-kd models")


def _published(r: PlanReader, value: Any, where: tuple, sources: dict[str, str]) -> Published:
    if isinstance(value, dict):
        entry = r.mapping(value, where, PUBLISHED_KEYS, "a published number")
    else:
        raise r.fail(where, "a published number is a mapping {top1: <accuracy in %>, source: <table>, std: <spread>}")
    if "top1" not in entry or "source" not in entry:
        raise r.fail(where, "a published number needs top1 (accuracy in %) and source (where it was printed)")
    source = r.text(entry["source"], (*where, "source"), "source")
    std = entry.get("std")
    return Published(r.number(entry["top1"], (*where, "top1"), "top1", 0, 100), sources.get(source, source),
                     None if std is None else r.number(std, (*where, "std"), "std", 0, 100))


def _pairs(r: PlanReader, raw: Any, labels: list[str], sources: dict[str, str]) -> tuple[Pair, ...]:
    if not isinstance(raw, list):
        raise r.fail(("pairs",), "pairs must be a list of {teacher, student, published}")
    pairs: list[Pair] = []
    for k, item in enumerate(raw):
        where = ("pairs", k)
        entry = r.mapping(item, where, PAIR_KEYS, "a pair")
        if "teacher" not in entry or "student" not in entry:
            raise r.fail(where, "a pair names a teacher and a student (each a model, or a list of them)")
        teachers, students = ([_model(r, m, (*where, key)) for m in r.texts(entry[key], (*where, key), key)]
                              for key in ("teacher", "student"))
        published = r.mapping(entry.get("published") or {}, (*where, "published"),
                              ("teacher", "student", *labels), "published (teacher, student or a method's label)")
        numbers = {str(key): _published(r, value, (*where, "published", str(key)), sources)
                   for key, value in published.items()}
        pairs += [Pair(t, s, numbers) for t in teachers for s in students]
    return tuple(pairs)


def _methods(r: PlanReader, raw: Any) -> tuple[MethodSpec, ...]:
    from ..distill import list_methods

    specs: list[MethodSpec] = []
    items = raw if isinstance(raw, list) else [raw]
    for k, item in enumerate(items):
        where = ("methods", k) if isinstance(raw, list) else ("methods",)
        entry = r.mapping(item, where, METHOD_KEYS, "a method") if isinstance(item, dict) else {"method": item}
        method = _known(r, r.text(entry.get("method"), (*where, "method"), "method"), (*where, "method"),
                        list_methods(), "method", "robust-kd distill --list")
        label = r.text(entry.get("label", method), (*where, "label"), "label")
        if not LABEL.match(label):
            raise r.fail((*where, "label"), f"label '{label}' must be letters, digits, '_', '.' or '-' (≤ 41)")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise r.fail((*where, "options"), "options must be a mapping of the method's options")
        recipe = entry.get("recipe")
        specs.append(MethodSpec(label, method, tuple((str(key), value) for key, value in options.items()),
                                None if recipe is None else r.text(recipe, (*where, "recipe"), "recipe")))
    labels = [s.label for s in specs]
    for k, label in enumerate(labels):
        if labels.count(label) > 1:
            raise r.fail(("methods", k), f"two methods are labelled '{label}'; give each a label of its own")
    return tuple(specs)


def _train(r: PlanReader, raw: Any, sources: dict[str, str]) -> tuple[PlainModel, ...]:
    items = raw if isinstance(raw, list) else [raw]
    models: list[PlainModel] = []
    for k, item in enumerate(items):
        where = ("train", k) if isinstance(raw, list) else ("train",)
        entry = r.mapping(item, where, TRAIN_KEYS, "a model to train") if isinstance(item, dict) else {"model": item}
        published = entry.get("published")
        models.append(PlainModel(_model(r, entry.get("model"), (*where, "model")),
                                 None if published is None else _published(r, published, (*where, "published"),
                                                                           sources)))
    return tuple(models)


def _attacks(r: PlanReader, raw: Any) -> tuple[AttackSpec, ...]:
    from ..robustness import suite_source

    if not isinstance(raw, list):
        raise r.fail(("attacks",), "attacks must be a list of {suite, eps, n, norm, examples}")
    specs = []
    for k, item in enumerate(raw):
        where = ("attacks", k)
        entry = r.mapping(item, where, ATTACK_KEYS, "an attack")
        suite = r.text(entry.get("suite"), (*where, "suite"), "suite")
        try:
            suite_source(suite)
        except UserError as err:
            raise r.fail((*where, "suite"), str(err)) from None
        n = entry.get("n")
        norm = entry.get("norm")
        if norm is not None and norm not in ("Linf", "L2", "L1"):
            raise r.fail((*where, "norm"), f"norm must be Linf, L2 or L1, not {norm!r}")
        if any(s.suite == suite and s.norm == norm for s in specs):
            raise r.fail(where, f"suite '{suite}' appears twice with the same norm; give all its eps in one entry "
                         "(eps: [2/255, 8/255])")
        specs.append(AttackSpec(suite, r.eps(entry.get("eps", "8/255"), (*where, "eps")),
                                None if n is None else r.count(n, (*where, "n"), "n"), norm,
                                bool(entry.get("examples", False))))
    return tuple(specs)


def _data(r: PlanReader, raw: Any) -> tuple[str, str | None]:
    from ..data.registry import list_datasets

    entry = r.mapping(raw, ("data",), DATA_KEYS, "data") if isinstance(raw, dict) else {"name": raw}
    name = _known(r, r.text(entry.get("name"), ("data",), "data"), ("data",),
                  [d.name for d in list_datasets()], "data set", "robust-kd data")
    root = entry.get("root")
    return name, None if root is None else r.text(root, ("data", "root"), "data root")


def _seeds(r: PlanReader, raw: Any, key: str) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    seeds = tuple(r.count(s, (key, k), "a seed", low=0) for k, s in enumerate(items))
    if not seeds or len(set(seeds)) != len(seeds):
        raise r.fail((key,), f"{key} must be distinct whole numbers ≥ 0, at least one")
    return seeds


def _optional(r: PlanReader, raw: dict, key: str, keys: tuple[str, ...], make) -> Any:
    if raw.get(key) is None:
        return None
    return make(r, r.mapping(raw[key], (key,), keys, key))


def _transfer(r: PlanReader, e: dict) -> TransferSpec:
    return TransferSpec(r.count(e.get("n", 200), ("transfer", "n"), "n"),
                        r.eps(e.get("eps", "8/255"), ("transfer", "eps")), _among(r, e.get("among", "all")))


def _rsa_adversarial(r: PlanReader, e: dict) -> RsaAdversarialSpec:
    at = "rsa_adversarial"
    return RsaAdversarialSpec(r.count(e.get("n", 40), (at, "n"), "n", 4), r.eps(e.get("eps", "8/255"), (at, "eps")),
                              r.count(e.get("queries", 1000), (at, "queries"), "queries"),
                              r.count(e.get("resamples", 1000), (at, "resamples"), "resamples", 10))


def _rsa(r: PlanReader, e: dict) -> RsaSpec:
    named = {}
    for key in ("stimuli", "brain_rdm"):     # the shipped set, or a file or folder of the user's
        value = r.text(e.get(key, "rsa92"), ("rsa", key), key)
        if value != "rsa92" and not Path(value).expanduser().exists():
            raise r.fail(("rsa", key), f"{key} '{value}' is neither rsa92 nor an existing file or folder")
        named[key] = value
    return RsaSpec(named["stimuli"], named["brain_rdm"],
                   r.count(e.get("resamples", 1000), ("rsa", "resamples"), "resamples", 10))


def read_plan(r: PlanReader) -> StudyPlan:
    raw = r.mapping(r.raw, (), PLAN_KEYS, "a study plan")
    if "study" not in raw:
        raise r.fail((), "a study plan starts with 'study: <name>' (it names the report)")
    sources = {str(k): r.text(v, ("sources", str(k)), "a source") for k, v in
               r.mapping(raw.get("sources") or {}, ("sources",), tuple(map(str, raw.get("sources") or {})),
                         "sources").items()}
    methods = _methods(r, raw["methods"]) if raw.get("methods") else ()
    data, root = _data(r, raw.get("data", "embedded"))
    seeds = _seeds(r, raw.get("seeds", 0), "seeds")
    plan = StudyPlan(
        name=r.text(raw["study"], ("study",), "study"), path=r.path, description=str(raw.get("description", "")),
        data=data, data_root=root, recipe=r.text(raw.get("recipe", "quick"), ("recipe",), "recipe"),
        overrides=tuple(r.texts(raw["overrides"], ("overrides",), "an override")) if raw.get("overrides") else (),
        seeds=seeds, teacher_seeds=_seeds(r, raw.get("teacher_seeds", seeds[0]), "teacher_seeds"),
        pairs=_pairs(r, raw["pairs"], [m.label for m in methods], sources) if raw.get("pairs") else (),
        methods=methods, train=_train(r, raw["train"], sources) if raw.get("train") else (),
        attacks=_attacks(r, raw["attacks"]) if raw.get("attacks") else (),
        tolerance=r.number(raw.get("tolerance", 1.0), ("tolerance",), "tolerance", 0, 100),
        needs=str(raw.get("needs", "")), lines=r.lines,
    )
    plan.transfer = _optional(r, raw, "transfer", TRANSFER_KEYS, _transfer)
    plan.rsa_adversarial = _optional(r, raw, "rsa_adversarial", RSA_ADV_KEYS, _rsa_adversarial)
    plan.rsa = _optional(r, raw, "rsa", RSA_KEYS, _rsa)
    if methods and not plan.pairs:
        raise r.fail(("methods",), "methods distil students, but the plan has no pairs (teacher → student)")
    if plan.pairs and not methods:
        raise r.fail(("pairs",), "pairs need methods to distil with (e.g. methods: [kd])")
    if not plan.pairs and not plan.train:
        raise r.fail((), "the plan trains nothing: give pairs and methods, or train: [<model>, ...]")
    return plan


def _among(r: PlanReader, value: Any) -> str:
    if value not in ("all", "teachers"):
        raise r.fail(("transfer", "among"), f"among must be 'all' (one matrix among every model) or 'teachers' "
                     f"(one per teacher, its students as targets), not {value!r}")
    return str(value)


def shipped_plans_dir() -> Path:
    return Path(str(resources.files("robust_kd.configs") / "studies"))


def shipped_plans() -> list[str]:
    return sorted(p.stem for p in shipped_plans_dir().glob("*.yaml"))


def plan_path(name_or_path: str) -> Path:
    """A plan file, or the name of one in configs/studies/ (``quick``, ``full``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_plans_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name_or_path, shipped_plans(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"study plan '{name_or_path}' is neither a file nor a shipped plan; {hint}shipped plans: "
                    f"{', '.join(shipped_plans())}")


def load_plan(name_or_path: str) -> StudyPlan:
    """Read and check a plan: its structure and every name in it (models, methods, suites, eps, data)."""
    path = plan_path(name_or_path)
    lines: dict[tuple, int] = {}
    raw = read_yaml_file(path, "study plan", lines)
    return read_plan(PlanReader(path, raw, lines))
