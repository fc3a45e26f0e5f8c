"""Checks of flag values before any work is done, each a one-line error naming the flag."""

import math
import os

from amdim_tf.cli.runner import fail


def check_flag(name: str, value, ok: bool, expected: str) -> None:
    """A one-line error for --name=value unless `ok`, before any work is done."""
    if not ok:
        fail(f"--{name}={value} is not allowed; expected {expected}.")


def check_positive_finite(name: str, value: float, what: str = "a number") -> None:
    """A one-line error unless --name is finite and > 0 (`inf > 0` holds, so a bare
    `> 0` check lets inf through to fail deep in the work)."""
    check_flag(name, value, value > 0 and math.isfinite(value), f"{what} > 0, finite")


def parse_seeds(values: list[str], name: str = "seeds") -> tuple[int, ...]:
    """Distinct integer seeds >= 0 of a list flag; a one-line error otherwise."""
    shown = ",".join(values)
    try:
        seeds = tuple(int(v) for v in values)
    except ValueError:
        seeds = ()
    check_flag(name, shown, bool(seeds) and min(seeds) >= 0, "integers >= 0, e.g. 1,2,3")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    check_flag(
        name,
        shown,
        not repeated,
        f"distinct seeds ({','.join(map(str, repeated))} repeated; a repeated seed is the "
        "same run again, not another one)",
    )
    return seeds


# Longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
_NAME_MAX = 255


def check_name_lengths(flag: str, path: str) -> None:
    """A one-line error if a component of `path` is longer than a file name may be."""
    for part in os.path.abspath(path).split(os.sep):
        if len(os.fsencode(part)) > _NAME_MAX:
            fail(
                f"--{flag}={path}: the name {part[:20]}... is {len(os.fsencode(part))} bytes; "
                f"file names may be at most {_NAME_MAX} bytes, pass a shorter one."
            )


def check_writable_dir(flag: str, path: str) -> None:
    """A one-line error, before any work, if `path` cannot be (or become) a directory we
    write into: a file in its place, a read-only or unwritable place, a name too long.

    Nothing is created: the nearest existing directory is tried with a temporary file.
    """
    import tempfile

    check_name_lengths(flag, path)
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"is under the file {probe}"
        fail(f"--{flag}={path} {where}, not a directory; pass a directory.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        fail(f"--{flag}={path}: cannot write in {probe} ({e.strerror}); pass a writable directory.")


def check_writable_file(flag: str, path: str) -> None:
    """A one-line error, before any work, if the file `path` cannot be written: a directory
    in its place, or a directory for it that cannot be made or written."""
    check_name_lengths(flag, path)
    if os.path.isdir(path):
        fail(f"--{flag}={path} is a directory; pass a file name, e.g. {flag}.png.")
    check_writable_dir(flag, os.path.dirname(os.path.abspath(path)))
