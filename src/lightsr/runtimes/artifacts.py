"""Verified cached artifacts: what lightsr builds for the graph runtimes, recorded and checked before each use.

A cache is a file like any other: a disk error, an interrupted copy, a shared home folder or another user can
change it, and a changed graph runs without complaint — with another network's output. So every artifact lightsr
caches (a whole export, a folder of stage graphs, a seamed export, an OpenVINO compiled blob, and any later kind)
goes through :func:`cached`:

* it is built under a temporary name of this process by ``build(tmp)``, which also checks it (an export against
  the PyTorch network); only then is it renamed into place and its **manifest** written, atomically, beside it
  (``NAME.manifest.json``): the SHA-256 of every file of the artifact and ``built_from``, what it was made from
  (the weights' key, the graph's hash, the precision, the runtime's version…);
* before each use the artifact is verified against its manifest (:func:`verify`): a file missing, added or
  changed, or a manifest made from something else or unreadable, and the artifact is not used — it is removed and
  rebuilt (and re-checked) with a one-line warning on the ``lightsr`` logger; where the rebuild fails its error is
  the one line the user sees.

The manifest guards against accidents and against changes by whatever does not also rewrite the manifest; it is
not a signature (whoever may write the cache folder may write both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightsr import _json
from lightsr._files import write_error
from lightsr.errors import ExportError, LightSRError, first_line

log = logging.getLogger("lightsr")

MANIFEST_SUFFIX = ".manifest.json"
# A manifest lists a few dozen files at most; a larger one is not lightsr's.
MAX_MANIFEST_BYTES = 1 << 20
FORMAT = 1


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(artifact: Path) -> Path:
    """Where the manifest of ``artifact`` (a file or a folder) is kept: beside it."""
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def _files(artifact: Path) -> dict[str, Path]:
    """The files making up ``artifact``: itself, or every file under the folder (by relative POSIX path)."""
    if artifact.is_dir() and not artifact.is_symlink():
        return {p.relative_to(artifact).as_posix(): p for p in sorted(artifact.rglob("*")) if not p.is_dir()}
    return {artifact.name: artifact}


def record(artifact: Path, built_from: dict[str, Any]) -> None:
    """Write ``artifact``'s manifest (its files' SHA-256 and ``built_from``) atomically: call it only once the
    artifact passed its check and stands at its final name."""
    doc = {"format": FORMAT, "artifact": artifact.name, "built_from": built_from,
           "files": {name: sha256_file(p) for name, p in _files(artifact).items()}}
    target = manifest_path(artifact)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(doc, sort_keys=True, indent=1))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def verify(artifact: Path, built_from: dict[str, Any]) -> str | None:
    """Why ``artifact`` may not be used (one phrase), or None when it matches its manifest file for file.

    An artifact with neither files nor manifest gives ``"absent"``.
    """
    manifest = manifest_path(artifact)
    there = artifact.exists() or artifact.is_symlink()
    if not manifest.is_file():
        return "no manifest" if there else "absent"
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return "its manifest is too large"
        doc = _json.loads(manifest.read_bytes())
    except (OSError, ValueError) as e:
        return f"its manifest is unreadable ({first_line(e, 80)})"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        return "its manifest is not lightsr's"
    if doc.get("built_from") != json.loads(json.dumps(built_from)):
        return "its manifest records another source"
    if not there:
        return "it is missing"
    if artifact.is_symlink():
        return "it is a link"
    try:
        files = _files(artifact)
        expected = doc["files"]
        for name in sorted(set(expected) - set(files)):
            return f"{name} is missing"
        for name in sorted(set(files) - set(expected)):
            return f"{name} is not in its manifest"
        for name, p in files.items():
            if sha256_file(p) != expected[name]:
                return f"{name} changed (SHA-256 differs from its manifest)"
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    return None


def remove(artifact: Path) -> None:
    """Remove ``artifact`` and its manifest (the manifest first: never a manifest without its artifact's check)."""
    manifest_path(artifact).unlink(missing_ok=True)
    if artifact.is_dir() and not artifact.is_symlink():
        shutil.rmtree(artifact)
    else:
        artifact.unlink(missing_ok=True)


def cached(artifact: Path, built_from: dict[str, Any], build: Callable[[Path], None], folder: bool = False,
           what: str = "cached graph") -> Path:
    """``artifact`` verified against its manifest, or (re)built by ``build(tmp)`` — which writes and checks the
    artifact at ``tmp`` (an empty folder made beforehand where ``folder``), raising on a failed check — then
    renamed into place and recorded. A tampered or incomplete artifact is rebuilt with a one-line warning."""
    problem = verify(artifact, built_from)
    if problem is None:
        return artifact
    try:
        if problem != "absent":
            log.warning(f"{artifact}: {what} not used, {problem}; rebuilding it")
            remove(artifact)
        artifact.parent.mkdir(parents=True, exist_ok=True)
        tmp = artifact.with_name(f".{artifact.stem}.{os.getpid()}{artifact.suffix}")
        remove(tmp)
        if folder:
            tmp.mkdir()
    except OSError as e:
        raise write_error(artifact, e) from None
    try:
        build(tmp)
        try:
            os.replace(tmp, artifact)
        except OSError:
            # A concurrent process finished the same folder first: use it only if it verifies.
            if not (folder and verify(artifact, built_from) is None):
                raise
            return artifact
        record(artifact, built_from)
    except Exception as e:
        if isinstance(e, LightSRError):
            raise
        if isinstance(e, OSError):  # a full disk, a folder that turned read-only
            raise write_error(artifact, e) from None
        raise ExportError(f"{artifact}: building it failed ({type(e).__name__}: {first_line(e, 300)})") from e
    finally:
        try:
            remove(tmp)
        except OSError:
            pass
    return artifact


def recorded_sha256(artifact: Path) -> str | None:
    """The SHA-256 the manifest records for a one-file ``artifact`` (None without a readable manifest): for a
    caller that reads the file once and checks the very bytes it uses."""
    try:
        doc = _json.loads(manifest_path(artifact).read_bytes()[:MAX_MANIFEST_BYTES + 1])
        value = doc["files"][artifact.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
