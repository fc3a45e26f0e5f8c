"""A pretraining run: its work directory, model, training loop, checkpoints and callbacks.

`train.py` is the trainer (`train(config, workdir)`); `build.py` turns a run config into
a compiled `model.SelfSupervisedModel` (encoder + objective + online probes, `optim.py`'s
optimizer); `workdir.py` owns the work directory (lock, config identity and resume rules,
checkpoints); `callbacks.py` and `knn_monitor.py` what runs beside `fit`; `loader.py`
turns a run (or a saved encoder) back into a Keras encoder.
"""
