"""The cache's precisions (cache/codec.py): what each stores and reads back, within the bound of
its rounding, and the error it reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlkd_cache.cache import codec

pytestmark = pytest.mark.numeric


def vectors(seed: int = 0) -> np.ndarray:
    """[6, 3, 40] float32 vectors of very different scales, one all zero, one with a single nonzero entry."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, 3, 40)) * 10.0 ** rng.integers(-4, 4, size=(6, 3, 1))).astype(np.float32)
    x[2, 1] = 0.0
    x[4, 0] = 0.0
    x[4, 0, 7] = -3.5
    return x


def test_int8_rounds_each_vector_to_its_own_scale():
    x = vectors()
    enc = codec.encode(torch.from_numpy(x), "int8")
    assert enc.values.dtype == np.int8 and enc.scales.dtype == np.float32 and enc.scales.shape == (6, 3)
    # max|x| / 127 (a vectorised division may round the last bit either way)
    np.testing.assert_allclose(enc.scales, np.abs(x).max(axis=-1) / 127, rtol=2.0**-23, atol=0)
    assert np.abs(enc.values).max() <= 127 and (np.abs(enc.values).max(axis=-1)[enc.scales > 0] == 127).all()
    back = codec.decode(enc.values, enc.scales, "int8")
    # half a step of the vector's scale, plus float32 rounding of the quotient and the product
    bound = enc.scales[..., None] * (0.5 + 2.0**-20) + 2.0**-23 * np.abs(x)
    assert (np.abs(back - x) <= bound).all()
    np.testing.assert_array_equal(back[2, 1], 0.0)  # a zero vector stays zero
    assert back[4, 0, 7] == -3.5 and (np.delete(back[4, 0], 7) == 0).all()  # its largest entry is exact
    np.testing.assert_array_equal(codec.encode(-x, "int8").values, -enc.values)  # symmetric


def test_bfloat16_keeps_the_upper_half_of_float32():
    x = vectors(1)
    enc = codec.encode(x, "bfloat16")
    assert enc.values.dtype == np.uint16 and enc.scales is None
    back = codec.decode(enc.values, None, "bfloat16")
    np.testing.assert_array_equal(back, torch.from_numpy(x).bfloat16().float().numpy())  # torch's rounding, bit for bit
    assert (np.abs(back - x) <= 2.0**-8 * np.abs(x)).all()  # 8 significant bits: half an ulp is 2^-8 relative


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_ieee_floats_are_stored_as_such(dtype):
    x = vectors(2)
    enc = codec.encode(torch.from_numpy(x).double(), dtype)
    assert enc.scales is None and enc.values.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(codec.decode(enc.values, None, dtype), x.astype(dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_the_reported_error_is_the_error(dtype):
    x = vectors(3)
    enc = codec.encode(x, dtype)
    back = codec.decode(enc.values, enc.scales, dtype).astype(np.float64)
    diff = back - x
    norm = np.linalg.norm(x.astype(np.float64), axis=-1)
    rel = np.where(norm > 0, np.linalg.norm(diff, axis=-1) / np.where(norm > 0, norm, 1), 0.0)
    assert enc.vectors == 18
    assert enc.max_abs == pytest.approx(np.abs(diff).max(), rel=2.0**-20)
    assert enc.rel_sum == pytest.approx(rel.sum(), rel=2.0**-16)
    total = codec.ErrorSum()
    total.add(enc)
    total.add(codec.encode(x[:1], dtype))
    assert total.as_dict()["vectors"] == 21 and total.as_dict()["max_abs"] == enc.max_abs
    assert codec.encode(x, "float32").max_abs == 0.0
