"""Training checkpoints that are complete or invisible.

A checkpoint is a folder `ckpt-<step>/` holding `weights.npz` (every variable of
the networks, optimizers, EMA generator and dropout RNGs, as plain numpy arrays,
so a run checkpointed on one Keras backend resumes on the other), `state.json`
(trainer/run_state.py: step, metrics history, the partial epoch's running sums, and
the architecture and dataset classes a resume must match) and, written last,
`MANIFEST.json` naming every file with its size and SHA-256. The digests are
taken from the bytes as they are written (never by reading the files back), so
a checkpoint costs one pass over a payload whose size is fixed by the
networks, however long the run; `CheckpointWriter` makes that pass beside
training, so the loop pays only for the host copy of its arrays. Readers trust only the manifest: a folder without one, or
whose files disagree with it, is skipped with a warning in favour of the
previous complete checkpoint. Locally the folder is also built under a temp name
and renamed into place; on S3 (trainer/run_storage.py) the manifest is uploaded last.
"""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from trainer.background import Background
from trainer.errors import RESUME_BY_HAND, Diverged, GankitError, UsageError, printable
from trainer.fsutil import atomic_dir, recover_dir

MANIFEST = "MANIFEST.json"
STATE = "state.json"
WEIGHTS = "weights.npz"
FORMAT = 2  # 1: TensorFlow checkpoint files (gankit before the JAX backend)
_NAME = re.compile(r"ckpt-([0-9]{9})")  # fullmatch: `$` alone lets a trailing newline through
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what checkpoint writers name their files


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder's name (`ckpt-000000042` -> 42); None for any other name."""
    m = _NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_of(files: dict[str, tuple[int, str]], step: int) -> dict:
    """The manifest of checkpoint `step` whose files are name -> (size, sha256)."""
    return {"format": FORMAT, "step": step,
            "files": {name: {"size": size, "sha256": digest} for name, (size, digest) in sorted(files.items())}}


class _Digesting:
    """A file being written that hashes what goes in: its digest without reading it back.

    It cannot seek, so zipfile (np.savez) streams each member and its sizes after it
    (a data descriptor) instead of going back to patch headers the digest has already seen.
    """

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.f.write(data)
        self.sha256.update(data)
        n = memoryview(data).nbytes
        self.size += n
        return n

    def tell(self):
        return self.size

    def seek(self, *args):
        raise OSError("not seekable")

    def read(self, *args):  # np.savez takes an object with read() for an open file, not a path
        raise OSError("write-only")

    def flush(self):
        self.f.flush()


def _write_synced(path: Path, fill) -> tuple[int, str]:
    """`fill(file)` writes `path`, which is then synced to disk; returns its (size, sha256)."""
    with open(path, "wb") as f:
        out = _Digesting(f)
        fill(out)
        f.flush()
        os.fsync(f.fileno())  # on disk before the manifest names it: a power cut cannot leave a listed file empty
    return out.size, out.sha256.hexdigest()


def write_checkpoint(directory, step: int, arrays: dict, state: dict, keep: int) -> Path:
    """`arrays` (name -> numpy array) and `state` (JSON) as ckpt-<step>/, complete or invisible.

    A disk that fails (full, read-only, gone) is a one-line error; nothing half-written stays visible.
    """
    directory = Path(directory)
    final = directory / checkpoint_name(step)
    try:
        with atomic_dir(final) as tmp:
            files = {WEIGHTS: _write_synced(tmp / WEIGHTS, lambda f: np.savez(f, **arrays)),
                     STATE: _write_synced(tmp / STATE, lambda f: f.write(json.dumps(state).encode()))}
            manifest = json.dumps(manifest_of(files, step), indent=1).encode()
            _write_synced(tmp / MANIFEST, lambda f: f.write(manifest))
    except OSError as e:
        raise GankitError(f"checkpoint {final} could not be written ({e.strerror or e}); free some space on "
                          f"that disk or choose another --checkpoint-dir, then {RESUME_BY_HAND}") from e
    _verified.add(_identity(final))  # built from the bytes just written: no need to read them back
    prune(directory, keep)
    return final


