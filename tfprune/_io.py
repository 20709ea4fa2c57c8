"""Atomic file writes: a reader never sees a half-written file under its final name."""
import os
import re
import shutil
import uuid


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _leftovers(directory, base):
    """The hidden `.tmp-`/`.old-` siblings of `base` that a killed earlier write of it left behind."""
    pattern = re.compile(r"\.(tmp|old)-[0-9a-f]{8}-" + re.escape(base))
    return [os.path.join(directory, entry) for entry in os.listdir(directory) if pattern.fullmatch(entry)]


def atomic_write(path, write):
    """Run `write(temp)` on a hidden sibling of `path`, then rename it onto `path`.

    The temporary name keeps the final suffix because Keras picks the file format from it. A directory cannot
    be renamed over an existing one, so the old one is first moved aside and deleted only after the swap.
    Siblings a killed earlier write of `path` left are removed first (two writers of one path at once would
    overwrite each other anyway).
    """
    directory, base = os.path.split(os.path.abspath(path))
    for leftover in _leftovers(directory, base):
        _remove(leftover)
    token = uuid.uuid4().hex[:8]
    temp = os.path.join(directory, f".tmp-{token}-{base}")
    try:
        write(temp)
        if os.path.isfile(temp):
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
        if os.path.isdir(temp) or os.path.isdir(path):
            old = os.path.join(directory, f".old-{token}-{base}")
            if os.path.lexists(path):
                os.replace(path, old)
            try:
                os.replace(temp, path)
            except BaseException:
                if os.path.lexists(old):
                    os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise


def atomic_write_file(path, write_file):
    """`atomic_write` for writers that take an open binary file (np.savez, json bytes, savefig)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(temp):
        with open(temp, "wb") as handle:
            write_file(handle)

    atomic_write(path, write)
