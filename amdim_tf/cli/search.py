"""Finds the images of an embedding most like a query image (or each image of a folder).

    amdim-embed --encoder=runs/c10 --out=emb --split=train          # the index
    amdim-search --index=emb --encoder=runs/c10 --query=photo.jpg --k=8 --out=hits.png

--index is an output directory of amdim-embed (r1.npy, index.tsv, embed.json); the
query images go through --encoder, in embed's evaluation view. An index is data: it
never picks the model that runs (the error without --encoder names the one embed.json
records), and an encoder other than the index's own (by the fingerprint of its weights
and preset in embed.json) is refused unless --allow_other_encoder. Prints each query's neighbours
(id, class, cosine), nearest first, and writes a grid PNG of them
(amdim_tf/use/search.py: exact blocked cosine top-k).
"""

from absl import flags

from amdim_tf import cli

_INDEX = flags.DEFINE_string("index", None, "An output directory of amdim-embed.")
_QUERY = flags.DEFINE_string("query", None, "An image file, or a folder of images.")
_K = flags.DEFINE_integer("k", 8, "Neighbours per query.")
_OUT = flags.DEFINE_string("out", "search.png", "Grid PNG of queries and neighbours ('' = none).")
_ENCODER = flags.DEFINE_string(
    "encoder",
    None,
    "Encoder for the queries: the work directory, .keras file or SavedModel export the "
    "index was embedded with (required; the error without it names that encoder).",
)
_ALLOW_OTHER = flags.DEFINE_bool(
    "allow_other_encoder",
    False,
    "Search with an --encoder other than the index's own (same feature size): its "
    "neighbours are then not the index's notion of similar.",
)
flags.mark_flags_as_required(["index", "query"])


def _run():
    cli.check_flag("k", _K.value, _K.value >= 1, "an integer >= 1")
    if _OUT.value:  # checked before the search, which would then fail to write its grid
        cli.check_writable_file("out", _OUT.value)
    from amdim_tf.use import search

    results = search.search_files(
        _INDEX.value,
        _QUERY.value,
        _K.value,
        _OUT.value or None,
        _ENCODER.value,
        allow_other_encoder=_ALLOW_OTHER.value,
    )
    for result in results:
        print(result["query"])
        for n in result["neighbours"]:
            cls = f"  {n['class']}" if n["class"] else ""
            print(f"  {n['cosine']:.4f}  {n['id']}{cls}")
    if _OUT.value:
        print(f"wrote {_OUT.value}")


main = cli.command(__name__, _run)


if __name__ == "__main__":
    main()
