"""The story of a pretraining run: strategy, data, model, resume, then Keras `fit`.

The work directory (`run_config.py`, `checkpoints.py`) says where a run starts
from; callbacks (`callbacks.py`, `knn_monitor.py`, `score_maps.py`) log, checkpoint
and stop it; the model (`model.py`) holds the train step. The data stream is a pure function of (seed, step), so a resumed
run sees exactly the batches the uninterrupted run would have, and a run killed
at any moment (kill -9 included) ends, once rerun, at the same final checkpoint.

The chief holds the work directory's lock for the whole run, mends what a kill
left (`workdir.repair_after_kill`), and writes config.json only once the data
has opened. SIGTERM and a first Ctrl-C checkpoint at the end of the current step
and stop, skipping the epoch-end evaluations (exit codes 143 and 130 in
amdim-train); a second Ctrl-C aborts without it. Progress lines count the steps
actually taken (`progress.py`). Disk full, a read-only
or misplaced work directory become one-line `durable.WorkdirError`s.

Library code: takes a ConfigDict and explicit arguments, never absl FLAGS.
"""

import contextlib
import copy
import os
import shutil
import signal
import warnings

import keras
import tensorflow as tf
from absl import logging

from amdim_tf import config_lib, distribute
from amdim_tf import data as data_lib
from amdim_tf.data import augment, samples
from amdim_tf.errors import UserError
from amdim_tf.methods.nn import count_trainable_params
from amdim_tf.run import callbacks, hparams, score_maps
from amdim_tf.run.build import build_model, resolve_precision
from amdim_tf.run.checkpoints import RunCheckpoint
from amdim_tf.run.health import HealthMonitor
from amdim_tf.run.knn_monitor import KNNMonitor
from amdim_tf.run.lock import WorkdirLock
from amdim_tf.run.progress import TrainProgress, announce_signal
from amdim_tf.run.run_config import prepare_workdir
from amdim_tf.run.workdir import (
    BEST_FILE,
    make_workdir,
    read_best,
    repair_after_kill,
    trim_metrics,
    workdir_storage_error,
)

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a preempted job
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells expect after Ctrl-C
# Said once at the start of a run on unlabelled data (a folder read with data.labels="none").
UNLABELLED_NOTE = (
    "Unlabelled data (data.labels='none'): the online probes and the kNN monitor are off; "
    "the label-free health monitors run. Set data.labels=folders if data.path's "
    "sub-folders are classes."
)


def steps_per_epoch(config, source=None):
    n = data_lib.num_pretrain_examples(source or config.data)
    # Also with a set steps_per_epoch: a batch holding an image twice would pair it
    # with itself as a negative.
    if config.train.batch_size > n:
        raise UserError(
            f"config.train.batch_size={config.train.batch_size} is larger than the "
            f"{n} training examples; lower the batch size."
        )
    return int(config.train.steps_per_epoch) or n // config.train.batch_size


def log_view_pairs(writer, dataset, preset, n, step):
    """A TensorBoard image of the first n augmented pairs (view 1 | view 2)."""
    (v1, v2), _ = next(iter(dataset.take(1)))
    pairs = tf.concat(
        [augment.denormalise(v1[:n], preset), augment.denormalise(v2[:n], preset)], axis=2
    )  # [n, S, 2S, 3]
    with writer.as_default(step=step):
        tf.summary.image("data/view_pairs", tf.clip_by_value(pairs, 0.0, 1.0), max_outputs=n)


