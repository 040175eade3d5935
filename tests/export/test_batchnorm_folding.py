"""Fold-then-requantize: the folded integer convolution computes BatchNorm(conv) with the same integers up to sign."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gaqat_wrap.export.batchnorm_folding import fold_into_weights


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([4, 8]), with_bias=st.booleans())
def test_folded_integer_layer_equals_batchnorm_after_the_layer(seed, bits, with_bias):
    rng = np.random.default_rng(seed)
    channels, fan_in = 6, 10
    qn, qp = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = rng.integers(qn, qp + 1, (channels, fan_in))
    s = rng.uniform(0.01, 0.1, channels).astype(np.float32)
    bias = rng.normal(size=channels).astype(np.float32) if with_bias else None
    gamma, beta = rng.normal(size=channels), rng.normal(size=channels)
    mean, var, eps = rng.normal(size=channels), rng.uniform(0.5, 2, channels), 1e-5
    folded = fold_into_weights(q, s, bias, gamma=gamma, beta=beta, mean=mean, var=var, eps=eps, weight_range=(-128, 127))
    x = rng.normal(size=(5, fan_in))
    layer = x @ (q * s[:, None]).T + (0 if bias is None else bias)
    expected = (layer - mean) * gamma / np.sqrt(var + eps) + beta
    flipped_min = ((q == -128) & (gamma[:, None] < 0)).sum()  # -(-128) does not fit int8: clamped to 127
    assert folded.clamped == flipped_min
    if not flipped_min:
        np.testing.assert_allclose(x @ (folded.weight_int * folded.weight_scale[:, None]).T + folded.bias, expected, rtol=1e-4,
                                   atol=1e-4)
        assert np.array_equal(folded.weight_int, q * np.sign(gamma)[:, None])
    assert (folded.weight_scale > 0).all() and folded.negative_channels == (gamma < 0).sum()


def test_the_lowest_8_bit_integer_of_a_negative_channel_is_clamped_and_counted():
    folded = fold_into_weights(np.array([[-128, 5]]), np.array([0.5], np.float32), None, gamma=np.array([-1.0]),
                               beta=np.zeros(1), mean=np.zeros(1), var=np.ones(1), eps=0.0, weight_range=(-128, 127))
    assert folded.weight_int.tolist() == [[127, -5]] and folded.clamped == 1


def test_a_zero_gamma_channel_keeps_its_step_size_and_outputs_only_its_bias():
    folded = fold_into_weights(np.array([[3, -2]]), np.array([0.5], np.float32), np.array([1.0], np.float32),
                               gamma=np.array([0.0]), beta=np.array([0.25]), mean=np.zeros(1), var=np.ones(1), eps=1e-5,
                               weight_range=(-8, 7))
    assert folded.weight_int.tolist() == [[0, 0]] and folded.weight_scale.tolist() == [0.5]
    assert folded.bias.tolist() == [0.25]
