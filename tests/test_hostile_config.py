"""The hostile-input catalogue, part: configuration files and options (tests/hostile.py has the harness).

Data set options of the wrong type or out of range, YAML that is too large, too deep or explodes
through aliases (in recipes, suites, overrides and run configs), suite names that are not text,
checkpoint metadata of the wrong type, distillation options outside their declared ranges, and
heads too large to allocate. One case of each kind that could hang in C code or allocate without end
(an alias bomb turned into text, a huge file, a huge allocation) runs in its own process; the rest run here,
where a hang in Python code is still caught by the harness's deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hostile import Case, check
from robust_kd.bounds import Range, out_of_range
from robust_kd.checkpoint import save_checkpoint
from robust_kd.data import dataset_entry, list_datasets
from robust_kd.distill import list_methods
from robust_kd.distill.base import _numbers_without_range, method_entry
from robust_kd.errors import UserError
from robust_kd.models import create_model
from robust_kd.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_yaml_text, read_yaml_file

OWN = {"own_process": True, "seconds": 60}      # could hang in C code (a huge str(), a huge allocation)


# ---------------------------------------------------------------- builders

def _train(*overrides: str, data: str = "synthetic", extra: tuple[str, ...] = ()):
    def make(scratch: Path) -> list[str]:
        return ["train", "--data", data, *extra, "--runs-dir", str(scratch / "runs"), *overrides]
    return make


def _deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_flow_mapping(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


def _deep_block_mapping(depth: int) -> str:
    return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "x: 1\n"


def _alias_bomb(levels: int = 9) -> str:
    """A block mapping whose last key repeats the one before nine times, and so on: 9^levels values."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _flow_alias_bomb(levels: int = 9) -> str:
    parts = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _recipe(text: str, *, distill: bool = False, name: str = "recipe.yaml"):
    def make(scratch: Path) -> list[str]:
        path = scratch / name
        path.write_text(text)
        if distill:
            return _distill_args(scratch, "--recipe", str(path))
        return ["train", "--recipe", str(path), "--runs-dir", str(scratch / "runs")]
    return make


def _big_recipe(scratch: Path) -> list[str]:
    path = scratch / "big.yaml"
    line = "# " + "x" * 98 + "\n"
    with path.open("w") as f:
        f.write("epochs: 1\n")
        for _ in range(50):
            f.write(line * 10_000)      # 50 MB
    return ["train", "--recipe", str(path), "--runs-dir", str(scratch / "runs")]


def _checkpoint(scratch: Path, model_name: str = "resnet8", name: str = "model.pt", **changes: Any) -> Path:
    """A real tiny checkpoint, saved again with metadata fields (or top-level parts, ``part__x``) changed."""
    path = scratch / name
    model = create_model(model_name, 4, in_channels=3, image_size=16)
    save_checkpoint(path, model, {"dataset": {"name": "synthetic"}, "epoch": 1, "test_accuracy": 0.5})
    if changes:
        payload = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if key.startswith("part__"):
                payload[key[len("part__"):]] = value
            else:
                payload["metadata"][key] = value
        torch.save(payload, path)
    return path


def _suite(text: str):
    def make(scratch: Path) -> list[str]:
        (scratch / "suite.yaml").write_text(text)
        return ["attack", "--model", str(_checkpoint(scratch)), "--suite", str(scratch / "suite.yaml"),
                "--runs-dir", str(scratch / "runs")]
    return make


def _show(model_name: str = "resnet8", **changes: Any):
    def make(scratch: Path) -> list[str]:
        return ["models", "--show", str(_checkpoint(scratch, model_name, **changes))]
    return make


def _attack(**changes: Any):
    def make(scratch: Path) -> list[str]:
        return ["attack", "--model", str(_checkpoint(scratch, **changes)), "--runs-dir", str(scratch / "runs")]
    return make


def _distill_args(scratch: Path, *args: str, method: str = "kd", **changes: Any) -> list[str]:
    teacher = _checkpoint(scratch, name="teacher.pt", **changes)
    return ["distill", "--teacher", str(teacher), "--student", "resnet8", "--method", method, "--data", "synthetic",
            "--runs-dir", str(scratch / "runs"), *args]


