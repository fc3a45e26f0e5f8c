"""AMDIM's objective: multiscale InfoNCE across two augmented views (§3.2-3.3).

Bachman, Hjelm & Buchwalter (2019) and the official code's `costs.py`
(`NCE_MI_MULTI`). Three pairs of scales, each in both directions x1 -> x2 and
x2 -> x1:

    1 -> 5   the global feature r1 of one view predicts every r5 location of the other;
    1 -> 7   r1 predicts every r7 location of the other view;
    5 -> 5   one random r5 location of one view predicts every r5 location of the other.

Negatives are every location of every *other* image of the global batch: the
targets are gathered over replicas, so adding replicas never weakens the
objective. The tensor maths (scaled, clipped scores, the penalty, the masked
softmax) is `losses.infonce`.
"""

import keras
import tensorflow as tf

from amdim_tf import distribute, losses

N_R5_LOCATIONS = 25  # the 5x5 map


class AMDIMObjective:
    """nce/1t5 + nce/1t7 + nce/5t5 + loss/reg, each NCE averaged over both directions.

    Args:
        tclip: soft clip of the NCE scores (20 in the paper).
        reg_coeff: weight of the mean squared raw score (the logit penalty).

    Call: (feats1, feats2, seed_generator=...) with the encoder outputs of each
    view ("r1" [b,1,1,D], "r5" [b,5,5,D], "r7" [b,7,7,D]) -> dict of float32
    scalars "total" and one per `metric_names`. "loss/reg" is half the sum of the
    six per-direction penalties, as the official code.
    """

    metric_names = ("nce/1t5", "nce/1t7", "nce/5t5", "loss/reg")

    def __init__(self, tclip: float = 20.0, reg_coeff: float = 0.05):
        self.tclip = tclip
        self.reg_coeff = reg_coeff

    def __call__(self, feats1: dict, feats2: dict, seed_generator=None) -> dict:
        n = tf.shape(feats1["r1"])[0]
        # Targets of the global batch; `offset` is this replica's first row in them.
        trg1, trg2, offset = {}, {}, 0
        for k in ("r5", "r7"):
            trg1[k], offset = distribute.gather_global(
                losses.flatten_locations(feats1[k])
            )  # [B, L, D]
            trg2[k], _ = distribute.gather_global(losses.flatten_locations(feats2[k]))  # [B, L, D]

        # One uniformly random r5 location per image and view, as the official
        # `_sample_src_ftr`; the seed generator's state is checkpointed with the model.
        # Every replica holds the same generator state, so each draws the locations of
        # the whole global batch and keeps its own rows: R replicas then sample exactly
        # what one device would (drawing [2, b] would repeat one replica's draws on all).
        global_n = tf.shape(trg1["r5"])[0]
        loc = keras.random.randint((2, global_n), 0, N_R5_LOCATIONS, seed=seed_generator)  # [2, B]
        loc = loc[:, offset : offset + n]  # [2, b]

        r1_1 = tf.reshape(feats1["r1"], [n, -1])  # [b, D]
        r1_2 = tf.reshape(feats2["r1"], [n, -1])  # [b, D]
        r5_1 = losses.sample_locations(feats1["r5"], loc[0])  # [b, D]
        r5_2 = losses.sample_locations(feats2["r5"], loc[1])  # [b, D]

        def nce(src, trg):  # (loss, reg) of one direction
            return losses.infonce(src, trg, self.tclip, self.reg_coeff, offset)

        pairs = {  # name: (x1 -> x2, x2 -> x1)
            "nce/1t5": (nce(r1_1, trg2["r5"]), nce(r1_2, trg1["r5"])),
            "nce/1t7": (nce(r1_1, trg2["r7"]), nce(r1_2, trg1["r7"])),
            "nce/5t5": (nce(r5_1, trg2["r5"]), nce(r5_2, trg1["r5"])),
        }
        out = {name: 0.5 * (a[0] + b[0]) for name, (a, b) in pairs.items()}
        out["loss/reg"] = 0.5 * tf.add_n([a[1] + b[1] for a, b in pairs.values()])
        out["total"] = out["nce/1t5"] + out["nce/1t7"] + out["nce/5t5"] + out["loss/reg"]
        return out
