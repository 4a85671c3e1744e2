"""Distiller from the seed format: named, weighted terms; skipped slots; pinned config errors."""

import copy

import pytest
import torch

from mlkd_cache.config import L2D_CRITERION
from mlkd_cache.errors import ConfigError
from mlkd_cache.losses import DISTILL_LOSSES, Distiller, KDBatch
from mlkd_cache.losses.base import check_para
from mlkd_cache.losses.led import class_distance, instance_distance
from mlkd_cache.losses.mld import mld

L2D = L2D_CRITERION  # the seed format of L2D's released COCO config


def config(**para):
    cfg = copy.deepcopy(L2D)
    cfg["para"].update(para)
    return cfg


def batch(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, c, generator=g) < 0.6).double()
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return KDBatch(y=y, z_s=r(n, c), z_t=r(n, c), f_s=r(n, 5), f_t=r(n, 7), e_s=r(n, c, 3), e_t=r(n, c, 2))


def test_seed_l2d_config_gives_weighted_terms():
    b = batch()
    distiller = Distiller.from_config(L2D, num_classes=4, student_embed_dim=3, teacher_embed_dim=2)
    terms = distiller(b)
    tokens = b.positive_tokens()
    assert set(terms) == {"mld", "led_cd", "led_id"} and distiller.names() == ["led_cd", "led_id", "mld"]
    torch.testing.assert_close(terms["mld"], 10.0 * mld(b.z_s, b.z_t))
    torch.testing.assert_close(terms["led_cd"], 100.0 * class_distance(*tokens))
    torch.testing.assert_close(terms["led_id"], 1000.0 * instance_distance(*tokens))
    assert distiller.extra_parameters() == []


@pytest.mark.parametrize("para", [dict(lambda_le=0.0), dict(le_dis=None), dict(lambda_le=0, le_dis=dict(name="nonsense"))])
def test_off_slot_is_not_built(para):
    distiller = Distiller.from_config(config(**para))
    assert distiller.names() == ["mld"] and set(distiller(batch())) == {"mld"}


def test_every_slot_and_feature_losses():
    cfg = config(lambda_ft=2.0, ft_dis=dict(name="RKD", para=dict(w_dist=1.0)), logits_dis=dict(name="PS", para={}))
    terms = Distiller.from_config(cfg)(batch())
    assert set(terms) == {"rkd", "led_cd", "led_id", "ps"}
    assert all(torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize(
    "para, match",
    [
        (dict(logits_dis=dict(name="MDL", para={})), r"logits_dis: unknown distillation loss 'MDL' \(did you mean 'MLD'\?\)"),
        (
            dict(logits_dis=dict(name="LED", para={})),
            r"LED is a label-embedding loss and goes in le_dis, not logits_dis \(.*logits_dis takes MLD, PS",
        ),
        (dict(ft_dis=dict(name="MLD"), lambda_ft=1.0), r"MLD is a logits loss and goes in logits_dis, not ft_dis"),
        (
            dict(le_dis=dict(name="LED", para=dict(lambda_x=1.0))),
            r"le_dis: LED got unknown parameter 'lambda_x'; valid: lambda_cd, lambda_id",
        ),
        (dict(lambda_le2=1.0), r"unknown para key 'lambda_le2' \(did you mean 'lambda_le'\?\); valid: lambda_ft, ft_dis"),
        (dict(lambda_logits=-1.0), r"lambda_logits must be >= 0, got -1.0"),
        (dict(lambda_le="1"), r"lambda_le must be a number, got '1'"),
        (dict(le_dis=dict(name="LED", params={})), r"le_dis has unknown key 'params'; valid: name, para"),
        (dict(le_dis="LED"), r"le_dis must be None or dict\(name=..., para=dict\(...\)\)"),
    ],
    ids=[
        "unknown-name",
        "wrong-slot",
        "wrong-slot-ft",
        "bad-loss-para",
        "bad-para-key",
        "negative",
        "not-number",
        "bad-dis-key",
        "bad-dis",
    ],
)
def test_config_errors(para, match):
    with pytest.raises(ConfigError, match=match):
        Distiller.from_config(config(**para))


def test_missing_lambda_for_a_set_slot():
    cfg = copy.deepcopy(L2D)
    del cfg["para"]["lambda_le"]
    with pytest.raises(ConfigError, match=r"le_dis is set but lambda_le is missing"):
        Distiller.from_config(cfg)


def test_check_para_passes_declared_context_and_reports_missing():
    def factory(num_classes, tau=0.1):
        return None

    assert check_para(factory, "X", {"tau": 0.2}, {"num_classes": 80, "prototypes": None}) == {"tau": 0.2, "num_classes": 80}
    with pytest.raises(ConfigError, match=r"X needs parameter 'num_classes'"):
        check_para(factory, "X", {}, {})


def test_direct_factory_rejects_unknown_key():
    with pytest.raises(ConfigError, match=r"LED got unknown parameter 'lambda_le2'; valid: lambda_cd, lambda_id"):
        DISTILL_LOSSES.get("LED")(lambda_le2=1.0)


def test_registry_has_every_baseline():
    assert {"MLD", "PS", "LED", "RKD", "PKT"} <= set(DISTILL_LOSSES.names())