class CheckpointWriter:
    """Checkpoints written beside training: `save` takes the host copies and returns; the write runs on a thread.

    One write at a time, in order: `save` first waits for the previous one, so at most one extra copy of
    the arrays is held and pruning (which counts only verified checkpoints) sees every earlier one.
    `after(folder)` (the S3 push of a mirrored run) runs on that thread once the folder is complete.
    A write that failed raises its one-line error from the next `save` or `wait`, so a failing disk
    still stops the run. The thread is not a daemon: a process that ends for another reason still
    finishes the write in flight (and an unfinished one is invisible anyway).
    """

    def __init__(self, directory, keep: int, after=None):
        self.directory, self.keep, self.after = Path(directory), keep, after
        self.last: Path | None = None  # the newest checkpoint written (and pushed)
        self._job = Background()

    def save(self, step: int, arrays: dict, state: dict):
        self.wait()
        # Snapshots: the loop goes on changing its state, and an array that borrows memory (a view of a
        # device buffer, a variable read) must not change under the writer.
        state = json.loads(json.dumps(state))
        arrays = {name: a if isinstance(a, np.ndarray) and a.flags.owndata else np.array(a)
                  for name, a in arrays.items()}
        self._job.start(self._write, step, arrays, state, name=f"checkpoint-{step}")

    def _write(self, step, arrays, state):
        # Checked here, beside training: a checkpoint of weights that are no longer numbers would be the one a
        # resume loads, and every later run would start from it.
        broken = next((name for name, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()), None)
        if broken:
            raise Diverged(step, f"{broken} holds NaN or infinity")
        folder = write_checkpoint(self.directory, step, arrays, state, self.keep)
        if self.after is not None:
            self.after(folder)
        self.last = folder

    def wait(self) -> Path | None:
        """Until the pending write (and push) is done; its error, if it failed. Returns the newest checkpoint."""
        self._job.wait()
        return self.last


_verified = set()  # checkpoints this process wrote or verified, by _identity: each is hashed at most once


def _identity(folder: Path):
    """The folder and each file's size and mtime: any change to a file makes it a stranger again."""
    try:
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
        return str(folder.resolve()), tuple(files)
    except OSError:
        return None


def verifies(folder: Path) -> bool:
    """problem(folder) is None, remembered per process so pruning does not re-read every kept checkpoint."""
    identity = _identity(folder)
    if identity is not None and identity in _verified:
        return True
    if problem(folder) is None:
        _verified.add(identity)
        return True
    return False


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None if it is."""
    step = checkpoint_step(folder.name)
    if step is None:
        return f"{folder.name} is not a checkpoint name (ckpt-<9-digit step>)"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (incomplete)"
    except (OSError, ValueError):
        return "corrupted manifest"
    return manifest_problem(manifest, step) or problem_with_files(folder, manifest)


def manifest_problem(manifest, step: int) -> str | None:
    """Why `manifest` cannot describe checkpoint `step`, or None.

    Entries must be plain file names (a manifest from a bucket is untrusted:
    `../x` would be a path outside the checkpoint), and it must list what every
    checkpoint has: state.json and the payload beside it.
    """
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return "corrupted manifest"
    if manifest.get("step") != step:
        return "manifest names another step"
    for name, meta in manifest["files"].items():
        if not _PLAIN.match(name) or name in (".", "..") or name == MANIFEST:
            return f"manifest lists {name!r}, not a plain file name"
        if not isinstance(meta, dict) or not isinstance(meta.get("size"), int) or not isinstance(meta.get("sha256"), str):
            return "corrupted manifest"
    if STATE not in manifest["files"]:
        return "manifest lists no state.json"
    if len(manifest["files"]) < 2:
        return "manifest lists no checkpoint payload beside state.json"
    return None


def problem_with_files(folder: Path, manifest: dict) -> str | None:
    """Why the files in `folder` disagree with `manifest` (already checked by manifest_problem), or None."""
    for name, meta in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != meta["size"] or file_digest(path) != meta["sha256"]:
            return f"file {name} does not match the manifest"
    return None


def checkpoint_folders(directory) -> list[tuple[int, Path]]:
    """Every `ckpt-*` folder, newest first, complete or not."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(step, p) for p in directory.iterdir() if p.is_dir() and (step := checkpoint_step(p.name)) is not None]
    return sorted(found, reverse=True)


CORRUPT = ".corrupt"  # a checkpoint that failed to verify is renamed ckpt-<step>.corrupt: kept, never loaded


def latest_checkpoint(directory, warn=True) -> Path | None:
    """The newest checkpoint that verifies, or None if there are none.

    With `warn` (the training run's own folder) a corrupt one is set aside as
    ckpt-<step>.corrupt, and if corrupt checkpoints exist but none verifies the
    run stops: starting over at step 0 would quietly throw the run away.
    """
    if warn:  # the run's own folder, held by it (trainer.run_setup._lock)
        recover(directory)
    for _, folder in checkpoint_folders(directory):
        reason = problem(folder)
        if reason is None:
            return folder
        if warn:
            aside = set_aside(folder, reason)
            # printable: the folder's path is a file name, which may hold a line break or a terminal control
            print(printable(f"warning: skipping checkpoint {folder}: {reason}; "
                            f"{'set aside as ' + aside.name + ', ' if aside else ''}trying the previous one"),
                  file=sys.stderr)
    if warn and any(Path(directory).glob(f"ckpt-*{CORRUPT}")):
        raise none_verifies(directory)
    return None


