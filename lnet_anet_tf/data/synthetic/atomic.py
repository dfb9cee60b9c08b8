"""Write a directory completely or not at all: build it under a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def check_empty_target(output_dir: str) -> None:
    """Raise ValueError unless `output_dir` is absent or an empty directory."""
    if os.path.isfile(output_dir):
        raise ValueError(f"Output path {output_dir} is a file. Pass a directory path that does not exist yet.")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise ValueError(
            f"Output directory {output_dir} is not empty. Pass a new path or delete the directory first."
        )


@contextlib.contextmanager
def atomic_directory(output_dir: str):
    """Yield a temporary directory next to `output_dir` that becomes `output_dir` on success.

    On an exception the temporary directory is removed and `output_dir` is left as
    it was. An empty `output_dir` that already exists is replaced.
    """
    output_dir = os.path.abspath(output_dir)
    check_empty_target(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    # mkdtemp creates the directory readable by its owner only; a dataset is not
    # private.
    os.chmod(temporary, 0o755)
    try:
        yield temporary
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)
        os.rename(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
