"""Inspects embedded data: near-duplicates, train/test leakage, outliers, likely mislabels.

    amdim-embed --encoder=runs/c10 --out=emb_train --split=train --projector_examples=0
    amdim-embed --encoder=runs/c10 --out=emb_test --split=test --projector_examples=0
    amdim-inspect-data --embeddings=emb_train,emb_test --out=inspection

--embeddings takes one output directory of amdim-embed, or two of the same encoder
(the reference split first, then the split checked against it for leakage). Writes
OUT/report.md, report.json, pairs.csv, outliers.csv, mislabels.csv and PNG grids
(amdim_tf/use/inspect.py explains the data-driven duplicate threshold; --threshold
overrides it). Named inspect_data.py, not inspect.py: a script's folder comes first on
sys.path, and a tools/inspect.py would shadow Python's own `inspect` module.
"""

from absl import flags

from amdim_tf import cli

_EMBEDDINGS = flags.DEFINE_list(
    "embeddings", None, "One embed output, or two: reference (train) then checked (test)."
)
_OUT = flags.DEFINE_string("out", None, "Directory for the report.")
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Near-duplicate cosine (default: chosen from the data, see report.md)."
)
_K = flags.DEFINE_integer("k", 10, "Neighbours for density and label votes.")
_AGREEMENT = flags.DEFINE_float(
    "agreement", 0.8, "Share of the k votes another label needs to flag a likely mislabel."
)
_TOP = flags.DEFINE_integer("top", 24, "Findings shown per PNG grid (0 = no grids).")
flags.mark_flags_as_required(["embeddings", "out"])


def _run():
    # Checked before the embeddings are read: a bad value would fail (or report nothing)
    # only at the end.
    cli.check_flag("k", _K.value, _K.value >= 1, "an integer >= 1")
    cli.check_flag(
        "agreement", _AGREEMENT.value, 0 < _AGREEMENT.value <= 1, "a share of the votes in (0, 1]"
    )
    cli.check_flag("top", _TOP.value, _TOP.value >= 0, "an integer >= 0 (0 = no grids)")
    cli.check_writable_dir("out", _OUT.value)
    from amdim_tf.use import inspect

    summary = inspect.inspect_embeddings(
        _EMBEDDINGS.value,
        _OUT.value,
        threshold=_THRESHOLD.value,
        k=_K.value,
        agreement=_AGREEMENT.value,
        top=_TOP.value,
    )
    c = summary["counts"]
    t = summary["threshold"]
    print(f"near-duplicate threshold: cosine >= {t['cosine']:.4f} ({t['chosen']})")
    for name, n in c["images"].items():
        mis = c["likely_mislabels"].get(name, "skipped (unlabelled)")
        print(
            f"{name}: {n:,} images, {c['near_duplicate_pairs_within'][name]:,} "
            f"near-duplicate pairs, likely mislabels: {mis}"
        )
    if len(c["images"]) == 2:
        print(
            f"across: {c['near_duplicate_pairs_across']:,} pairs; "
            f"{c['leaked_images']:,} leaked images"
        )
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"wrote {', '.join(summary['outputs'])} to {_OUT.value} in {summary['seconds']} s")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
