"""What a work directory holds, and mending what a killed run left in it.

A work directory alone resumes a run. It holds the resolved `config.json` and
`config_history.jsonl` (`run_config.py`), `checkpoints/` (the last N) and `best/`
(the checkpoint with the best eval probe accuracy; `checkpoints.py`), `best.json`,
TensorBoard event files, `metrics.jsonl`, and `.lock` while a run trains in it
(`lock.py`). Resume precedence: the latest readable checkpoint in the work directory,
then `config.train.init_checkpoint` (weights only), then scratch
(`checkpoints.RunCheckpoint.restore`).

What a kill can leave behind is repaired at start (`repair_after_kill`): the
checkpoint folders are mended, `metrics.jsonl` loses its torn last line and the
records past the checkpoint the run resumes from (they are logged again, identically),
and unfinished atomic writes are removed.
"""

import glob
import json
import os
import shutil

from absl import logging

from amdim_tf.durable import WorkdirError, repair_jsonl_tail, storage_error, write_bytes
from amdim_tf.errors import UserError
from amdim_tf.run.checkpoints import repair_checkpoint_folder

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.json"
HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = ".lock"
# What a run wrote besides config.json (history included): --overwrite deletes these,
# and a work directory that never got to a checkpoint gives them up to a new config.
RUN_OUTPUTS = ("checkpoints", "best", "train", "validation", METRICS_FILE, BEST_FILE, HISTORY_FILE)
EVENTS_GLOB = "events.out.tfevents.*"


class WorkdirConflictError(UserError):
    """The work directory holds a different run, or another process is training in it."""


def read_best(path: str) -> dict:
    """The best-checkpoint record of a run (`best.json`), or a record every accuracy beats.

    "evaluated_epoch" is the last epoch whose end-of-epoch eval was done: 0 for a run
    without best.json; a record written before the key existed has no such key."""
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"probe/eval_linear_acc": -1.0, "evaluated_epoch": 0}


def remove_run_outputs(workdir: str) -> None:
    """Deletes what a run wrote (config.json aside), TensorBoard event files included."""
    targets = [os.path.join(workdir, name) for name in RUN_OUTPUTS]
    targets += glob.glob(os.path.join(workdir, EVENTS_GLOB))
    for target in targets:
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


def trim_metrics(workdir: str, through_step: int, drop_eval_at: int = None) -> None:
    """metrics.jsonl as the resumed run continues it: no torn line, no unreadable line, no
    record past `through_step` (they are logged again), and no eval record at step
    `drop_eval_at` (its eval is run again)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    repair_jsonl_tail(path)
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue
        is_eval = any(k.startswith("probe/eval_") for k in record)
        if step <= through_step and not (is_eval and step == drop_eval_at):
            kept.append(line)
    if len(kept) != len(lines):
        logging.info(
            "metrics.jsonl: dropping %d records past step %d.", len(lines) - len(kept), through_step
        )
        write_bytes(path, b"".join(kept))


def repair_after_kill(workdir: str) -> None:
    """What a killed run can leave half done, put right (the chief, holding the lock)."""
    for name in ("checkpoints", "best"):
        repair_checkpoint_folder(os.path.join(workdir, name))
    repair_jsonl_tail(os.path.join(workdir, METRICS_FILE))
    for tmp in glob.glob(os.path.join(workdir, "*.tmp")):
        os.remove(tmp)  # unfinished temp files of older versions' atomic writes


def make_workdir(workdir: str) -> None:
    """Creates `workdir`; a one-line WorkdirError if that cannot be done."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--workdir={workdir} is a file, not a directory; pass a directory "
            "(it is created if missing)."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise workdir_storage_error(e, workdir) or e from None


def workdir_storage_error(e: BaseException, workdir: str):
    """`durable.storage_error` for a write of the work directory `workdir` (or None)."""
    return storage_error(e, workdir, flag="--workdir", outcome="rerun the same command to resume")
