"""A pretraining run: its work directory, model, training loop, checkpoints, callbacks,
and the one loader that reads an encoder back.

`train.py` is the trainer (`train(config, workdir)`); `build.py` turns a run config into
a compiled `model.SelfSupervisedModel` (encoder + objective + online probes, `optim.py`'s
optimizer). The work directory: `workdir.py` (its layout and repair after a kill; its
files are written through `amdim_tf/durable.py`), `lock.py` (one run at a time),
`run_config.py` (config.json, identity and resume rules), `checkpoints.py`
(`RunCheckpoint`, discovery, repair, the one restore). Beside `fit`: `callbacks.py`,
`knn_monitor.py` and `score_maps.py` (the visualize callback), with `features.py`
(pooling, l2, kNN). `loader.py` turns any path (work directory, checkpoint, `.weights.h5`,
`.keras`, SavedModel) into an encoder with its preset.
"""
