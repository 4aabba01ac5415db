"""folder:PATH datasets in the cloud: staged by content into the bucket, checked before any job exists,
and read back by the trainer from the SageMaker channel and from an EC2 job's S3 data dir (moto)."""

import builtins
import hashlib
import json
import os
import shutil
from pathlib import Path

import boto3
import pytest

from launcher import settings
from launcher.backends import ec2 as ec2_backend
from launcher.backends import sagemaker
from launcher.remote import train_job
from launcher.spec import build_spec
from tests.aws_helpers import mocked_bucket
from tests.data_helpers import make_image_folder
from tests.ec2_helpers import seed_dlami_parameters
from trainer import layout, s3
from trainer.errors import UsageError
from trainer.dataset_staging import folder_manifest, stage_folder

BUCKET, ROLE, REGION = "gankit-folder-test", "arn:aws:iam::123456789012:role/gankit-sagemaker", "us-east-1"
QUICK = ["image_size=16", "batch_size=4", "max_steps=2", "preset=seed"]


@pytest.fixture
def aws(monkeypatch):
    with mocked_bucket(monkeypatch, BUCKET, region=REGION) as uri:
        yield uri


@pytest.fixture
def pets(tmp_path):
    folder = make_image_folder(tmp_path / "pets", classes=("cats", "dogs"), n=3)
    (folder / "notes.txt").write_text("not a picture: not staged")
    return folder


def uploads(monkeypatch) -> list:
    """Record every file upload (and still do it)."""
    sent, real = [], s3.upload_file
    monkeypatch.setattr(s3, "upload_file", lambda local, uri, callback=None: (sent.append(uri), real(local, uri, callback)))
    return sent


def quiet(message):
    pass


def sm_spec(folder, **options):
    return build_spec(dataset=f"folder:{folder}", epochs=1, hp=QUICK, backend="sagemaker", bucket=BUCKET, role=ROLE,
                      region=REGION, **options)


# --- staging ------------------------------------------------------------------------------------

def test_staging_keeps_class_folders_and_writes_a_manifest_last(aws, pets, monkeypatch, capsys):
    sent = uploads(monkeypatch)
    manifest = folder_manifest(f"folder:{pets}", pets)
    to = layout.folder_dataset_prefix(aws, pets, manifest["content_hash"])
    assert to == f"{aws}/datasets/pets-{manifest['content_hash']}" and len(manifest["content_hash"]) == 16
    stage_folder(pets, manifest, to)

    pictures = sorted(p.relative_to(pets).as_posix() for p in pets.rglob("*.png"))
    assert sorted(s3.list_objects(to)) == sorted(pictures + ["MANIFEST.json"])
    remote = json.loads(s3.read_bytes(f"{to}/MANIFEST.json"))
    assert remote["classes"] == ["cats", "dogs"] and remote["kind"] == "folder"
    assert remote["files"] == {rel: {"size": (pets / rel).stat().st_size,
                                     "sha256": hashlib.sha256((pets / rel).read_bytes()).hexdigest()}
                               for rel in pictures}
    assert s3.read_bytes(f"{to}/cats/001.png") == (pets / "cats" / "001.png").read_bytes()
    assert len(sent) == 6 and not any(uri.endswith("MANIFEST.json") for uri in sent)  # written after all of them
    out = capsys.readouterr()
    assert "uploading 6 pictures" in out.out and f"staged {pets} at {to}" in out.out
    assert "staging pictures" in out.err and "(100%)" in out.err  # the progress bar


def test_staging_again_uploads_nothing_and_checks_nothing(aws, pets, monkeypatch, capsys):
    manifest = folder_manifest(f"folder:{pets}", pets)
    to = layout.folder_dataset_prefix(aws, pets, manifest["content_hash"])
    stage_folder(pets, manifest, to, log=quiet)
    sent = uploads(monkeypatch)
    import trainer.data.folder

    monkeypatch.setattr(trainer.data.folder, "check_pictures", lambda *a, **k: pytest.fail("decoded again"))
    stage_folder(pets, folder_manifest(f"folder:{pets}", pets), to)
    assert sent == []
    assert "already staged" in capsys.readouterr().out