def read_checkpoint(folder: Path) -> tuple[dict, dict]:
    """(arrays, state) of a complete checkpoint folder."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise UsageError(f"{folder} was written by an older gankit (TensorFlow checkpoint files, no {WEIGHTS}); "
                         "resume it with that version, or start afresh with another --checkpoint-dir")
    with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, json.loads((folder / STATE).read_text())


def prune(directory, keep: int):
    """Keep the newest `keep` checkpoints that verify; drop older folders, set corrupt ones aside.

    Only a verified checkpoint counts towards `keep`: counting any folder with a
    manifest let newer corrupt ones push out every good checkpoint just written.
    """
    for stale in Path(directory).glob(f".ckpt-*{DROPPED}"):  # a prune killed mid-delete
        shutil.rmtree(stale, ignore_errors=True)
    kept = 0
    for _, folder in checkpoint_folders(directory):
        if kept >= keep:
            drop(folder)
        elif verifies(folder):
            kept += 1
        else:
            set_aside(folder, problem(folder) or "")


DROPPED = ".dropped"


def recover(directory):
    """Clear up after a write or prune that was killed: a checkpoint that atomic_dir had set aside when the kill
    came between its two renames is put back (it is complete; resuming from an older one would lose its steps),
    then the hidden temp folders of writes cut short and of drops cut short are removed: each holds up to a whole
    checkpoint, and a write of another step never sweeps them. Called when a run starts (latest_checkpoint), before
    anything writes there: a write in flight, another run's too, is never swept from under it later."""
    directory = Path(directory)
    for name in {p.name[1:].split(".tmp-")[0] for p in directory.glob(".ckpt-*.tmp-*")}:
        recover_dir(directory / name)  # what atomic_dir itself clears up for the next write of that step
    for stale in directory.glob(f".ckpt-*{DROPPED}"):
        shutil.rmtree(stale, ignore_errors=True)


def drop(folder: Path):
    """Delete a checkpoint folder so that no moment shows it half-deleted: it is hidden first, then removed."""
    hidden = folder.with_name(f".{folder.name}{DROPPED}")
    shutil.rmtree(hidden, ignore_errors=True)  # left by a drop that was killed
    try:
        os.replace(folder, hidden)
    except FileNotFoundError:  # another worker on this machine dropped it first
        return
    shutil.rmtree(hidden, ignore_errors=True)


def set_aside(folder: Path, reason: str) -> Path | None:
    """Rename a checkpoint that has a manifest but does not verify; one without a manifest is just incomplete."""
    if reason.startswith("no manifest"):
        return None
    aside = folder.with_name(folder.name + CORRUPT)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(folder, aside)
    except FileNotFoundError:  # another worker on this machine set it aside first
        pass
    return aside


def none_verifies(where) -> GankitError:
    where = str(where).rstrip("/")
    return GankitError(f"no checkpoint in {where} verifies (the corrupt ones are set aside as ckpt-*{CORRUPT}); "
                       f"restore a good copy, or delete {where}/ckpt-*{CORRUPT} to start again from step 0")


def architecture(cfg, num_classes: int, image_shape, class_names=()) -> dict:
    """What a checkpoint's networks depend on, and what their labels mean (MNIST's and Zalando's networks
    have the same shapes: only the class names tell a digit from a coat); recorded in its state and
    compared before resuming."""
    return {"model": cfg.model, "preset": cfg.preset, "z_dim": cfg.z_dim, "image_shape": [int(v) for v in image_shape],
            "num_classes": int(num_classes), "class_names": [str(c) for c in class_names]}