def pretrain_dataset(config, strategy, start_step, source=None):
    """The distributed two-view stream; config.train.batch_size is the global batch.

    One input pipeline per worker, each yielding per-replica batches that the
    strategy hands to that worker's replicas in turn, so one global step takes
    (replicas per worker) batches of each pipeline. Keras 3's `fit` (TF backend)
    takes a DistributedDataset as it is (its epoch iterator only distributes plain
    datasets), so the sharding and per-replica batching are ours, not Keras's.
    """
    global_batch = int(config.train.batch_size)

    def dataset_fn(ctx):
        replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        # start_step counts this pipeline's batches, not global steps.
        return data_lib.make_pretrain_dataset(
            source or config.data,
            ctx.get_per_replica_batch_size(global_batch),
            config.seed,
            ctx,
            start_step=start_step * replicas_per_pipeline,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


# Said the moment a first Ctrl-C arrives, while the step it landed in still runs.
CTRL_C_NOTE = (
    "Ctrl-C: stopping at the end of the current training step, then writing its "
    "checkpoint (a second Ctrl-C aborts at that step's end without one)."
)


@contextlib.contextmanager
def _stop_on_signals(stopper):
    """SIGTERM and a first SIGINT ask `stopper` to checkpoint and stop; a second SIGINT
    aborts (KeyboardInterrupt) without the checkpoint, for a user who will not wait.
    Python handles either when the running step ends; the first Ctrl-C is acknowledged
    at once (`progress.announce_signal`).

    Signal handlers can only be set in the main thread; elsewhere that is the caller's job.
    """

    def on_sigint(signum, frame):
        if stopper.signalled == signal.SIGINT:
            raise KeyboardInterrupt
        stopper.request_stop(signum, frame)

    old = {}
    for signum, handler in ((signal.SIGTERM, stopper.request_stop), (signal.SIGINT, on_sigint)):
        with contextlib.suppress(ValueError):  # not the main thread
            old[signum] = signal.signal(signum, handler)
    try:
        with announce_signal(signal.SIGINT, CTRL_C_NOTE):
            yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def _segments(step, steps_per_epoch, epochs):
    """(first epoch, last epoch, steps per epoch) of the fit calls that finish the run.

    A run stopped mid-epoch first finishes that epoch, so epoch ends (eval,
    checkpoints, decay boundaries) fall on the same steps as without the stop.
    """
    epoch, done_in_epoch = divmod(step, steps_per_epoch)
    segments = []
    if done_in_epoch:
        segments.append((epoch, epoch + 1, steps_per_epoch - done_in_epoch))
        epoch += 1
    if epoch < epochs:
        segments.append((epoch, epochs, steps_per_epoch))
    return segments


def eval_dataset(config, source=None):
    """The in-training eval set: the whole eval split, or with train.eval_steps > 0 a
    seeded class-balanced sample of eval_steps batches (files are often sorted by
    class, so the first N images would be a class or two)."""
    batch = int(config.train.eval_batch_size)
    steps = int(config.train.eval_steps)
    data = source or config.data
    if steps <= 0:
        return data_lib.make_eval_dataset(data, config.data.eval_split, batch)
    return data_lib.make_eval_dataset(
        data,
        config.data.eval_split,
        batch,
        max_examples=steps * batch,
        sample_seed=config.seed,
        balanced=True,
    )


def train(config, workdir=None, overwrite=False, extra_callbacks=()):
    """Pretrains as `config` says, resuming from `workdir` if it holds this run.

    Returns (model, dict) with the dict holding "status" ("completed",
    "preempted", "interrupted" (Ctrl-C) or "stopped at the time budget"), "start"
    (where the run started from) and "history" (Keras history dicts of the fit
    calls). Under config.distribute="multiworker" every worker calls this with the
    same workdir; only the chief writes to it, and holds its lock.
    """
    # First: MultiWorkerMirroredStrategy must exist before TF runs any op.
    strategy = distribute.make_strategy(config.distribute)
    # The run records the policy "auto" chose here, in config.json and at start.
    config = copy.deepcopy(config)
    config_lib.validate(config)
    config.precision = resolve_precision(config.precision)
    chief = distribute.is_chief(strategy)
    if workdir and overwrite and distribute.is_multi_worker(strategy):
        # The chief would delete checkpoints that other workers may be restoring.
        raise UserError(
            "--overwrite is not supported with config.distribute='multiworker'; "
            f"delete {workdir} yourself, or use a new --workdir."
        )
    lock = None
    created = bool(workdir) and chief and not os.path.lexists(workdir)
    try:
        if workdir and chief:
            make_workdir(workdir)
            # Before anything is written or deleted (--overwrite): one run per workdir.
            lock = WorkdirLock(workdir).acquire()
        return _train(config, workdir, overwrite, extra_callbacks, strategy, chief)
    except (OSError, tf.errors.OpError) as e:
        error = workdir_storage_error(e, workdir) if workdir else None
        if error is None:
            raise
        raise error from e
    finally:
        if lock is not None:
            lock.release()
        if created:
            # A failed start (a typo, unreadable data) leaves no empty work directory;
            # rmdir removes only an empty one (a run that started wrote config.json), so
            # nothing a run wrote is lost.
            with contextlib.suppress(OSError):
                os.rmdir(workdir)


def _train(config, workdir, overwrite, extra_callbacks, strategy, chief):
    if workdir:  # refuse another run's workdir before the (maybe slow) data opens
        prepare_workdir(config, workdir, overwrite, write=False)
    keras.utils.set_random_seed(config.seed)
    # Opened once: every reader below shares its scan (validation, counts, labels).
    source = data_lib.open_source(config.data)
    spe = steps_per_epoch(config, source)
    epochs = int(config.train.epochs)
    batch = int(config.train.batch_size)
    if batch % strategy.num_replicas_in_sync:
        raise UserError(
            f"config.train.batch_size={batch} (the global batch) must be a multiple "
            f"of the {strategy.num_replicas_in_sync} replicas; change it."
        )
    labelled = source.has_labels()
    if labelled:
        num_classes = data_lib.num_classes(source)
        # Plain dataset: Keras distributes validation data over the replicas itself.
        eval_ds = eval_dataset(config, source)
    else:
        # The probes are built (one class) but never see a label, so they learn nothing.
        num_classes, eval_ds = 1, None
        print(UNLABELLED_NOTE, flush=True)
    if workdir:
        # Only now that the data opened: a failed start leaves no config.json behind.
        prepare_workdir(config, workdir, overwrite, write=chief)
        if chief:
            repair_after_kill(workdir)
    write_dir = None  # non-chief workers save checkpoints to a scratch directory
    if workdir and not chief:
        write_dir = distribute.worker_temp_dir(strategy.cluster_resolver.task_id)
    with strategy.scope():
        model = build_model(config, spe, num_classes)
        run_ckpt = RunCheckpoint(model, workdir, config.train.keep_checkpoints, write_dir)
    start = run_ckpt.restore(config.train.init_checkpoint)
    step = run_ckpt.step
    # A checkpoint at an epoch end whose eval (and best/ update) a kill prevented.
    unevaluated = 0
    if workdir and start.startswith("resumed") and step and step % spe == 0:
        best = read_best(os.path.join(workdir, BEST_FILE))
        if best.get("evaluated_epoch", step // spe) < step // spe:
            unevaluated = step // spe
    if workdir and chief:
        # Records past the checkpoint are logged again by the steps that redo them.
        trim_metrics(workdir, step, drop_eval_at=step if unevaluated else None)
    n_params = count_trainable_params(model.encoder)
    print(
        f"encoder: {n_params:,} trainable parameters; {spe} steps per epoch of {batch} pairs over "
        f"{strategy.num_replicas_in_sync} replica(s), {config.precision}; {start}",
        flush=True,
    )
    result = {"status": "completed", "start": start, "history": []}

    stopper = callbacks.StopController(
        config.train.max_seconds, agreement=distribute.StopAgreement(strategy)
    )
    logger = callbacks.MetricsLogger(
        workdir if chief else None, batch, config.train.log_every_steps
    )
    if logger.writer is not None:  # the HParams tab: this run's config beside its metrics
        hparams.write_hparams(logger.writer, config, os.path.basename(os.path.abspath(workdir)))
    # Before the logger, which writes the value it adds to the epoch's logs.
    knn = KNNMonitor(
        source,
        config.train.knn_examples if labelled else 0,
        seed=config.seed,
        batch_size=config.train.eval_batch_size,
    )
    # Label-free monitors and the collapse alarm; after the kNN, before the checkpointer
    # (which then saves the epoch a collapse stop ends at).
    health = HealthMonitor(
        source,
        config.train.health_examples,
        logger,
        config.train.collapse_rank_fraction,
        config.train.stop_on_collapse,
        seed=config.seed,
        batch_size=config.train.eval_batch_size,
    )
    # Skipped at a stop: Ctrl-C waits for a step and a checkpoint, not an evaluation.
    evaluation = callbacks.EpochEndEvaluation(eval_ds, [knn, health], stopper)
    cbs = [callbacks.StopOnNonFiniteLoss(), stopper, evaluation, logger]
    checkpointer = None
    if workdir:
        best_file = os.path.join(workdir, BEST_FILE) if chief else None
        checkpointer = callbacks.Checkpointer(
            run_ckpt, config.train.checkpoint_every_steps, stopper, best_file
        )
        cbs.append(checkpointer)
    if chief:  # Keras's own progress counts a stopped epoch as whole
        cbs.append(TrainProgress(spe, epochs, config.train.verbose))
    preset = augment.preset_for(config.data.augment, config.data.image_size)
    if (
        logger.writer is not None
        and config.train.visualize_every_steps
        and config.method == "amdim"
    ):
        # Score maps (and mixture assignments) of the same eval images, in TensorBoard.
        if labelled:
            # A class-balanced sample: the CIFAR JPEG copy is sorted by class.
            images, _ = samples.eval_pixels(
                source, config.data.eval_split, 8, config.seed, balanced=True, batch=8
            )
        else:
            images = samples.first_pixels(source, data_lib.UNLABELED_SPLIT, 8)
        every = config.train.visualize_every_steps
        cbs.append(score_maps.VisualizeCallback(images, preset, every, logger.writer, config.seed))
    cbs += list(extra_callbacks)
    # Not itself: a reference cycle would keep the run's model and checkpoint alive
    # until a later garbage collection.
    evaluation.eval_callbacks = [cb for cb in cbs if cb is not evaluation]
    if logger.writer is not None and config.train.log_view_pairs and step == 0:
        views = data_lib.make_pretrain_dataset(source, batch, config.seed)
        log_view_pairs(logger.writer, views, preset, config.train.log_view_pairs, step=0)

    try:
        with _stop_on_signals(stopper), warnings.catch_warnings():
            # Keras warns "Your input ran out of data; interrupting training" at
            # the end of every pass over a dataset of unknown length: here only
            # the eval split, since the pretraining stream repeats forever.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            if unevaluated:
                logging.warning(
                    "Epoch %d was checkpointed but not evaluated; evaluating it.", unevaluated
                )
                _evaluate_epoch(model, unevaluated, [evaluation, logger, checkpointer])
            if run_ckpt.step >= spe * epochs:
                logging.info("Run already complete (%d steps).", run_ckpt.step)
                return model, result
            for first, last, steps in _segments(run_ckpt.step, spe, epochs):
                if stopper.preempted or health.stopped:
                    break
                history = model.fit(
                    pretrain_dataset(config, strategy, run_ckpt.step, source),
                    initial_epoch=first,
                    epochs=last,
                    steps_per_epoch=steps,
                    callbacks=cbs,  # the eval set is evaluated by `evaluation`
                    verbose=0,  # TrainProgress
                    shuffle=False,
                )
                result["history"].append(history.history)
    finally:
        logger.close()
        if write_dir:
            shutil.rmtree(write_dir, ignore_errors=True)
    if health.stopped:
        result["status"] = "stopped at a representation collapse (train.stop_on_collapse)"
    elif stopper.out_of_time:
        result["status"] = "stopped at the time budget"
    elif stopper.interrupted:
        result["status"] = "interrupted"
    elif stopper.preempted:
        result["status"] = "preempted"
    return model, result


def _evaluate_epoch(model, epoch, epoch_end_callbacks):
    """The end-of-epoch eval of `epoch` (1-based), as `fit` would have run it: the
    callbacks' on_epoch_end in order (the evaluation first, then TensorBoard,
    metrics.jsonl, best/)."""
    logs = {}
    for cb in epoch_end_callbacks:
        if cb is not None:
            cb.set_model(model)
            cb.epoch = epoch - 1
            cb.on_epoch_end(epoch - 1, logs)
