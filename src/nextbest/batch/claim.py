"""An output directory that a job (`nextbest score`, `nextbest store export`) claims, and replaces only
where it can prove it wrote the files.

`out/_job.json` is the job's record: what the job scores with (compared to decide whether a rerun
resumes), the writer and format below, and `files`, the paths (relative to `out`) of the files the job
writes there. The local engine lists its files before writing any; Spark, whose file names are its own,
once they are written.

The rules, checked before anything is removed or written:
- `out` is never an input: not one of the job's input paths, nor a directory that holds one, nor a path
  inside one (resolved, so links and relative paths count).
- `out` is never a file: a job writes a directory, and replaces nothing else.
- A directory without a record of this writer and format is used only when empty.
- Replacing (`--overwrite`, another job, or a rerun that cannot resume) removes the recorded files (and
  the temporary files beside them) alone, and only when the directory holds nothing else: a file that the
  record does not list stops the job, named, before anything is removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nextbest.errors import NextbestError

JOB_FILE = "_job.json"
WRITER = "nextbest score"
RECORD_FORMAT = 2  # 1: no writer and no list of files (never replaced)
# Files named in an error before "and N more".
SHOWN_FILES = 5


class JobConflictError(NextbestError):
    """The output directory holds something this job must not resume or replace."""


def claim_output(
    out: Path,
    job: dict[str, Any],
    files: Sequence[str],
    inputs: Iterable[Path],
    *,
    overwrite: bool,
    resumable: bool = True,
    writer: str = WRITER,
) -> None:
    """Makes `out` this job's: new, the same job's (resumed, or restarted if not `resumable`), or
    another job's replaced (`overwrite`), under the rules in the module docstring; then records `job`
    and the `files` it will write. `writer` names the command whose outputs these are (another
    command's record is a foreign directory's).

    Raises:
        JobConflictError: a rule forbids it; the message says which, and what to do.
    """
    _refuse_inputs(out, inputs, writer)
    if out.exists() or out.is_symlink():
        previous = _previous_record(out, writer)
        if previous is not None and _job(previous) != job and not overwrite:
            changed = ", ".join(_differences(_job(previous), job))
            raise JobConflictError(
                f"{out} holds another {writer} output (changed: {changed}); pass --overwrite to replace "
                "it, or choose another --out"
            )
        if previous is not None and (overwrite or not resumable or _job(previous) != job):
            _remove_recorded_files(out, previous["files"], writer)
    out.mkdir(parents=True, exist_ok=True)
    record_job(out, job, files, writer)


def record_job(out: Path, job: dict[str, Any], files: Sequence[str], writer: str = WRITER) -> None:
    """Writes the record of `job` and the `files` it writes in `out` (`_job.json`)."""
    record = {**job, "writer": writer, "format": RECORD_FORMAT, "files": sorted(files)}
    _write_text_atomically(json.dumps(record, indent=2, sort_keys=True), out / JOB_FILE)


def written_files(out: Path) -> list[str]:
    """Every file (or link) under `out` but the record, as paths relative to `out`."""
    return [name for name in _entries(out) if name not in _with_temporaries([JOB_FILE])]


def remove_files(out: Path, files: Iterable[str]) -> None:
    """Removes those of `files` (relative to `out`) that exist, with their temporaries, then the folders
    under `out` that this leaves empty."""
    folders: set[Path] = set()
    for name in _with_temporaries(files):
        path = out / name
        path.unlink(missing_ok=True)
        folders.update(parent for parent in path.parents if parent.is_relative_to(out) and parent != out)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def temporary(path: Path) -> Path:
    """Where a file is written before it is renamed to `path`, so that `path` is whole or absent."""
    return path.with_name(f".{path.name}.tmp")


def _refuse_inputs(out: Path, inputs: Iterable[Path], writer: str) -> None:
    where = out.resolve()
    for path in inputs:
        given = path.resolve()
        if where == given or where.is_relative_to(given) or given.is_relative_to(where):
            how = "is" if where == given else ("lies inside" if where.is_relative_to(given) else "holds")
            raise JobConflictError(
                f"--out {out} {how} the input {path}; {writer} never writes over its input: "
                "choose another --out"
            )


def _previous_record(out: Path, writer: str) -> dict[str, Any] | None:
    """The record of the job whose output `out` is; None for an empty directory.

    Raises:
        JobConflictError: `out` is not a directory, or a non-empty one without a record of this writer.
    """
    if not out.is_dir():
        raise JobConflictError(
            f"{out} exists and is not a directory; {writer} writes a directory of files and "
            "never replaces a file: choose another --out"
        )
    record = _read_record(out / JOB_FILE, writer)
    if record is None and any(out.iterdir()):
        raise JobConflictError(
            f"{out} is a directory that does not hold a {writer} output (no {JOB_FILE} written by "
            f"this version of {writer}); refusing to write into it or replace it: choose another --out"
        )
    return record


def _read_record(path: Path, writer: str) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or (record.get("writer"), record.get("format")) != (
        writer,
        RECORD_FORMAT,
    ):
        return None
    files = record.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return record


def _job(record: dict[str, Any]) -> dict[str, Any]:
    """The job a record describes, without what the record adds."""
    return {key: value for key, value in record.items() if key not in ("writer", "format", "files")}


def _remove_recorded_files(out: Path, recorded: list[str], writer: str) -> None:
    """Removes the recorded files of `out`, if it holds nothing else.

    Raises:
        JobConflictError: `out` holds files that the record does not list (none is removed).
    """
    own = _with_temporaries([JOB_FILE, *recorded])
    entries = _entries(out)
    foreign = [name for name in entries if name not in own]
    if foreign:
        shown = ", ".join(foreign[:SHOWN_FILES])
        more = f" and {len(foreign) - SHOWN_FILES} more" if len(foreign) > SHOWN_FILES else ""
        raise JobConflictError(
            f"{out} holds files that {writer} did not write: {shown}{more}; it removes only its "
            "own files, so nothing was removed: move those away, or choose another --out"
        )
    # What is found under `out`, not what the record says: a listed "../x" names nothing found there.
    remove_files(out, [name for name in entries if name not in _with_temporaries([JOB_FILE])])
    remove_files(out, [JOB_FILE])  # last: a removal cut short leaves a record of what is left


def _entries(out: Path) -> list[str]:
    """Every file, link or other non-directory under `out` (links to folders not followed), relative."""
    found = []
    for folder, directories, names in os.walk(out):
        here = Path(folder)
        links = [d for d in directories if (here / d).is_symlink()]
        found += [(here / name).relative_to(out).as_posix() for name in [*names, *links]]
    return sorted(found)


def _with_temporaries(files: Iterable[str]) -> set[str]:
    names = set(files)
    return names | {temporary(Path(name)).as_posix() for name in names}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key} {a!r} → {b!r}")
    return changed


def _write_text_atomically(text: str, path: Path) -> None:
    temporary(path).write_text(text)
    os.replace(temporary(path), path)
