"""Where a run reads and writes: local folders, mirrored to S3 when given s3:// paths.

The training loop only ever sees local folders. For an `s3://` data dir the
files are staged into the cache first; for an `s3://` output or checkpoint dir
a local folder stands in, and this module keeps S3 in step with it:
checkpoints are uploaded file by file with their manifest last (readers trust
only the manifest), outputs after every epoch (beside training: OutputPublisher),
the generator with its `generator.json` last.
"""

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainer import checkpoints, s3
from trainer.background import Background
from trainer.errors import RESUME_BY_HAND, GankitError, printable
from trainer.fsutil import atomic_dir, cache_root, inside


def local_stand_in(uri: str, kind: str) -> Path:
    """A stable local folder for an S3 prefix, so a restart on the same machine reuses it.

    Keyed by endpoint as well as bucket and path: the same s3:// name on another
    endpoint (a test server, another S3-compatible store) is another record.
    """
    return cache_root() / "staging" / f"{kind}-{s3.cache_key(uri)}"


@dataclass
class Storage:
    data_dir: str | None
    output_dir: str
    checkpoint_dir: str
    output_uri: str | None = None
    checkpoint_uri: str | None = None
    keep: int = 3
    _sent: dict = field(default_factory=dict)

    def after_checkpoint(self, folder: Path):
        if self.checkpoint_uri:
            push_checkpoint(folder, self.checkpoint_uri, self.keep)

    def publish_outputs(self):
        """Every output file changed since the last publish, now (the end of a run)."""
        if self.output_uri:
            s3.upload_dir(self.output_dir, self.output_uri, last=OUTPUT_LAST, skip=_not_output, sent=self._sent)


OUTPUT_LAST = ("generator.json",)  # a generator folder counts once its generator.json is there


def _not_output(rel: str) -> bool:
    return rel.startswith("checkpoints/")  # the checkpoint writer's (its own push), mid-write at any time


class OutputPublisher:
    """An epoch's outputs sent to S3 beside training, as CheckpointWriter sends checkpoints.

    `publish` (the training thread, at an epoch's end) copies each output file changed since the last
    publish into a snapshot folder and returns; a thread uploads the snapshot, generator.json last.
    The snapshot is one consistent moment: between epochs nothing else writes the outputs (checkpoints/
    is skipped), and a generator folder that is replaced later cannot mix old and new files on S3.
    While an upload is still running, `publish` skips: those changes stay unsent and go with the next
    one, so a slow S3 never holds training up. `wait` ends the upload in flight; a failed upload raises
    its one-line error from the next `publish` or `wait`. Without an S3 output, both do nothing.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        out = Path(storage.output_dir).absolute()  # `--output-dir .` has no name of its own
        self.snapshot = out.with_name(out.name + ".publishing")  # beside the folder, never inside it
        self._job = Background()

    def publish(self) -> bool:
        """Start sending what changed; False when the last upload is still running (nothing started)."""
        if not self.storage.output_uri:
            return False
        if self._job.busy():
            return False
        self.wait()
        shutil.rmtree(self.snapshot, ignore_errors=True)
        files = []
        for path, rel, stamp in s3.changed_files(self.storage.output_dir, OUTPUT_LAST, _not_output,
                                                 self.storage._sent):
            copy = self.snapshot / rel
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)  # small files (grids, GIF, logs): ms; a file gone since is skipped
            except FileNotFoundError:
                continue
            except OSError as e:  # a full disk: one line, as a failing upload is, and no half snapshot left
                shutil.rmtree(self.snapshot, ignore_errors=True)
                raise GankitError(f"the outputs' copy for {self.storage.output_uri} could not be written in "
                                  f"{self.snapshot} ({e.strerror or e}); free some space on that disk, then "
                                  f"{RESUME_BY_HAND}") from None
            files.append((copy, rel, stamp))
        if files:
            self._job.start(self._send, files, name="publish-outputs")
        return True

    def _send(self, files):
        try:
            for copy, rel, stamp in files:
                s3.upload_file(copy, s3.join(self.storage.output_uri, rel))
                self.storage._sent[rel] = stamp  # only once it is there: a failure resends it next time
        finally:
            shutil.rmtree(self.snapshot, ignore_errors=True)

    def wait(self):
        self._job.wait()


def prepare(cfg) -> Storage:
    """Stage S3 data and the newest complete S3 checkpoint; return the local folders to use."""
    data_dir = cfg.data_dir
    if data_dir and s3.is_s3(data_dir):
        data_dir = str(s3.mirror_into_cache(data_dir, local_stand_in(data_dir, "data"), label="staging data"))
    output_uri = cfg.output_dir if s3.is_s3(cfg.output_dir) else None
    output_dir = str(local_stand_in(output_uri, "output")) if output_uri else cfg.output_dir
    checkpoint_uri = cfg.checkpoint_dir if s3.is_s3(cfg.checkpoint_dir) else None
    checkpoint_dir = str(local_stand_in(checkpoint_uri, "checkpoints")) if checkpoint_uri else cfg.checkpoint_dir
    if checkpoint_uri:
        pull_latest_checkpoint(checkpoint_uri, Path(checkpoint_dir), cfg.keep_checkpoints)
    return Storage(data_dir, output_dir, checkpoint_dir, output_uri, checkpoint_uri, cfg.keep_checkpoints)


def remote_checkpoints(uri: str, listing: dict | None = None) -> list[tuple[int, str]]:
    """(step, name) of every remote checkpoint folder, newest first."""
    listing = s3.list_objects(uri) if listing is None else listing
    names = {key.split("/", 1)[0] for key in listing if "/" in key}
    found = [(step, n) for n in names if (step := checkpoints.checkpoint_step(n)) is not None]
    return sorted(found, reverse=True)


def pull_latest_checkpoint(uri: str, local_dir: Path, keep: int = 3) -> Path | None:
    """Make `local_dir` hold the newest checkpoint there is, S3 being the record.

    The newest remote checkpoint that verifies is downloaded unless the local
    stand-in holds it already. A local one newer than every remote one (an
    upload cut short, a remote since wiped) is uploaded first, so S3 has it
    too. Remote ones that fail to verify are set aside as ckpt-<step>.corrupt,
    and if that leaves none the run stops rather than start over.
    """
    local_latest = checkpoints.latest_checkpoint(local_dir, warn=False)
    local_step = checkpoints.checkpoint_step(local_latest.name) if local_latest else -1
    listing = s3.list_objects(uri)
    corrupt = any(key.split("/", 1)[0].endswith(checkpoints.CORRUPT) for key in listing)
    for step, name in remote_checkpoints(uri, listing):
        if step < local_step:
            break
        raw, manifest = _remote_manifest(uri, name)
        if raw is None:
            _warn(uri, name, "no manifest (incomplete upload)")
            continue
        # The manifest is checked before any of its names becomes a local path.
        reason = checkpoints.manifest_problem(manifest, step) or _missing(listing, name, manifest["files"])
        if reason is None and step == local_step:
            return local_latest  # the same checkpoint, complete on both sides
        if reason is None:
            try:
                return _download(uri, name, manifest, raw, local_dir / name)
            except s3.LocalWriteError:  # this disk is full: every older checkpoint would fail too, and starting
                raise  # over at step 0 would go on to overwrite the run's checkpoints in S3
            except GankitError as e:  # a listed file that cannot be fetched now: not proof of corruption
                _warn(uri, name, f"cannot download its files ({e})")
                continue
            except _Skip as e:
                reason = str(e)
        _set_aside(uri, name, reason)
        corrupt = True
    if local_latest is not None:
        print(printable(f"note: local checkpoint {local_latest} (step {local_step}) is newer than any in {uri}; "
                        "uploading it before going on"), file=sys.stderr)
        push_checkpoint(local_latest, uri, keep)
        return local_latest
    if corrupt:
        raise checkpoints.none_verifies(uri)
    return None


def _download(uri, name, manifest, raw, target) -> Path:
    with atomic_dir(target) as tmp:
        for file in manifest["files"]:
            s3.download_file(s3.join(uri, name, file), inside(tmp, file, s3.join(uri, name)))
        try:
            (tmp / checkpoints.MANIFEST).write_bytes(raw)
        except OSError as e:
            raise s3.LocalWriteError(f"download of {s3.join(uri, name, checkpoints.MANIFEST)} to {tmp} failed: "
                                     f"{e.strerror or e}; free space or choose another destination") from None
        reason = checkpoints.problem_with_files(tmp, manifest)
        if reason:
            raise _Skip(reason)
    return target


def _missing(listing: dict, name: str, files: dict) -> str | None:
    """Why the remote objects of checkpoint `name` disagree with its manifest's sizes, before downloading."""
    for file, meta in files.items():
        size = listing.get(f"{name}/{file}")
        if size is None:
            return f"missing file {file} (an incomplete upload or a deleted object)"
        if size != meta["size"]:
            return f"file {file} does not match the manifest"
    return None