def _recorded(folder: Path, key: str) -> dict | None:
    """What the checkpoint's state.json records under `key`, when it is a dict; read before the weights,
    so a mismatch is refused before any array loads."""
    try:
        recorded = json.loads((folder / STATE).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def schedule(global_batch: int, steps_per_epoch: int, images: int) -> dict:
    """What a checkpoint's step count means: resuming at another batch or epoch length breaks data order and epochs,
    and so does another dataset size with the same epoch length (each epoch's order is a permutation of it)."""
    return {"global_batch": int(global_batch), "steps_per_epoch": int(steps_per_epoch), "images": int(images)}


def check_schedule(folder: Path, wanted: dict):
    """Refuse, in one line, to resume a checkpoint written at another global batch, epoch length or dataset size."""
    recorded = _recorded(folder, "schedule")
    if not recorded or recorded == {k: v for k, v in wanted.items() if k in recorded}:  # older ones lack keys
        return

    def describe(s):
        images = f" over {s['images']} images" if "images" in recorded else ""
        return f"a global batch of {s.get('global_batch')}, {s.get('steps_per_epoch')} steps per epoch{images}"

    raise UsageError(f"checkpoint {folder} was written at {describe(recorded)}; this run has {describe(wanted)}. "
                     "Resume with its --batch-size (and the same instance count and dataset), or start fresh with "
                     "another --checkpoint-dir or --output-dir")


# What the networks learn by besides their shapes: a resume must keep these, or the steps after it belong to
# another experiment (another data order and noise, another loss or average) under the same name. The learning
# rates are left out on purpose: a resume trains at the command's (trainer.steps.keep_command_learning_rates).
RECIPE = ("seed", "loss", "smooth", "beta1", "beta2", "aux_weight", "aux_g_weight", "ema")


def recipe(cfg) -> dict:
    """The resolved recipe of `cfg` (RECIPE's fields), recorded in a checkpoint's state and compared on resume."""
    return {name: getattr(cfg, name) for name in RECIPE}


def check_recipe(folder: Path | None, wanted: dict, run_config: dict | None = None):
    """Refuse, in one line naming the option, to resume a checkpoint trained with another recipe. A checkpoint
    from before the recipe was recorded is compared with `run_config` instead (the config its run.json records,
    which every gankit has written at each start); keys neither records are not compared."""
    recorded, source = None if folder is None else _recorded(folder, "recipe"), f"its checkpoint {folder} records it"
    if folder is not None and recorded is None and isinstance(run_config, dict):
        recorded = run_config
        source = f"its run.json records it; its checkpoint {folder}, from an older gankit, records none"
    for name in RECIPE:
        if recorded is None or name not in recorded or recorded[name] == wanted[name]:
            continue
        flag, was, now = "--" + name.replace("_", "-"), _shown(recorded[name]), _shown(wanted[name])
        raise UsageError(f"{flag} {now}: this run was trained with {flag} {was} ({source}); resume with {flag} "
                         f"{was} (of the recipe only --lr and --d-lr may change on a resume), or start a new run in "
                         "another --output-dir")


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_not_past(folder: Path, total_steps: int, steps_per_epoch: int):
    """Refuse, in one line, a command that asks for fewer steps than the checkpoint has done: the run cannot
    go back, and re-exporting its later generator as this command's would record a schedule it never had."""
    step = checkpoint_step(folder.name)
    if step is None or step <= total_steps:
        return
    epochs = -(-step // steps_per_epoch)  # the epoch that step is in, a partial one included
    raise UsageError(f"checkpoint {folder} is at step {step} (epoch {epochs}), past the {total_steps} steps this "
                     f"command asks for (--epochs, --max-steps); rerun with --epochs {epochs} or more (and no lower "
                     "--max-steps) to finish or re-export it, or start a new run in another --output-dir")


def check_architecture(folder: Path | None, wanted: dict):
    """Refuse, in one line, to resume a checkpoint written for other networks (old checkpoints record none)."""
    if folder is None:
        return
    recorded = _recorded(folder, "architecture")
    if recorded is None or recorded == {k: v for k, v in wanted.items() if k in recorded}:  # older ones lack keys
        return

    def describe(arch):
        words = [f"--model {arch.get('model')} --preset {arch.get('preset')} --z-dim {arch.get('z_dim')}"]
        if recorded.get("image_shape") != wanted["image_shape"]:
            words.append("images " + "x".join(map(str, arch.get("image_shape") or [])))
        if recorded.get("num_classes") != wanted["num_classes"]:
            words.append(f"{arch.get('num_classes')} classes")
        elif "class_names" in recorded and recorded["class_names"] != wanted["class_names"]:
            names = arch.get("class_names") or ["none"]
            words.append("classes " + ", ".join(map(str, names[:3])) + (", ..." if len(names) > 3 else ""))
        return ", ".join(words)

    raise UsageError(f"checkpoint {folder} is for another architecture ({describe(recorded)}; this run: "
                     f"{describe(wanted)}); rerun with its options to resume, or start fresh with another "
                     f"--checkpoint-dir or --output-dir (or delete {folder.parent})")
