"""A plan expanded into its models and its jobs: each job one ordinary ``robust-kd`` command line, with
the jobs it waits for and the file it leaves behind when finished.

Run folders are named by what they are, the same in every plan that holds them, so a plan that grows
(another seed, another method) keeps the runs it had: ``<arch>_seed<N>`` for a model trained alone
(teachers, JPEG-DL models, students trained without a teacher) and
``<student>_<label>_from_<teacher>_seed<N>`` for a distilled student.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .plan import Published, StudyPlan

REPORT_JOB = "report"


@dataclass(frozen=True)
class Settings:
    """What the command line adds to a plan: where the study lives and runs."""

    out: Path
    device: str = "auto"
    data: str | None = None           # instead of the plan's data set
    data_root: str | None = None


@dataclass
class Job:
    id: str                           # stage/name, e.g. "train/resnet20_seed0"
    title: str
    argv: list[str]                   # the robust-kd command line, without 'robust-kd'
    needs: tuple[str, ...] = ()
    output: str = ""                  # a glob under the study folder that the finished job leaves
    after_all: bool = False           # runs once every other job has finished or failed (the report)

    @property
    def verb(self) -> str:
        return self.argv[0]

    def finished(self, out: Path) -> bool:
        return not self.output or any(out.glob(self.output))


@dataclass
class ModelEntry:
    """One trained model of the study, for the report's headline."""

    run: str
    arch: str
    role: str                         # teacher, student, jpegdl or baseline
    seed: int
    group: str                        # the row of the headline (seeds averaged)
    method: str = ""
    teacher: str = ""                 # the teacher's run, for students
    published: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Study:
    plan: StudyPlan
    settings: Settings
    jobs: list[Job] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)

    def job(self, job_id: str) -> Job:
        return next(j for j in self.jobs if j.id == job_id)


def plain_run(arch: str, seed: int) -> str:
    return f"{arch}_seed{seed}"


def student_run(student: str, label: str, teacher: str, seed: int) -> str:
    return f"{student}_{label}_from_{teacher}_seed{seed}"


def _published(number: Published | None) -> dict[str, Any] | None:
    return None if number is None else asdict(number)


def _teacher_seed(plan: StudyPlan, seed: int) -> int:
    """The teacher a student of ``seed`` learns from: the teacher of the same seed if the plan trains one,
    else the plan's first teacher seed."""
    return seed if seed in plan.teacher_seeds else plan.teacher_seeds[0]


