"""Finds the images of an embedding most like a query image (or each image of a folder).

    amdim-embed --encoder=runs/c10 --out=emb --split=train          # the index
    amdim-search --index=emb --query=photo.jpg --k=8 --out=hits.png

--index is an output directory of amdim-embed (r1.npy, index.tsv, embed.json); the
query images go through the encoder that embed.json records (or --encoder, which must
give the same feature size), in embed's evaluation view. Prints each query's neighbours
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
    "encoder", None, "Encoder for the queries (default: the one embed.json records)."
)
flags.mark_flags_as_required(["index", "query"])


def _run():
    cli.check_flag("k", _K.value, _K.value >= 1, "an integer >= 1")
    if _OUT.value:  # checked before the search, which would then fail to write its grid
        cli.check_writable_file("out", _OUT.value)
    from amdim_tf.use import search

    results = search.search_files(
        _INDEX.value, _QUERY.value, _K.value, _OUT.value or None, _ENCODER.value
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
