"""Configs: recipes, overrides, validation and learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from robust_kd.config import apply_overrides, build, parse_override
from robust_kd.errors import UserError
from robust_kd.train import list_recipes, resolve_train_config
from robust_kd.train.recipe import ScheduleConfig, TrainConfig
from robust_kd.train.schedule import lr_at


def test_standard_recipe_is_the_cifar100_kd_benchmark_recipe():
    config = resolve_train_config("standard", {}, [])
    assert (config.epochs, config.batch_size) == (240, 64)
    assert config.optimizer.lr == 0.05 and config.optimizer.momentum == 0.9 and config.optimizer.weight_decay == 5e-4
    assert (config.schedule.name == "step" and config.schedule.milestones == [150, 180, 210]
            and config.schedule.gamma == 0.1)
    assert config.augment.crop_padding == 4
    assert resolve_train_config("standard", {"model": "shufflev2"}, []).base_lr() == 0.01
    assert resolve_train_config("standard", {"model": "mobilenetv2"}, []).base_lr() == 0.01
    assert resolve_train_config("standard", {"model": "resnet8x4"}, []).base_lr() == 0.05


def test_every_shipped_recipe_is_valid():
    assert {"quick", "standard"} <= set(list_recipes())
    for recipe in list_recipes():
        resolve_train_config(recipe, {}, []).validate()


def test_energy_kd_recipe_is_its_released_360_epochs_with_six_decays():
    config, standard = resolve_train_config("energy_kd", {}, []), resolve_train_config("standard", {}, [])
    assert config.epochs == 360 and config.schedule.milestones == [150, 180, 210, 240, 270, 300]
    assert (config.optimizer, config.batch_size, config.jpeg) == (standard.optimizer, standard.batch_size,
                                                                  standard.jpeg)


def test_overrides_reach_nested_keys_and_keep_types():
    config = resolve_train_config("quick", {"model": "resnet20"}, ["epochs=7", "optimizer.lr=1e-2",
                                                                   "schedule.milestones=[2, 4]", "augment.hflip=false"])
    assert config.epochs == 7 and config.optimizer.lr == pytest.approx(0.01)
    assert config.schedule.milestones == [2, 4] and config.augment.hflip is False and config.model == "resnet20"
    assert isinstance(resolve_train_config("quick", {}, ["optimizer.lr=1"]).optimizer.lr, float)


def test_unset_command_line_settings_keep_the_recipe_values(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("epochs: 2\ndata: {name: synthetic, options: {classes: 3}}\n")
    config = resolve_train_config(str(recipe), {"data": {"name": None, "root": None}, "seed": None}, [])
    assert config.data.name == "synthetic" and config.data.options == {"classes": 3} and config.seed == 0


@pytest.mark.parametrize("override, message", [
    ("optimizer.lrr=0.1", r"unknown config key 'optimizer.lrr' \(did you mean 'optimizer.lr'\?\)"),
    ("epochz=3", r"unknown config key 'epochz'"),
    ("optimizer.lr=abc", r"config key 'optimizer.lr' expects a number, got 'abc'"),
    ("epochs=2.5", r"config key 'epochs' expects an integer"),
    ("schedule.name=linear", r"config key 'schedule.name' expects one of 'step', 'cosine', 'constant'"),
    ("optimizer.lr=nan", r"finite number"),
    ("optimizer.lr=-1", r"optimizer.lr must be positive"),
    ("epochs", r"write key=value"),
    ("epochs.x=3", r"'epochs' is not a group of keys"),
])
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(UserError, match=message):
        resolve_train_config("quick", {}, [override])


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="unknown recipe 'quik'"):
        resolve_train_config("quik", {}, [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_train_config(str(bad), {}, [])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        resolve_train_config(str(listed), {}, [])


def test_override_parsing_and_application_do_not_mutate_the_input():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("name=resnet8x4") == (["name"], "resnet8x4")
    base = {"optimizer": {"lr": 0.1}}
    assert apply_overrides(base, ["optimizer.lr=0.2"]) == {"optimizer": {"lr": 0.2}} and base["optimizer"]["lr"] == 0.1


def test_build_rejects_wrong_group_types():
    with pytest.raises(UserError, match="'optimizer' must be a mapping"):
        build(TrainConfig, {"optimizer": 3})


def test_step_schedule_decays_at_each_milestone_epoch():
    schedule = ScheduleConfig(name="step", milestones=[150, 180, 210], gamma=0.1)
    assert lr_at(schedule, 0.05, 149.99, 240) == pytest.approx(0.05)
    assert lr_at(schedule, 0.05, 150.0, 240) == pytest.approx(0.005)
    assert lr_at(schedule, 0.05, 185.0, 240) == pytest.approx(0.0005)
    assert lr_at(schedule, 0.05, 239.9, 240) == pytest.approx(0.00005)


def test_cosine_schedule_and_warmup():
    schedule = ScheduleConfig(name="cosine", min_lr=0.0)
    assert lr_at(schedule, 0.1, 0.0, 10) == pytest.approx(0.1)
    assert lr_at(schedule, 0.1, 5.0, 10) == pytest.approx(0.05)
    assert lr_at(schedule, 0.1, 10.0, 10) == pytest.approx(0.0, abs=1e-12)
    warm = ScheduleConfig(name="constant", warmup_epochs=2.0)
    assert lr_at(warm, 0.1, 1.0, 10) == pytest.approx(0.05) and lr_at(warm, 0.1, 2.0, 10) == pytest.approx(0.1)
    assert all(math.isfinite(lr_at(schedule, 0.1, t / 10, 10)) for t in range(101))