class Expander:
    def __init__(self, plan: StudyPlan, settings: Settings) -> None:
        self.study = Study(plan, settings)
        self.plan, self.settings = plan, settings
        out = settings.out
        data = settings.data or plan.data
        root = settings.data_root or plan.data_root
        where = ["--data", data] + (["--data-root", root] if root else [])
        self.common = ["--runs-dir", str(out), "--device", settings.device]
        self.train_args = ["--recipe", plan.recipe, *where, *self.common]
        self.attack_where = ["--data-root", root] if root else []
        self.seen: set[str] = set()

    def add(self, job: Job) -> None:
        if job.id not in self.seen:
            self.seen.add(job.id)
            self.study.jobs.append(job)

    def model(self, entry: ModelEntry) -> None:
        if all(m.run != entry.run for m in self.study.models):
            self.study.models.append(entry)

    # ------------------------------------------------------------------------------------------ training
    def plain(self, arch: str, seed: int, role: str, published: Published | None = None) -> str:
        run = plain_run(arch, seed)
        self.add(Job(f"train/{run}", f"train {arch} (seed {seed})",
                     ["train", "--model", arch, "--name", run, "--seed", str(seed), *self.train_args,
                      *self.plan.overrides], output=f"{run}/summary.json"))
        self.model(ModelEntry(run, arch, role, seed, arch if role != "baseline" else f"{arch} (alone)",
                              published=_published(published)))
        return run

    def students(self) -> None:
        for pair in self.plan.pairs:
            for seed in self.plan.seeds:
                tseed = _teacher_seed(self.plan, seed)
                teacher = self.plain(pair.teacher, tseed, "teacher", pair.published.get("teacher"))
                for spec in self.plan.methods:
                    run = student_run(pair.student, spec.label, pair.teacher, seed)
                    options = [f"distill.options.{k}={_yaml_value(v)}" for k, v in spec.options]
                    self.add(Job(f"distill/{run}", f"distil {pair.student} from {teacher} with {spec.label}",
                                 ["distill", "--teacher", str(self.settings.out / teacher), "--student", pair.student,
                                  "--method", spec.method, "--name", run, "--seed", str(seed),
                                  *_with_recipe(self.train_args, spec.recipe),
                                  *self.plan.overrides, *options], needs=(f"train/{teacher}",),
                                 output=f"{run}/summary.json"))
                    self.model(ModelEntry(run, pair.student, "student", seed,
                                          f"{pair.student} ← {pair.teacher} ({spec.label})", spec.label, teacher,
                                          _published(pair.published.get(spec.label))))
                if "student" in pair.published:        # the published table's student trained alone
                    self.plain(pair.student, seed, "baseline", pair.published["student"])

    def trained_alone(self) -> None:
        from_sensitivity = bool(self.plan.train) and _tables_from_sensitivity(self.plan)
        for entry in self.plan.train:
            role = "jpegdl" if entry.model.startswith("jpegdl_") else "baseline"
            for seed in self.plan.seeds:
                if role == "jpegdl" and from_sensitivity:
                    self.jpegdl_from_plain(entry.model, seed, entry.published)
                else:
                    self.plain(entry.model, seed, role, entry.published)

    def jpegdl_from_plain(self, arch: str, seed: int, published: Published | None) -> None:
        """A JPEG-DL model whose recipe starts its tables from a pretrained plain model's sensitivity (the
        authors' setup): it waits for the plain model of its architecture and seed, trained alone."""
        plain = self.plain(arch.removeprefix("jpegdl_"), seed, "baseline")
        run = plain_run(arch, seed)
        init = f"jpeg.init_checkpoint={self.settings.out / plain / 'checkpoints' / 'last.pt'}"
        self.add(Job(f"train/{run}", f"train {arch} (seed {seed}), its tables from {plain}'s sensitivity",
                     ["train", "--model", arch, "--name", run, "--seed", str(seed), *self.train_args,
                      *self.plan.overrides, init], needs=(f"train/{plain}",), output=f"{run}/summary.json"))
        self.model(ModelEntry(run, arch, "jpegdl", seed, arch, published=_published(published)))

    # ----------------------------------------------------------------------------------------- measuring
    def attacks(self) -> None:
        for spec in self.plan.attacks:
            for m in list(self.study.models):
                size = ["--n", str(spec.n)] if spec.n else []
                norm = ["--norm", spec.norm] if spec.norm else []
                examples = ["--save-examples"] if spec.examples else []
                label = f"{spec.suite}-{spec.norm}" if spec.norm else spec.suite
                self.add(Job(f"attack/{label}/{m.run}", f"attack {m.run} with {spec.suite} (eps {spec.eps})",
                             ["attack", "--model", str(self.settings.out / m.run), "--suite", spec.suite, "--eps",
                              spec.eps, *norm, *size, *examples, *self.attack_where, *self.common],
                             needs=(_trained(m),), output=f"{m.run}/attacks/{spec.suite}-{spec.norm or '*'}-*.json"))

    def transfers(self) -> None:
        spec = self.plan.transfer
        if spec is None:
            return
        groups: list[tuple[str, list[ModelEntry], list[ModelEntry]]] = []
        if spec.among == "all":
            groups.append(("matrix", self.study.models, self.study.models))
        else:
            for teacher in (m for m in self.study.models if m.role == "teacher"):
                students = [m for m in self.study.models if m.teacher == teacher.run]
                groups.append((teacher.run, [teacher], [teacher, *students]))
        for name, sources, targets in groups:
            self.add(Job(f"transfer/{name}", f"transfer among {len(targets)} models ({name})",
                         ["transfer", "--source", _runs(self.settings.out, sources), "--target",
                          _runs(self.settings.out, targets), "--eps", spec.eps, "--n", str(spec.n), "--out",
                          str(self.settings.out / "transfer" / f"{name}.json"), *self.attack_where, *self.common],
                         needs=tuple(sorted({_trained(m) for m in [*sources, *targets]})),
                         output=f"transfer/{name}.json"))

    def rsa(self) -> None:
        spec, adversarial = self.plan.rsa, self.plan.rsa_adversarial
        if adversarial is not None:
            m = next((m for m in self.study.models if m.role == "student"), self.study.models[0])
            self.add(Job(f"rsa-adversarial/{m.run}", f"RSA of clean vs white-box vs black-box examples ({m.run})",
                         ["rsa-adversarial", "--model", str(self.settings.out / m.run), "--stimuli", "test", "--n",
                          str(adversarial.n), "--eps", adversarial.eps, "--queries", str(adversarial.queries),
                          "--n-bootstrap", str(adversarial.resamples), "--n-permutations", str(adversarial.resamples),
                          *self.common], needs=(_trained(m),), output=f"{m.run}/rsa/*/rsa_adversarial.json"))
        if spec is not None:
            for m in self.study.models:
                self.add(Job(f"rsa/{m.run}", f"RSA of {m.run}'s layers with {spec.brain_rdm}",
                             ["rsa", "--model", str(self.settings.out / m.run), "--stimuli", spec.stimuli,
                              "--brain-rdm", spec.brain_rdm, "--n-bootstrap", str(spec.resamples),
                              "--n-permutations", str(spec.resamples), *self.common], needs=(_trained(m),),
                             output=f"{m.run}/rsa/*/rsa.json"))

    def report(self) -> None:
        out = self.settings.out
        self.add(Job(REPORT_JOB, "write the study report",
                     ["report", "--out", str(out / "report"), "--title", f"robust-kd study: {self.plan.name}", "--",
                      str(out)], needs=tuple(j.id for j in self.study.jobs), output="report/report.html",
                     after_all=True))


def _trained(m: ModelEntry) -> str:
    return f"{'distill' if m.role == 'student' else 'train'}/{m.run}"


def _runs(out: Path, models: list[ModelEntry]) -> str:
    return ",".join(str(out / m.run) for m in models)


def _tables_from_sensitivity(plan: StudyPlan) -> bool:
    """Whether the plan's recipe (with its overrides) starts JPEG tables from a pretrained model's sensitivity."""
    from ..config import apply_overrides
    from ..jpeg.config import JpegConfig
    from ..train.recipe import recipe_mapping

    jpeg = apply_overrides(recipe_mapping(plan.recipe), list(plan.overrides)).get("jpeg") or {}
    return isinstance(jpeg, dict) and jpeg.get("init", JpegConfig.init) == "sensitivity" and \
        not jpeg.get("init_checkpoint")


def _with_recipe(argv: list[str], recipe: str | None) -> list[str]:
    out = list(argv)
    if recipe:
        out[out.index("--recipe") + 1] = recipe
    return out


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expand(plan: StudyPlan, settings: Settings) -> Study:
    """Every job of the plan in an order that runs each after the jobs it needs: training, distillation,
    attacks, transfer, RSA, the report."""
    grid = Expander(plan, settings)
    grid.students()
    grid.trained_alone()
    grid.attacks()
    grid.transfers()
    grid.rsa()
    grid.report()
    return grid.study