def _distill(*overrides: str, method: str = "kd", **changes: Any):
    def make(scratch: Path) -> list[str]:
        return _distill_args(scratch, *overrides, method=method, **changes)
    return make


def _run_with_config(config: str):
    """A run folder (a checkpoint and a config.yaml written by hand) attacked by name."""
    def make(scratch: Path) -> list[str]:
        run = scratch / "runs" / "myrun"
        (run / "checkpoints").mkdir(parents=True)
        _checkpoint(run / "checkpoints", name="last.pt")
        (run / "config.yaml").write_text(config)
        return ["attack", "--model", str(run), "--runs-dir", str(scratch / "runs"), "--n", "4"]
    return make


def _imagefolder(*overrides: str):
    def make(scratch: Path) -> list[str]:
        (scratch / "images" / "a").mkdir(parents=True)
        return ["train", "--data", "imagefolder", "--data-root", str(scratch / "images"),
                "--runs-dir", str(scratch / "runs"), *overrides]
    return make


DEEP = "nests lists or mappings more than 50 levels deep"
MANY = r"holds more than 100,000 values \(each alias"
OPTION = "data set 'synthetic': option"
DAMAGED = r"is a damaged robust-kd checkpoint: its metadata field"

CASES = [
    # data.options: declared types and ranges, checked before anything is built
    Case("data option channels=abc", _train("data.options.channels=abc"),
         f"{OPTION} channels must be 1 or 3, got 'abc'"),
    Case("data option noise=abc", _train("data.options.noise=abc"),
         rf"{OPTION} noise must be a finite number in \[0, 5\], got 'abc'"),
    Case("data option channels=[1]", _train("data.options.channels=[1]"),
         rf"{OPTION} channels must be 1 or 3, got \[1\]"),
    Case("data option seed=[1,2]", _train("data.options.seed=[1,2]"),
         rf"{OPTION} seed must be an integer from 0 to 4,294,967,295, got \[1, 2\]"),
    Case("data option train=30000000 (368 GB)", _train("data.options.train=30000000"),
         rf"{OPTION} train must be an integer from 2 to 1,000,000, got 30000000", **OWN),
    Case("data option noise=nan", _train("data.options.noise=.nan"), f"{OPTION} noise must be a finite number"),
    Case("data option noise=inf", _train("data.options.noise=.inf"), f"{OPTION} noise must be a finite number"),
    Case("data option noise=-1", _train("data.options.noise=-1"), rf"{OPTION} noise .*\[0, 5\], got -1"),
    Case("data option size=100000", _train("data.options.size=100000"),
         f"{OPTION} size must be an integer from 8 to 256"),
    Case("data option classes=2.5", _train("data.options.classes=2.5"), f"{OPTION} classes must be an integer"),
    Case("data option seed=true", _train("data.options.seed=true"), f"{OPTION} seed must be an integer"),
    Case("train seed=2^70", _train("seed=1180591620717411303424"), "seed must be an integer from 0 to 4,294,967,295"),
    Case("train --seed -1", _train(extra=("--seed", "-1")), r"--seed.*-1 is not in the range 0<=x<=4294967295"),
    Case("synthetic: a million 256-pixel images", _train("data.options.train=1000000", "data.options.size=256"),
         r"synthetic: 1000000 \+ 64 images of 3×256×256 are .* more than the 50,000,000", **OWN),
    Case("synthetic: fewer images than classes", _train("data.options.train=3"),
         r"train \(3\) must be at least classes"),
    Case("imagefolder option size=abc", _imagefolder("data.options.size=abc"),
         "data set 'imagefolder': option size must be an integer from 8 to 512"),
    Case("imagefolder option test_fraction=1", _imagefolder("data.options.test_fraction=1"),
         r"option test_fraction must be a finite number in \(0, 1\)"),
    Case("imagefolder option grayscale=maybe", _imagefolder("data.options.grayscale=maybe"),
         "option grayscale must be true or false"),
    Case("recipe with data.options.noise: .nan", _recipe("data: {name: synthetic, options: {noise: .nan}}\n"),
         f"{OPTION} noise must be a finite number"),
    Case("distill with data.options.noise=nan", _distill("data.options.noise=.nan"),
         f"{OPTION} noise must be a finite"),
    Case("attack a run whose config.yaml has noise: .nan",
         _run_with_config("model: resnet8\ndata: {name: synthetic, options: {size: 16, noise: .nan}}\n"),
         f"{OPTION} noise must be a finite number", lines_before=True),
    # YAML: size, nesting and alias expansion, for every file and value the CLI reads
    Case("recipe: a list 20,000 deep", _recipe("epochs: " + _deep_list(20_000) + "\n"), DEEP, **OWN),
    Case("recipe: a flow mapping 3,000 deep", _recipe("epochs: " + _deep_flow_mapping(3_000) + "\n"), DEEP, **OWN),
    Case("recipe: a block mapping 600 deep", _recipe(_deep_block_mapping(600)), DEEP),
    Case("recipe: 50 MB", _big_recipe, r"larger than 256 KiB, the limit for a YAML file", **OWN),
    Case("recipe: an alias bomb", _recipe(_alias_bomb()), MANY, **OWN),
    Case("recipe: an alias that contains itself", _recipe("epochs: &x [1, *x]\n"),
         "holds an alias that contains itself"),
    Case("recipe: a date that is no date", _recipe("epochs: 2024-13-45\n"), "holds a value YAML cannot convert"),
    Case("recipe: an integer of 5,000 digits", _recipe("epochs: " + "9" * 5000 + "\n"),
         "holds a value YAML cannot convert"),
    Case("distill recipe: a list 20,000 deep", _recipe("epochs: " + _deep_list(20_000) + "\n", distill=True), DEEP),
    Case("suite: an alias bomb in its name", _suite(_alias_bomb(8) + "name: [" + ", ".join(["*a7"] * 9) + "]\n"
                                                    "attacks:\n  - {attack: pgd, steps: 2}\n"), MANY, **OWN),
    Case("suite: a list 20,000 deep", _suite("attacks: " + _deep_list(20_000) + "\n"), DEEP),
    Case("suite: 50 levels of lists in an attack's settings", _suite("attacks:\n  - {attack: pgd, steps: "
                                                                     + _deep_list(60) + "}\n"), DEEP),
    Case("override: a list 20,000 deep", _train("epochs=" + _deep_list(20_000)), r"override 'epochs=…' " + DEEP),
    Case("override: an alias bomb", _train("data.options.seed=" + _flow_alias_bomb()),
         r"override 'data.options.seed=…' " + MANY, **OWN),
    # suite names name results files: text only
    Case("suite: name is a list", _suite("name: [a, b]\nattacks:\n  - {attack: pgd, steps: 2}\n"),
         r"'name' must be a non-empty text .*got \['a', 'b'\]"),
    Case("suite: name is a number", _suite("name: 42\nattacks:\n  - {attack: pgd, steps: 2}\n"),
         "'name' must be a non-empty text .*got 42"),
    Case("suite: name is empty", _suite("name: ''\nattacks:\n  - {attack: pgd, steps: 2}\n"),
         "'name' must be a non-empty text"),
    # checkpoint metadata, as strictly as the weights
    Case("checkpoint num_classes: 'many'", _show(num_classes="many"),
         rf"{DAMAGED} 'num_classes' must be an integer from 2 to 100,000, got 'many'"),
    Case("checkpoint num_classes: 10^8 (512 GB)", _attack(num_classes=100_000_000),
         rf"{DAMAGED} 'num_classes' must be an integer from 2 to 100,000", **OWN),
    Case("checkpoint num_classes: true", _show(num_classes=True), rf"{DAMAGED} 'num_classes'"),
    Case("checkpoint in_channels: 2", _show(in_channels=2), rf"{DAMAGED} 'in_channels' must be 1 \(grey\) or 3"),
    Case("checkpoint image_size: 'big'", _show(image_size="big"), rf"{DAMAGED} 'image_size' must be an integer from 8"),
    Case("checkpoint image_size: 10^6", _attack(image_size=1_000_000), rf"{DAMAGED} 'image_size' .* to 1,024"),
    Case("checkpoint arch: 42", _show(arch=42), rf"{DAMAGED} 'arch' must name an architecture"),
    Case("checkpoint arch: unknown", _attack(arch="resnet9000"), rf"{DAMAGED} 'arch' .*got 'resnet9000'"),
    Case("checkpoint normalization: std 0", _show(normalization={"mean": [0.5] * 3, "std": [0.0] * 3}),
         rf"{DAMAGED} 'normalization' must be .*std positive"),
    Case("checkpoint normalization: mean nan", _show(normalization={"mean": [float("nan")] * 3, "std": [0.25] * 3}),
         rf"{DAMAGED} 'normalization'"),
    Case("checkpoint normalization: a list", _show(normalization=[0.5, 0.25]), rf"{DAMAGED} 'normalization'"),
    Case("checkpoint input_layer_options: alpha 'x'", _show("jpegdl_resnet8", input_layer_options={"alpha": "x"}),
         rf"{DAMAGED} 'input_layer_options' must map the input layer's options \(alpha, window"),
    Case("checkpoint input_layer_options: an unknown option", _show("jpegdl_resnet8", input_layer_options={"zoom": 2}),
         rf"{DAMAGED} 'input_layer_options'"),
    Case("checkpoint jpeg_tables: text", _show("jpegdl_resnet8", jpeg_tables="tables"), rf"{DAMAGED} 'jpeg_tables'"),
    Case("checkpoint epoch: 'x'", _show(epoch="x"), rf"{DAMAGED} 'epoch' must be an integer"),
    Case("checkpoint test_accuracy: 'high'", _show(test_accuracy="high"), rf"{DAMAGED} 'test_accuracy'"),
    Case("checkpoint dataset: text", _show(dataset="cifar"), rf"{DAMAGED} 'dataset' must be a mapping"),
    Case("checkpoint format_version: 'x'", _show(part__format_version="x"), r"its format_version is 'x', not a number"),
    Case("checkpoint trainer: text", _show(part__trainer="x"), r"damaged robust-kd checkpoint: its 'trainer' is not a"),
    Case("checkpoint metadata: a list", _show(part__metadata=[1, 2]), "incomplete robust-kd checkpoint"),
    Case("distill teacher num_classes: 'many'", _distill(num_classes="many"), rf"{DAMAGED} 'num_classes'"),
    # distillation options by their declared ranges, before training
    Case("distill temperature=-4", _distill("distill.options.temperature=-4"),
         r"distill.options.temperature must lie in \[0.1, 100\], got -4.0 \(kd's default: 4.0\)"),
    Case("distill temperature=0", _distill("distill.options.temperature=0"),
         r"distill.options.temperature must lie in \[0.1, 100\], got 0.0"),
    Case("distill ttm gamma=0", _distill("distill.options.gamma=0", method="ttm"),
         r"distill.options.gamma must lie in \[0.01, 10\]"),
    Case("distill energy_kd temperatures=[2,0,6]", _distill("distill.options.temperatures=[2,0,6]", method="energy_kd"),
         r"distill.options.temperatures\[1\] must lie in \[0.1, 100\], got 0.0"),
    Case("distill ka ka_epsilon=1", _distill("distill.options.ka_epsilon=1", method="ka"),
         r"distill.options.ka_epsilon must lie in \(0, 1\)"),
    Case("distill r2kd prune_rate=1.5", _distill("distill.options.prune_rate=1.5", method="r2kd"),
         r"distill.options.prune_rate must lie in \[0, 1\)"),
    Case("distill kd_weight=-1", _distill("distill.options.kd_weight=-1"), r"kd_weight must lie in \[0, 1000\]"),
    Case("distill dkd warmup_epochs=-1", _distill("distill.options.warmup_epochs=-1", method="dkd"),
         "warmup_epochs must be ≥ 0"),
    Case("distill r2kd cutout_size=0", _distill("distill.options.cutout_size=0", method="r2kd"),
         r"cutout_size must lie in \[1, 512\]"),
    Case("distill temperature=abc", _distill("distill.options.temperature=abc"), "expects a number, got 'abc'"),
    Case("distill temperature=nan", _distill("distill.options.temperature=.nan"), "must be a finite number"),
    # heads too large to allocate
    Case("models --num-classes 100000000", lambda s: ["models", "--num-classes", "100000000"],
         r"--num-classes must be from 2 to 100,000", **OWN),
    Case("models --show --num-classes 100000000",
         lambda s: ["models", "--show", "resnet8", "--num-classes", "100000000", "--runs-dir", str(s / "runs")],
         r"--num-classes must be from 2 to 100,000"),
    Case("models --num-classes 1", lambda s: ["models", "--num-classes", "1"], "--num-classes must be from 2"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_config_is_refused_in_one_line(case, tmp_path, capsys):
    check(case, tmp_path, capsys)


# ---------------------------------------------------------------- the pieces, directly

def test_the_yaml_loader_keeps_ordinary_yaml_and_merge_keys():
    text = "base: &base {lr: 0.1, milestones: [1, 2]}\nrun:\n  <<: *base\n  lr: 0.2\nwhen: '2024-13-45'\n"
    assert load_yaml_text(text, "x") == {"base": {"lr": 0.1, "milestones": [1, 2]},
                                         "run": {"lr": 0.2, "milestones": [1, 2]}, "when": "2024-13-45"}


def test_the_yaml_limits_are_where_they_say():
    assert load_yaml_text(_deep_list(MAX_DEPTH), "x") is not None
    with pytest.raises(UserError, match=DEEP):
        load_yaml_text(_deep_list(MAX_DEPTH + 1), "x")
    # a list of a 270-value list and 368 aliases of it: 1 + 369·271 = 100,000 values written out
    assert MAX_VALUES == 1 + 369 * 271
    just = "[&a [" + ", ".join(["1"] * 270) + "]" + ", *a" * 368 + "]"
    assert len(load_yaml_text(just, "x")) == 369
    with pytest.raises(UserError, match=MANY):
        load_yaml_text(just[:-1] + ", 1]", "x")


def test_a_yaml_file_at_the_size_limit_is_read_and_one_byte_more_is_not(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n" + "#" * (MAX_BYTES - 6) + "\n")
    assert path.stat().st_size == MAX_BYTES and read_yaml_file(path) == {"a": 1}
    path.write_text("a: 1\n" + "#" * (MAX_BYTES - 5) + "\n")
    with pytest.raises(UserError, match="larger than 256 KiB"):
        read_yaml_file(path)


def test_a_syntax_error_names_its_line_and_an_override_falls_back_to_text(tmp_path):
    from robust_kd.config import parse_override

    assert parse_override("name=[unclosed") == (["name"], "[unclosed")
    with pytest.raises(yaml.YAMLError):
        load_yaml_text("a: [1,\n", "x")
    (tmp_path / "bad.yaml").write_text("a: 1\nb: [1,\n")
    with pytest.raises(UserError, match=r"suite file '.*bad.yaml' is not valid YAML at line 3"):
        read_yaml_file(tmp_path / "bad.yaml", "suite file")


def test_every_data_set_declares_every_option_and_refuses_an_undeclared_one():
    for entry in list_datasets():
        assert set(entry.options()) == set(entry.option_specs)
    with pytest.raises(ValueError, match="must declare exactly its loader's options"):
        from robust_kd.data import register_dataset

        register_dataset("nameless", description="", channels=None, size=None, num_classes=None,
                         options={})(lambda size=3: None)
    assert "nameless" not in {e.name for e in list_datasets()}
    assert dataset_entry("synthetic").option_specs["noise"].describe() == "a finite number in [0, 5]"


def test_every_numeric_method_option_declares_a_range_and_the_defaults_lie_in_them():
    for name in list_methods():
        options_class = method_entry(name).cls.Options
        assert _numbers_without_range(options_class) == [], name
        assert out_of_range(options_class()) is None, name


def test_a_range_refuses_nan_inf_and_booleans_and_says_its_ends():
    closed, open_ = Range(0.1, 100), Range(0, 1, low_open=True, high_open=True)
    assert 0.1 in closed and 100 in closed and 1e-3 not in closed
    assert float("nan") not in closed and float("inf") not in Range(0) and True not in Range(0, 2)
    assert 0 not in open_ and 1 not in open_ and 0.5 in open_
    assert (str(closed), str(open_), str(Range(0))) == ("[0.1, 100]", "(0, 1)", "≥ 0")
