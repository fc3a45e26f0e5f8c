"""Encoder shapes, parameter counts against the official code, and input errors."""

import numpy as np
import pytest

from amdim_tf.methods import AMDIMEncoder
from amdim_tf.methods.nn import count_trainable_params


@pytest.mark.parametrize("size", [32, 64, 128])
def test_output_shapes(size):
    enc = AMDIMEncoder(size, ndf=4, n_rkhs=16, n_depth=2)
    out = enc(np.random.rand(3, size, size, 3).astype("float32"), training=False)
    assert out["r1"].shape == (3, 1, 1, 16)
    assert out["r5"].shape == (3, 5, 5, 16)
    assert out["r7"].shape == (3, 7, 7, 16)
    width = 4 * 4 if size == 32 else 8 * 4
    assert out["h7"].shape == (3, 7, 7, width)
    assert out["h5"].shape == (3, 5, 5, width)


@pytest.mark.parametrize(
    "size,ndf,n_rkhs,depth,expected",
    [
        # Counts of the official PyTorch encoder with its heads (use_bn off).
        (32, 64, 512, 3, 5_011_200),
        (32, 128, 1024, 8, 28_552_704),
        (64, 128, 1024, 3, 57_748_992),
    ],
)
def test_parameter_counts_match_official(size, ndf, n_rkhs, depth, expected):
    enc = AMDIMEncoder(size, ndf, n_rkhs, depth)
    enc.build((None, size, size, 3))
    assert count_trainable_params(enc) == expected


def test_use_bn_adds_batchnorm_parameters():
    plain = AMDIMEncoder(32, 4, 16, 1)
    plain.build((None, 32, 32, 3))
    with_bn = AMDIMEncoder(32, 4, 16, 1, use_bn=True)
    with_bn.build((None, 32, 32, 3))
    assert count_trainable_params(with_bn) > count_trainable_params(plain)


def test_residual_branches_start_at_zero():
    """Second conv of every residual unit is zero at init: each unit is its shortcut."""
    enc = AMDIMEncoder(32, 4, 16, 2)
    enc.build((None, 32, 32, 3))
    zero_init = [v for v in enc.trainable_variables if "conv2" in v.path]
    assert zero_init and all(np.all(v.numpy() == 0) for v in zero_init)


def test_features_depend_on_input():
    enc = AMDIMEncoder(32, 4, 16, 1)
    x = np.random.RandomState(0).rand(4, 32, 32, 3).astype("float32")
    a = enc(x, training=False)["r1"].numpy()
    b = enc(x[::-1].copy(), training=False)["r1"].numpy()
    assert not np.allclose(a, b)


def test_unsupported_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_size.*48"):
        AMDIMEncoder(48, 4, 16, 1)


def test_wrong_channels_or_size_is_rejected():
    enc = AMDIMEncoder(32, 4, 16, 1)
    with pytest.raises(ValueError, match="3\\]"):
        enc(np.zeros((2, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match="expects images of shape"):
        enc(np.zeros((2, 64, 64, 3), "float32"))