def test_an_interrupted_upload_sends_only_what_is_missing(aws, pets, monkeypatch, capsys):
    manifest = folder_manifest(f"folder:{pets}", pets)
    to = layout.folder_dataset_prefix(aws, pets, manifest["content_hash"])
    stage_folder(pets, manifest, to, log=quiet)
    client = boto3.client("s3")
    for key in ("MANIFEST.json", "dogs/002.png"):  # as if the upload had stopped there
        client.delete_object(Bucket=BUCKET, Key=f"{to.split('/', 3)[3]}/{key}")
    sent = uploads(monkeypatch)
    stage_folder(pets, manifest, to)
    assert sent == [f"{to}/dogs/002.png"]
    out = capsys.readouterr().out
    assert "uploading 1 pictures" in out and "; 5 already there" in out
    assert json.loads(s3.read_bytes(f"{to}/MANIFEST.json"))["files"] == manifest["files"]


def test_a_changed_folder_sends_only_the_changed_pictures(aws, pets, monkeypatch, capsys):
    first = folder_manifest(f"folder:{pets}", pets)
    stage_folder(pets, first, layout.folder_dataset_prefix(aws, pets, first["content_hash"]), log=quiet)
    make_image_folder(tmp := pets.parent / "other", classes=("x",), n=1, size=(31, 17))
    (tmp / "x" / "000.png").replace(pets / "dogs" / "001.png")  # one picture edited
    second = folder_manifest(f"folder:{pets}", pets)
    to = layout.folder_dataset_prefix(aws, pets, second["content_hash"])
    assert second["content_hash"] != first["content_hash"]
    sent = uploads(monkeypatch)
    stage_folder(pets, second, to)
    assert sent == [f"{to}/dogs/001.png"]  # the other five are copied inside S3
    assert "5 unchanged ones copied inside S3" in capsys.readouterr().out
    for rel in second["files"]:
        assert s3.read_bytes(f"{to}/{rel}") == (pets / rel).read_bytes()


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_restaging_a_changed_folder_to_one_prefix_sends_the_edits_and_drops_what_was_removed(where, aws, tmp_path):
    """`trainer stage --to` one fixed prefix again (as the README shows by hand) chose what to send by size alone:
    an edited picture of the same size stayed as it was while the new manifest claimed its new SHA-256, and the
    pictures and classes removed from the folder stayed at the prefix, where the job's listing trained on them."""
    import numpy as np
    from PIL import Image

    from trainer.cli import main

    faces = tmp_path / "faces"
    to = f"{aws}/datasets/faces" if where == "s3" else str(tmp_path / "bucket" / "datasets" / "faces")

    def below(rel=None):
        if where == "s3":
            return s3.read_bytes(f"{to}/{rel}") if rel else sorted(s3.list_objects(to))
        return (Path(to) / rel).read_bytes() if rel else sorted(p.relative_to(to).as_posix() for p in Path(to).rglob("*"))

    def picture(rel, seed):
        (faces / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(faces / rel, compress_level=0)  # stored: every such picture has one size

    def stage():
        with pytest.raises(SystemExit) as exited:
            main(["stage", "--dataset", f"folder:{faces}", "--to", to])
        assert exited.value.code in (0, None)

    for seed, rel in enumerate(["a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png", "c/1.png"]):
        picture(rel, seed)
    stage()
    (s3.write_bytes if where == "s3" else lambda path, data: Path(path).write_bytes(data))(
        f"{to}/NOTES.txt", b"yours: no manifest listed it")
    size = (faces / "b/0.png").stat().st_size
    picture("b/0.png", 99)  # edited
    assert (faces / "b/0.png").stat().st_size == size
    (faces / "a/1.png").unlink()
    shutil.rmtree(faces / "c")
    stage()
    folders = [] if where == "s3" else ["a", "b"]  # c/ went with its pictures: an empty class would be refused
    assert below() == sorted(["MANIFEST.json", "NOTES.txt", "a/0.png", "b/0.png", "b/1.png", *folders])
    for rel in ("a/0.png", "b/0.png", "b/1.png"):
        assert below(rel) == (faces / rel).read_bytes()


def test_the_content_names_the_prefix(pets):
    first = folder_manifest(f"folder:{pets}", pets)["content_hash"]
    assert folder_manifest("folder:elsewhere", pets)["content_hash"] == first  # the pictures, not the path
    (pets / "notes.txt").write_text("changed, but not a picture")
    assert folder_manifest(f"folder:{pets}", pets)["content_hash"] == first
    (pets / "cats" / "000.png").rename(pets / "dogs" / "003.png")  # the same bytes in another class
    moved = folder_manifest(f"folder:{pets}", pets)["content_hash"]
    assert moved != first
    make_image_folder(pets, classes=("cats",), n=1)  # a new picture
    assert folder_manifest(f"folder:{pets}", pets)["content_hash"] not in (first, moved)


# --- the jobs -----------------------------------------------------------------------------------

def test_sagemaker_job_reads_the_staged_folder_as_its_training_channel(aws, pets, monkeypatch):
    record = sagemaker.submit(sm_spec(pets))
    manifest = json.loads(s3.read_bytes(f"{record['data_uri']}/MANIFEST.json"))
    channel = f"{aws}/datasets/pets-{manifest['content_hash']}/"
    request = record["request"]
    assert request["InputDataConfig"][0]["ChannelName"] == "training"
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == channel
    assert "data_dir" not in request["HyperParameters"] and request["HyperParameters"]["dataset"] == f"folder:{pets}"
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=record["job"])
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == channel  # what AWS saw
    assert record["data_uri"] == channel.rstrip("/")
    assert {"Key": "dataset", "Value": f"pets-{manifest['content_hash']}"} in request["Tags"]  # no ~ or spaces

    # The same folder again: the same channel, nothing uploaded; a dry run names it too.
    sent = uploads(monkeypatch)
    again = sagemaker.submit(sm_spec(pets, job="gan-pets-again"))
    assert sent == []
    assert again["request"]["InputDataConfig"] == request["InputDataConfig"]
    dry = sagemaker.submit(sm_spec(pets, job="gan-pets-dry"), dry_run=True)
    assert dry["InputDataConfig"] == request["InputDataConfig"]


