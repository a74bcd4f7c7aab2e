"""Images the user attaches: checked, copied into the tool workspace, then analysed by the real tool.

The copy is what ``analyze_image`` reads (tools only see the workspace), under ``images/``; a name
already taken by another file gets a numbered suffix. The copy is written to a temporary name and
renamed when complete. An image already inside the workspace (``codette ask --image photo.png`` in
the folder the chat works in) is read where it is: nothing is added to the user's folder.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from codette.errors import CodetteError
from codette.fileio import atomic_open

IMAGE_DIR = "images"


def check_image(path: Path | str) -> Path:
    """``path`` if it is a file Pillow can read as an image; a one-line CodetteError otherwise."""
    from PIL import Image, UnidentifiedImageError

    src = Path(path).expanduser()
    if not src.exists():
        raise CodetteError(f"image not found: {src}")
    if not src.is_file():
        raise CodetteError(f"image {src} is not a file")
    try:
        with Image.open(src) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CodetteError(f"{src} is not an image (Pillow: {exc})") from None
    return src


def stage_image(path: Path | str, workspace: Path) -> str:
    """The image's workspace-relative path for the tool, copying it into ``workspace/images/`` if it lies outside."""
    src = check_image(path)
    real, root = src.resolve(), Path(workspace).resolve()
    if root in real.parents and real.stat().st_nlink == 1:  # the tool reads it as is (no link on the resolved path)
        return real.relative_to(root).as_posix()
    folder = Path(workspace) / IMAGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    n = 1
    while dest.exists() and not filecmp.cmp(src, dest, shallow=False):
        n += 1
        dest = folder / f"{src.stem}-{n}{src.suffix}"
    if not dest.exists():
        with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return f"{IMAGE_DIR}/{dest.name}"
