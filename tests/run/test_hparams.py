"""The HParams session: a config flattened to dotted keys, written where the scalars go
and read back; a training run records its own config."""

import tensorflow as tf

from amdim_tf import config_lib
from amdim_tf.run import hparams


def test_config_is_flattened_written_and_read_back(tmp_path):
    c = config_lib.make_tiny(config_lib.base_config())
    flat = hparams.flat_hparams(c)
    assert flat["model.ndf"] == 8 and flat["optim.decay_epochs"] == "(250, 280)"
    assert flat["data.source"] == "tfds" and flat["train.stop_on_collapse"] is False
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    writer = tf.summary.create_file_writer(str(tmp_path))
    hparams.write_hparams(writer, c, "trial")
    writer.close()
    back = hparams.read_hparams(str(tmp_path))
    assert back["model.ndf"] == 8 and back["data.source"] == "tfds"
    assert back["train.stop_on_collapse"] is False and back["optim.lr"] == c.optim.lr
