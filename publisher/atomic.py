"""The one way files are written: atomically, through a temporary file with a unique name.

Readers see the old file or the new one, never half of either, and writers that race on the same
target (parallel `build` workers all writing `wechat/qr.png`, two pushes, an editor's save) each
use their own temporary file, so none can rename or remove another's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write data (str as UTF-8) to path atomically; create its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as f:
        tmp = Path(f.name)
        try:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_if_changed(path: str | Path, data: bytes, *, fsync: bool = False) -> bool:
    """Write like `atomic_write`, unless the file already holds exactly these bytes: then leave it
    alone (a rebuild touches only what changed; parallel workers write a shared file once).
    Returns whether it wrote."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data, fsync=fsync)
    return True