def push_checkpoint(folder: Path, uri: str, keep: int):
    """Upload a checkpoint with its manifest last, then drop remote ones beyond `keep` complete ones."""
    s3.upload_dir(folder, s3.join(uri, folder.name), last=(checkpoints.MANIFEST,))
    listing = s3.list_objects(uri)
    complete = 0
    for step, name in remote_checkpoints(uri, listing):
        if complete >= keep:
            s3.delete_prefix(s3.join(uri, name))
        elif _remote_complete(uri, name, step, listing):
            complete += 1


def _remote_complete(uri, name, step, listing) -> bool:
    """A valid manifest whose files are all there at their sizes (a broken one must not count towards `keep`)."""
    _, manifest = _remote_manifest(uri, name)
    return manifest is not None and not (checkpoints.manifest_problem(manifest, step)
                                         or _missing(listing, name, manifest["files"]))


def _remote_manifest(uri, name) -> tuple[bytes | None, dict | None]:
    """Checkpoint `name`'s manifest in S3: its bytes (None when it has none) and their JSON (None when not JSON)."""
    raw = s3.read_bytes(s3.join(uri, name, checkpoints.MANIFEST))
    try:
        return raw, json.loads(raw) if raw is not None else None
    except ValueError:
        return raw, None


class _Skip(Exception):
    pass


def _set_aside(uri, name, reason):
    """A remote checkpoint that does not verify, renamed so that no later run tries it again (nor deletes it)."""
    _warn(uri, name, reason, aside=True)
    s3.move_prefix(s3.join(uri, name), s3.join(uri, name + checkpoints.CORRUPT))


def _warn(uri, name, reason, aside=False):
    """One line on stderr, escaped (`printable`): the reason may quote the S3 endpoint's error message, which a
    run started by hand prints straight to the terminal."""
    then = f"set aside as {name}{checkpoints.CORRUPT}, " if aside else ""
    print(printable(f"warning: skipping checkpoint {uri.rstrip('/')}/{name}: {reason}; {then}trying the previous one"),
          file=sys.stderr)

