"""AMDIM's objective: multiscale InfoNCE across two augmented views (§3.2-3.3).

Pairs 1->5, 1->7 and 5->5 (a random r5 location of each image as source), in
both directions, plus the logit penalty; the maths lives in `losses.py`. Targets
are gathered over replicas so negatives span the global batch.
"""

import keras
import tensorflow as tf

from amdim_tf import distribute, losses


class AMDIMObjective:
    """Args:
        tclip: soft clip of the NCE scores (20 in the paper).
        reg_coeff: weight of the mean squared raw score (the logit penalty).
    """

    metric_names = ("nce/1t5", "nce/1t7", "nce/5t5", "loss/reg")

    def __init__(self, tclip=20.0, reg_coeff=0.05):
        self.tclip = tclip
        self.reg_coeff = reg_coeff

    def __call__(self, feats1, feats2, seed_generator):
        n = tf.shape(feats1["r1"])[0]
        trg1, trg2, offset = {}, {}, 0
        for k in ("r5", "r7"):
            trg1[k], offset = distribute.gather_global(losses.flatten_locations(feats1[k]))  # [B, L, D]
            trg2[k], _ = distribute.gather_global(losses.flatten_locations(feats2[k]))       # [B, L, D]
        # One uniformly random r5 location per image and view, as the official
        # `_sample_src_ftr`; the seed generator's state is checkpointed with the model.
        # Every replica holds the same generator state, so each draws the locations of
        # the whole global batch and keeps its own rows: R replicas then sample exactly
        # what one device would (drawing [2, b] would repeat one replica's draws on all).
        global_n = tf.shape(trg1["r5"])[0]
        loc = keras.random.randint((2, global_n), 0, 25, seed=seed_generator)  # [2, B]
        loc = loc[:, offset:offset + n]                                          # [2, b]
        out = losses.amdim_objective(feats1, feats2, loc[0], loc[1], trg1, trg2,
                                     self.tclip, self.reg_coeff, offset)
        return {"total": out["total"], "nce/1t5": out["nce_1t5"], "nce/1t7": out["nce_1t7"],
                "nce/5t5": out["nce_5t5"], "loss/reg": out["reg"]}