def test_a_dry_run_checks_the_folder_and_sends_nothing(aws, pets):
    (pets / "dogs" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(UsageError, match=f"cannot read image {pets / 'dogs' / 'bad.jpg'}"):
        sagemaker.submit(sm_spec(pets), dry_run=True)
    assert s3.list_objects(aws) == {}


def test_s3_data_dir_for_a_folder_is_refused_with_the_fix(aws, pets):
    spec = build_spec(dataset=f"folder:{pets}", hp=["data_dir=s3://somewhere/pictures"], backend="sagemaker",
                      bucket=BUCKET, role=ROLE, region=REGION)
    with pytest.raises(UsageError, match="give your pictures' local folder as --dataset folder:PATH"):
        sagemaker.submit(spec)


@pytest.fixture
def ec2_settings(aws, monkeypatch):
    """What `launcher infra up` records."""
    monkeypatch.delenv("GANKIT_AMI", raising=False)
    iam, client = boto3.client("iam"), boto3.client("ec2")
    iam.create_role(RoleName="gankit-ec2", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="gankit-ec2")
    iam.add_role_to_instance_profile(InstanceProfileName="gankit-ec2", RoleName="gankit-ec2")
    vpc = client.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = client.create_security_group(GroupName="gankit-ec2", Description="gankit", VpcId=vpc)["GroupId"]
    settings.update(bucket=BUCKET, region=REGION, instance_profile="gankit-ec2", security_group=group)
    seed_dlami_parameters(REGION)
    return aws


def run_container(sm_root: Path):
    """What the training container runs (SageMaker's `train`, or the EC2 runner's trainer), in this process."""
    from trainer.contract import run_contract

    return run_contract(sm_root)


@pytest.mark.slow
def test_ec2_job_trains_from_the_staged_folder(ec2_settings, tmp_path):
    folder = make_image_folder(tmp_path / "faces", classes=(), n=8, size=(24, 20))
    record = ec2_backend.submit(build_spec(dataset=f"folder:{folder}", model="dcgan", epochs=1, hp=QUICK,
                                           backend="ec2", instance_type="g5.xlarge", region=REGION))
    job = json.loads(s3.read_bytes(record["job_uri"]))
    manifest = json.loads(s3.read_bytes(f"{job['data_uri']}/MANIFEST.json"))
    assert job["data_uri"] == f"{ec2_settings}/datasets/faces-{manifest['content_hash']}"
    assert len(manifest["files"]) == 8 and manifest["classes"] == []

    # What the instance's runner does with job.json: the contract, with the staged prefix as its S3 data dir.
    shutil.rmtree(folder)  # the instance has only the bucket
    train_job.write_contract(tmp_path / "ml", job)
    summary = run_container(tmp_path / "ml")
    assert summary["steps"] == 2
    meta = json.loads(s3.read_bytes(f"{job['output_uri']}/generator/generator.json"))
    assert meta["image_shape"] == [16, 16, 3] and meta["conditional"] is False


@pytest.mark.slow
def test_sagemaker_container_trains_from_the_channel_it_downloads(aws, tmp_path):
    """SageMaker's File mode copies the channel prefix to input/data/training; the contract trains from it."""
    folder = make_image_folder(tmp_path / "pets", classes=("cats", "dogs"), n=4, size=(24, 20))
    spec = sm_spec(folder, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit-trainer:t")
    request = sagemaker.submit(spec)["request"]

    sm_root = tmp_path / "ml"
    s3.download_prefix(request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"],
                       sm_root / "input" / "data" / "training")
    (sm_root / "input" / "config").mkdir(parents=True)
    (sm_root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    shutil.rmtree(folder)  # the container has only its channel
    summary = run_container(sm_root)
    assert summary["steps"] == 2
    meta = json.loads((sm_root / "model" / "generator.json").read_text())
    assert meta["class_names"] == ["cats", "dogs"] and meta["image_shape"] == [16, 16, 3]
    assert "generator/generator.json" in s3.list_objects(request["HyperParameters"]["output_dir"])


# --- a broken folder: one line naming the user's file, exit 2, nothing sent ---------------------

def _corrupt_jpeg(folder):
    bad = folder / "dogs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    return bad, "cannot read image"


def _dangling_link(folder):
    link = folder / "cats" / "gone.jpg"
    link.symlink_to(folder / "nowhere.jpg")
    return link, "is a dangling symlink"


def _unreadable(folder, monkeypatch):
    path = folder / "cats" / "001.png"
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: have the OS refuse this one file
        real = builtins.open
        monkeypatch.setattr(builtins, "open", lambda file, *a, **k: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied", str(file))) if Path(str(file)) == path else real(file, *a, **k))
    return path, "Permission denied"


def _empty_class(folder):
    (folder / "birds").mkdir()
    return folder / "birds", "has no pictures"


def _empty_folder(folder):
    empty = folder.parent / "empty"
    empty.mkdir()
    return empty, "has no pictures"


def _not_utf8_name(folder):
    import shutil as _shutil

    path = folder / "cats" / os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: legal on Linux, no S3 key
    _shutil.copy(folder / "cats" / "000.png", path)
    return folder / "cats" / "caf\\xe9.png", "not valid UTF-8"


def _backslash_name(folder):
    path = folder / "dogs" / "a\\b.png"  # one file name on Linux; a path on Windows, and refused on download
    shutil.copy(folder / "dogs" / "000.png", path)
    return path, "backslash"


BREAKAGES = {"corrupt jpeg": _corrupt_jpeg, "dangling symlink": _dangling_link, "unreadable": _unreadable,
             "empty class folder": _empty_class, "empty folder": _empty_folder, "not UTF-8": _not_utf8_name,
             "backslash": _backslash_name}


@pytest.mark.parametrize("backend", ["sagemaker", "ec2"])
@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_folder_is_named_before_any_job_exists(aws, pets, breakage, backend, monkeypatch, capsys):
    from launcher.cli import cli
    from trainer.errors import run_cli

    settings.update(bucket=BUCKET, region=REGION, role=ROLE, instance_profile="gankit-ec2", security_group="sg-1")
    breaker = BREAKAGES[breakage]
    path, problem = breaker(pets, monkeypatch) if breakage == "unreadable" else breaker(pets)
    folder = path if breakage == "empty folder" else pets
    with pytest.raises(SystemExit) as exited:
        run_cli(cli, ["submit", "--backend", backend, "--dataset", f"folder:{folder}", "--epochs", "1",
                      "--max-run", "1h"], prog_name="launcher")
    err = capsys.readouterr().err
    assert exited.value.code == 2
    errors = [line for line in err.splitlines() if not line.startswith(("hashing pictures", "checking pictures"))]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in err
    assert str(path) in errors[0] and problem in errors[0]  # the user's own file, not a staged copy
    assert s3.list_objects(aws) == {}  # nothing uploaded
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert boto3.client("ec2").describe_instances()["Reservations"] == []


def test_local_backend_reads_the_folder_in_place_and_checks_it_first(pets, monkeypatch):
    from launcher.backends import local

    monkeypatch.setenv("HOME", str(pets.parent))
    spec = build_spec(dataset="folder:~/pets", hp=QUICK, backend="local")
    assert local.submit(spec, dry_run=True)["training_channel"] == str(pets.resolve())  # ~ expanded
    _corrupt_jpeg(pets)
    with pytest.raises(UsageError, match=f"cannot read image {pets / 'dogs' / 'broken.jpg'}"):
        local.submit(spec)
    assert not local.job_root(spec.job).exists()  # no job was created


def test_trainer_stage_command_takes_a_folder(aws, pets, capsys):
    from trainer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["stage", "--dataset", f"folder:{pets}", "--to", f"{aws}/datasets/mine"])
    assert exited.value.code in (0, None)
    assert f"staged {pets} at {aws}/datasets/mine" in capsys.readouterr().out
    assert sorted(s3.list_objects(f"{aws}/datasets/mine")) == sorted(
        ["MANIFEST.json"] + [p.relative_to(pets).as_posix() for p in pets.rglob("*.png")])


def test_a_picture_its_manifest_does_not_list_is_refused_before_training(pets, tmp_path, monkeypatch):
    """A staging to one fixed prefix cut short (its manifest withdrawn, a new picture already sent), then the folder
    staged again as it was: with no manifest there to say what an earlier staging put, the stray picture stays, the
    manifest written over it lists the rest, and the check before training (each listed file's SHA-256) passed while
    the job's listing read the stray picture too: a mixed copy trained on."""
    from trainer import dataset_staging
    from trainer.data.folder import list_folder
    from trainer.dataset_staging import check_staged_copy

    to = tmp_path / "bucket" / "datasets" / "pets"
    stage_folder(pets, folder_manifest(f"folder:{pets}", pets), str(to), log=quiet)
    shutil.copy(pets / "dogs" / "001.png", pets / "dogs" / "new.png")
    real = dataset_staging._write
    monkeypatch.setattr(dataset_staging, "_write", lambda uri, data: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C as the pictures were all sent, before the manifest
        stage_folder(pets, folder_manifest(f"folder:{pets}", pets), str(to), log=quiet)
    monkeypatch.setattr(dataset_staging, "_write", real)
    (pets / "dogs" / "new.png").unlink()  # the change undone, and staged again
    stage_folder(pets, folder_manifest(f"folder:{pets}", pets), str(to), log=quiet)
    assert to / "dogs" / "new.png" in list_folder(to)[0]  # what training reads

    with pytest.raises(UsageError) as e:
        check_staged_copy(to)
    message = str(e.value)
    assert "dogs/new.png" in message and "MANIFEST.json does not list" in message and "\n" not in message
    (to / "dogs" / "new.png").unlink()
    check_staged_copy(to)  # what it lists, and nothing more: trained on


def test_a_staged_copy_whose_picture_changed_at_the_same_size_is_refused_before_training(pets, tmp_path):
    """The check before training compares each listed file's SHA-256, not only its size: a damaged or swapped
    picture of the same size must not be trained on as the staged one."""
    from trainer.dataset_staging import check_staged_copy

    to = tmp_path / "bucket" / "datasets" / "pets"
    stage_folder(pets, folder_manifest(f"folder:{pets}", pets), str(to), log=quiet)
    picture = sorted((to / "dogs").iterdir())[0]
    data = bytearray(picture.read_bytes())
    data[-1] ^= 0xFF
    picture.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=f"dogs/{picture.name} is not the file MANIFEST.json lists"):
        check_staged_copy(to)
