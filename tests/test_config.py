"""Config files: seed-format keys, defaults, validation (names an upper layer defines included),
overrides; the one spelling of a suggestion."""

import inspect
import textwrap
from pathlib import Path

import pytest

from mlkd_cache.config import DATASET_NAMES, FIELDS, Config, load_config, parse_override, resolve_config_path
from mlkd_cache.errors import ConfigError
from mlkd_cache.registry import Registry, did_you_mean

L2D_COCO = textwrap.dedent(
    """
    dataset = "coco"

    teacher_pretrained = True

    img_size = 224
    batch_size = 64

    model_t = "resnet101"
    lr_t = 1e-4
    max_epoch_t = 80
    stop_epoch_t = 30

    model_s = "resnet34"
    lr_s = 1e-4
    max_epoch_s = 80
    stop_epoch_s = 80

    criterion_t2s_para = dict(
        name="L2D",
        para=dict(
            lambda_ft=0.0,
            ft_dis=None,
            lambda_le=1.0,
            le_dis=dict(name="LED", para=dict(lambda_cd=100.0, lambda_id=1000.0)),
            lambda_logits=10.0,
            logits_dis=dict(name="MLD", para=dict()),
        ),
    )
    """
)


def write(tmp_path, text, name="cfg.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_l2d_config_loads_with_its_meaning(tmp_path):
    cfg = load_config(write(tmp_path, L2D_COCO))
    assert (cfg.dataset, cfg.img_size, cfg.batch_size) == ("coco", 224, 64)
    assert (cfg.model_t, cfg.lr_t, cfg.max_epoch_t, cfg.stop_epoch_t) == ("resnet101", 1e-4, 80, 30)
    assert cfg.epochs("t") == (80, 30)
    assert cfg.epochs("s") == (80, 80)
    assert cfg.teacher_pretrained is True
    assert cfg.criterion_t2s_para["para"]["le_dis"]["para"] == {"lambda_cd": 100.0, "lambda_id": 1000.0}
    # our own keys take their defaults
    assert cfg.cache == {
        "views": 16,
        "dtype": "float16",
        "fields": "auto",
        "embedding": "positive",
        "shard_size": 4096,
        "images": "none",
        "jpeg_quality": 90,
    }
    assert cfg.transform["cutout"] == 0.5 and cfg.transform["mean"] == (0.0, 0.0, 0.0)


def test_unset_stop_epoch_means_max_epoch():
    cfg = Config({"max_epoch_t": 7})
    assert cfg.epochs("t") == (7, 7)


def test_partial_sub_dict_keeps_other_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "cache = dict(views=4)\ntransform = dict(hflip=0.5)\n"))
    assert cfg.cache["views"] == 4 and cfg.cache["dtype"] == "float16"
    assert cfg.transform["hflip"] == 0.5 and cfg.transform["cutout"] == 0.5


