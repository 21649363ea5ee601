"""On-disk cache of solved sweep points.

Each finished point is one compressed ``.npz`` file named by the SHA-256 of its
key. The key contains everything the result depends on: the market parameters,
the solver tolerance, the computation (``"deviation"`` or ``"bracket"``), the
package version and the solver's numerics revision. A new solver revision
therefore misses every old entry instead of returning stale numbers.

An entry stores the table row as JSON text and, optionally, named arrays (the
optimal policy and its stationary distribution). It is written to a temporary
file in the same directory and moved into place with :func:`os.replace`, so a
reader sees either no entry or a complete one, even if the writer is killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# Bumped when the layout of an entry changes; part of every key.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """Return the per-user cache directory of this package (``platformdirs``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("pooling-mdp")) / "points"


def solver_version() -> dict:
    """Return the package version and solver revision that cache keys include."""
    from . import __version__
    from .solver import SOLVER_REVISION

    return {"package_version": __version__, "solver_revision": int(SOLVER_REVISION)}


class PointCache:
    """A directory of solved points, keyed by :meth:`key`.

    Parameters
    ----------
    directory : str or Path
        Where entries are stored; created on the first write.
    version : dict
        Solver version fields added to every key (see :func:`solver_version`).
    """

    def __init__(self, directory, version: dict):
        self.directory = Path(directory)
        self.version = dict(version)

    def key(self, task: str, parameters: dict, tolerance: float) -> dict:
        """Return the full key of a point: what its result depends on."""
        return {
            "cache_format": CACHE_FORMAT,
            "task": task,
            "parameters": dict(parameters),
            "tolerance": float(tolerance),
            **self.version,
        }

    def path(self, key: dict) -> Path:
        """Return the file an entry with this key is stored in."""
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.directory / digest[:2] / f"{digest}.npz"

    def load(self, key: dict):
        """Return ``(row, arrays)`` stored under ``key``, or ``None`` if absent or unreadable.

        An entry that cannot be read (truncated by a full disk, written by
        another format) counts as missing, so the point is solved again.
        """
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key = json.loads(str(data["key_json"]))
                if stored_key != json.loads(json.dumps(key)):
                    return None
                row = json.loads(str(data["row_json"]))
                arrays = {name[len("array_"):]: data[name] for name in data.files
                          if name.startswith("array_")}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
        return row, arrays

    def store(self, key: dict, row: dict, arrays: dict | None = None) -> Path:
        """Write an entry atomically and return its path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        contents = {
            "key_json": np.array(json.dumps(key, sort_keys=True)),
            "row_json": np.array(json.dumps(row, sort_keys=True)),
        }
        for name, value in (arrays or {}).items():
            contents[f"array_{name}"] = np.asarray(value)

        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                np.savez_compressed(stream, **contents)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            # Also on KeyboardInterrupt: never leave a half-written temporary behind.
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
