"""Reproducible zips: sorted entries, fixed timestamps and permissions; sizes and hashes."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import zipfile
from pathlib import Path
from typing import Iterator, Mapping, Optional, Tuple

# The earliest time a zip can hold; used unless SOURCE_DATE_EPOCH says otherwise.
ZIP_EPOCH: Tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)

FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755


def zip_timestamp(
    environ: Optional[Mapping[str, str]] = None,
) -> Tuple[int, int, int, int, int, int]:
    """The timestamp every entry gets: ``SOURCE_DATE_EPOCH`` (UTC) if set, else 1980-01-01.

    Zip stores local times with 2-second resolution from 1980 on, so earlier epochs are clamped
    and seconds rounded down to keep the result stable.
    """
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return ZIP_EPOCH
    try:
        epoch = int(raw)
    except ValueError:
        from cachelayer.layer_builder.errors import LayerBuildError

        raise LayerBuildError(
            f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds since 1970; "
            "set it to e.g. $(git log -1 --format=%ct) or unset it"
        ) from None
    t = time.gmtime(max(epoch, 315532800))  # 1980-01-01T00:00:00Z
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec - t.tm_sec % 2)


def _walk(root: Path) -> Iterator[Tuple[str, Path]]:
    """Every directory and file under ``root`` as (archive name, path); dirs end with ``/``."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for d in dirnames:
            yield ((rel / d).as_posix() + "/", Path(dirpath) / d)
        for f in filenames:
            yield ((rel / f).as_posix(), Path(dirpath) / f)


def write_zip(
    root: Path,
    dest: Path,
    *,
    date_time: Tuple[int, int, int, int, int, int] = ZIP_EPOCH,
    compresslevel: int = 6,
) -> None:
    """Zip the tree at ``root`` into ``dest`` so the same tree always gives the same bytes.

    Entries are sorted; files get 0644, or 0755 when any execute bit is set on disk (the
    launcher); directories 0755. Symlinks are stored as the files they point to, since Lambda
    layers are unzipped without them.
    """
    entries = sorted(_walk(root), key=lambda e: e[0])
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        for arcname, path in entries:
            info = zipfile.ZipInfo(arcname, date_time=date_time)
            info.create_system = 3  # Unix, so unzip and Lambda honour the modes below
            if arcname.endswith("/"):
                info.external_attr = ((stat.S_IFDIR | DIR_MODE) << 16) | 0x10
                zf.writestr(info, b"")
                continue
            executable = os.stat(path).st_mode & 0o111
            info.external_attr = (stat.S_IFREG | (EXEC_MODE if executable else FILE_MODE)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=compresslevel)
    os.replace(tmp, dest)


def tree_size(root: Path) -> int:
    """Bytes of all files under ``root``: what the layer costs against the unzipped limit."""
    return sum(os.path.getsize(p) for _, p in _walk(root) if p.is_file())


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def human_size(n: float) -> str:
    """``12.3 MiB``: binary units, as Lambda counts its limits (50 MB = 52,428,800 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