@pytest.mark.parametrize(
    "text, match",
    [
        ("img_sise = 64\n", r"unknown config key 'img_sise' \(did you mean 'img_size'\?\)$"),
        ("lr_tt = 0.1\n", r"unknown config key 'lr_tt' \(did you mean 'lr_t'\?\)$"),
        ("cache = dict(veiws=4)\n", r"unknown config key 'cache.veiws' \(did you mean 'views'\?\)$"),
        (
            "dataset = 'vocc'\n",
            r"^config key 'dataset' must be one of voc, coco, nus, csv, digits, got 'vocc' \(did you mean 'voc'\?\)$",
        ),
        ("dataset = 'imagenet'\n", r"^config key 'dataset' must be one of voc, coco, nus, csv, digits, got 'imagenet'$"),
        (
            "cache = dict(fields=['logits', 'featurs'])\n",
            r"^config key 'cache.fields' names 'featurs' \(did you mean 'features'\?\), not a teacher output; "
            r"choose among features, label_emb, logits, or 'auto'",
        ),
        ("cache = dict(fields=['features'])\n", r"'cache.fields' must hold logits .*; add 'logits'"),
        ("optimizer = 'adma'\n", r"'optimizer' must be one of adam, adamw, got 'adma' \(did you mean 'adam'\?\)$"),
        ("img_size = '224'\n", r"'img_size' must be int, got str '224'"),
        ("batch_size = 2.5\n", r"'batch_size' must be int"),
        ("teacher_pretrained = 1\n", r"'teacher_pretrained' must be bool"),
        ("img_size = 0\n", r"'img_size' must be >= 16, got 0"),
        ("lr_t = -1e-3\n", r"'lr_t' must be > 0"),
        ("max_epoch_t = 5\nstop_epoch_t = 6\n", r"'stop_epoch_t' \(6\) must not exceed 'max_epoch_t' \(5\)"),
        ("cache = dict(views=0)\n", r"'cache.views' must be >= 1, got 0"),
        ("cache = dict(dtype='float64')\n", r"'cache.dtype' must be one of float16, float32"),
        ("transform = dict(std=(1, 0, 1))\n", r"'transform.std' every entry must be > 0"),
        ("transform = dict(mean=(0.5, 0.5))\n", r"'transform.mean' must be 3 numbers"),
        ("loss_t = 'focal'\n", r"'loss_t' must be one of asl, bce, got 'focal'"),
        ("loss_s = 'bcee'\n", r"'loss_s' must be one of asl, bce, got 'bcee' \(did you mean 'bce'\?\)$"),
        (
            "asl_para = dict(gama_neg=2)\n",
            r"config key 'asl_para' has unknown entry 'gama_neg' \(did you mean 'gamma_neg'\?\); valid: gamma_neg, gamma_pos, clip$",
        ),
        ("criterion_t2s_para = dict(name='L2D')\n", r"criterion_t2s_para' must be dict\(name=..., para=dict"),
        (  # the criterion is checked with the rest of the config, before teacher-train starts
            "criterion_t2s_para = dict(name='L2D', para=dict(lambda_logits=1.0, logits_dis=dict(name='LED', para=dict())))\n",
            r"criterion_t2s_para: LED is a label-embedding loss and goes in le_dis, not logits_dis",
        ),
        ("bad_images = 'ignore'\n", r"'bad_images' must be one of error, skip, got 'ignore'"),
        ("dataset_para = dict(bad_images='skip')\n", r"'dataset_para' holds 'bad_images', a top-level key"),
        ("import os\nx = (\n", r"syntax error at line"),
        ("raise RuntimeError('boom')\n", r"failed to run: RuntimeError: boom"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "values, match",
    [
        (dict(dataset="coc"), r"'dataset' must be one of .*, got 'coc' \(did you mean 'coco'\?\)$"),
        (dict(cache=dict(fields=("logits", "label_embs"))), r"names 'label_embs' \(did you mean 'label_emb'\?\)"),
    ],
)
def test_names_of_upper_layers_are_checked_by_from_dict_too(values, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(values)


def test_the_dataset_names_are_the_registered_datasets():
    """config's list (checked at load) and data's registry (what builds them) agree, and the
    registry takes no undeclared name."""
    from mlkd_cache.data import DATASETS

    assert DATASETS.names() == sorted(DATASET_NAMES)
    for name in DATASET_NAMES:
        assert Config.from_dict(dict(dataset=name)).dataset == name
    with pytest.raises(KeyError, match=r"dataset 'mydata' is not declared; add it to mlkd_cache.config.DATASET_NAMES"):
        DATASETS.register("mydata")


def test_the_cache_fields_are_the_teacher_outputs_a_cache_stores():
    """What cache.fields may name at load is what the cache layer stores, each accepted."""
    from mlkd_cache.cache.format import TEACHER_OUTPUTS

    fields = FIELDS["cache"].default["fields"]
    assert fields == "auto"
    for name in TEACHER_OUTPUTS:
        assert Config.from_dict(dict(cache=dict(fields=sorted({"logits", name})))).cache["fields"]
        with pytest.raises(ConfigError, match=f"'{name}x'"):
            Config.from_dict(dict(cache=dict(fields=["logits", f"{name}x"])))
    assert Config.from_dict(dict(cache=dict(fields=list(TEACHER_OUTPUTS)))).cache["fields"] == TEACHER_OUTPUTS


def test_asl_parameters_are_named_once():
    """asl_para's keys are the loss's (losses/hard.py), and the config's defaults are asl()'s."""
    from mlkd_cache.losses.hard import ASL_PARA, asl

    defaults = FIELDS["asl_para"].default
    assert tuple(defaults) == ASL_PARA
    signature = inspect.signature(asl).parameters
    assert all(defaults[k] == signature[k].default for k in ASL_PARA)
    assert Config.from_dict(dict(asl_para=dict(clip=0.0))).asl_para == {"clip": 0.0}


def test_did_you_mean_is_the_one_spelling_of_a_suggestion():
    assert did_you_mean("img_sise", ["img_size", "batch_size"]) == " (did you mean 'img_size'?)"
    assert did_you_mean("zzz", ["img_size"]) == ""
    assert did_you_mean("resnet51", ["resnet50", "resnet152", "wrn50"], n=2) == " (did you mean 'resnet50' or 'resnet152'?)"
    assert (
        did_you_mean("abcdef", ["abcxxx", "abcdeg", "zzzzzz", "abcdxx"], n=3) == " (did you mean 'abcdeg', 'abcdxx' or 'abcxxx'?)"
    )
    with pytest.raises(ConfigError, match=r"^unknown thing 'bx' \(did you mean 'b'\?\); valid: a, b$"):
        registry = Registry("thing")
        registry.register("a")(print)
        registry.register("b")(print)
        registry.get("bx")
    # no module of the package spells a suggestion itself
    package = Path(__file__).resolve().parents[1] / "mlkd_cache"
    spelt = [p.name for p in package.rglob("*.py") if "did you mean" in p.read_text(encoding="utf-8") and p.name != "registry.py"]
    assert spelt == []


def test_config_error_is_also_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        load_config(write(tmp_path, "img_sise = 1\n"))


def test_missing_and_non_python_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "c.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match=r"must be a Python module \(.py\)"):
        load_config(tmp_path / "c.yaml")


def test_overrides_win_and_none_never_overrides(tmp_path):
    path = write(tmp_path, "img_size = 64\nbatch_size = 8\n")
    cfg = load_config(path, {"img_size": 32, "batch_size": None, "cache.views": 2})
    assert (cfg.img_size, cfg.batch_size, cfg.cache["views"], cfg.cache["dtype"]) == (32, 8, 2, "float16")


def test_set_items_apply_none_and_win_over_options(tmp_path):
    """``--set KEY=None`` clears a key (named options use None for "not given")."""
    path = write(tmp_path, "pretrained_t = 'w.pth'\nimg_size = 64\n")
    cfg = load_config(path, {"img_size": 32, "pretrained_t": None}, settings={"pretrained_t": None, "img_size": 48})
    assert (cfg.pretrained_t, cfg.img_size) == (None, 48)


def test_clear_resets_a_key_before_overrides(tmp_path):
    path = write(tmp_path, "max_epoch_t = 80\nstop_epoch_t = 30\n")
    cfg = load_config(path, {"max_epoch_t": 5}, clear=["stop_epoch_t"])
    assert cfg.epochs("t") == (5, 5)


def test_parse_override_literals_and_strings():
    assert parse_override("lr_t=3e-4") == ("lr_t", 3e-4)
    assert parse_override("model_t=resnet50") == ("model_t", "resnet50")
    assert parse_override("transform={'hflip': 0.5}") == ("transform", {"hflip": 0.5})
    assert parse_override("pretrained_t=None") == ("pretrained_t", None)
    # dict(...) as written in config files, nested; other calls stay strings
    assert parse_override(
        "criterion_t2s_para=dict(name='MLD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"
    ) == ("criterion_t2s_para", {"name": "MLD", "para": {"lambda_logits": 10.0, "logits_dis": {"name": "MLD", "para": {}}}})
    assert parse_override("dataset_para=dict(train_size=80)") == ("dataset_para", {"train_size": 80})
    assert parse_override("model_t=open('x')") == ("model_t", "open('x')")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr_t")


def test_round_trip_and_read_only():
    cfg = Config({"img_size": 32, "cache": {"views": 3}})
    again = Config.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(AttributeError):
        cfg.img_size = 64
    assert cfg.replace(cache={"dtype": "float32"}).cache == {**cfg.cache, "dtype": "float32"}


def test_every_field_default_validates():
    cfg = Config({})
    assert set(cfg.to_dict()) == set(FIELDS)


def test_shipped_configs_resolve_by_name():
    path = resolve_config_path("digits/resnet10t_to_test_resnet_l2d.py")
    assert path.is_file()
    assert resolve_config_path("configs/digits/resnet10t_to_test_resnet_l2d.py").resolve() == path.resolve()
