"""folder:PATH datasets: layout, resizing, channels and every bad-folder error."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data_helpers import ADOBE_RGB, ADOBE_RGB_GAMMA, icc_profile, make_image_folder
from trainer.data import load_dataset
from trainer.data.folder import list_folder, load_folder
from trainer.errors import UsageError


def test_one_subfolder_per_class_is_conditional(tmp_path):
    folder = make_image_folder(tmp_path / "pets", classes=("dogs", "cats", "birds"), n=3, size=(40, 30))
    said = []
    data = load_dataset(f"folder:{folder}", log=said.append)
    assert said == [f"data: folder:{folder}: 9 pictures in 3 classes from {folder}"]
    assert data.name == f"folder:{folder}"
    assert data.class_names == ("birds", "cats", "dogs")  # sorted, whatever order they were made in
    assert data.conditional and data.num_classes == 3
    assert data.images.shape == (9, 64, 64, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The pictures really are the files of their folders: compare colours of the centre 30x30.
    for k, name in enumerate(data.class_names):
        source = np.asarray(Image.open(folder / name / "000.png"), np.float64)[:, 5:35]
        assert np.abs(data.images[3 * k].mean(axis=(0, 1)) - source.mean(axis=(0, 1))).max() < 3


def test_flat_folder_is_unconditional(tmp_path):
    folder = make_image_folder(tmp_path / "faces", classes=(), n=5, size=(30, 30))
    (folder / "notes.txt").write_text("not a picture, ignored")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    said = []
    data = load_dataset(f"folder:{folder}", image_size=32, channels=1, log=said.append)
    assert said == [f"data: folder:{folder}: 5 pictures (no classes) from {folder}"]
    assert data.labels is None and not data.conditional and data.class_names == () and data.num_classes == 0
    assert data.images.shape == (5, 32, 32, 1)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_picture_mode_becomes_the_asked_channels(tmp_path, mode, channels):
    folder = make_image_folder(tmp_path / "x", classes=("a",), n=2, size=(20, 20), mode=mode if mode != "CMYK" else "RGB")
    if mode == "CMYK":
        Image.open(folder / "a/000.png").convert("CMYK").save(folder / "a/000.jpg")
        (folder / "a/000.png").unlink()
    images, labels, names = load_folder(folder, image_size=16, channels=channels)
    assert images.shape == (2, 16, 16, channels) and labels.tolist() == [0, 0] and names == ("a",)


def test_non_square_pictures_are_centre_cropped_not_squashed(tmp_path):
    # 90x30: a red square in the middle third, blue on both sides.
    picture = np.zeros((30, 90, 3), np.uint8)
    picture[:, :30] = picture[:, 60:] = (0, 0, 255)
    picture[:, 30:60] = (255, 0, 0)
    (tmp_path / "wide").mkdir()
    Image.fromarray(picture).save(tmp_path / "wide" / "p.png")
    images, _, _ = load_folder(tmp_path / "wide", image_size=16, channels=3)
    red, blue = images[0, ..., 0].mean(), images[0, ..., 2].mean()
    assert red > 240 and blue < 15


def _one_picture(tmp_path, save) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    save(folder)
    return folder


def test_a_16_bit_picture_is_scaled_to_8_bits_not_clipped_white(tmp_path):
    """Pillow's convert clips a 16-bit scan's values at 255: nearly every pixel would train as white."""
    ramp = np.repeat(np.linspace(0, 65535, 32).astype(np.uint16)[None, :], 32, axis=0)
    folder = _one_picture(tmp_path, lambda f: Image.fromarray(ramp).save(f / "scan.png"))
    assert Image.open(folder / "scan.png").mode.startswith("I")
    for channels in (1, 3):
        images, _, _ = load_folder(folder, image_size=32, channels=channels)
        row = images[0, 0, :, 0].astype(int)
        np.testing.assert_allclose(row, ramp[0] / 257, atol=1)  # 0 ... 255 in step with the ramp


@pytest.mark.parametrize("name", ["dim.png", "dim.pgm"])
def test_a_dim_16_bit_picture_stays_dim(tmp_path, name):
    """A 16-bit file whose values all happen to be under 256 is nearly black, not 8-bit data to stretch white."""
    ramp = np.repeat(np.linspace(0, 200, 32).astype(np.uint16)[None, :], 32, axis=0)
    folder = _one_picture(tmp_path, lambda f: Image.fromarray(ramp).save(f / name))
    assert Image.open(folder / name).mode.startswith("I")
    images, _, _ = load_folder(folder, image_size=32, channels=1)
    assert images.max() <= 1  # 200 of 65535


def test_a_float_picture_in_0_1_is_scaled(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    folder = _one_picture(tmp_path, lambda f: Image.fromarray(values).save(f / "map.tif"))
    images, _, _ = load_folder(folder, image_size=8, channels=1)
    np.testing.assert_allclose(images[0, ..., 0], values * 255, atol=1)


def test_a_float_picture_with_nan_pixels_keeps_its_range(tmp_path):
    """One NaN (a float map's "no data") made the maximum NaN: the whole picture came out black."""
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    values[0, 0] = np.nan
    folder = _one_picture(tmp_path, lambda f: Image.fromarray(values).save(f / "map.tif"))
    images, _, _ = load_folder(folder, image_size=8, channels=1)
    np.testing.assert_allclose(images[0, ..., 0], np.nan_to_num(values) * 255, atol=1)


def test_exif_rotation_is_applied(tmp_path):
    """A phone's portrait photo is stored sideways with an Orientation tag; viewers turn it, so must we."""
    sideways = np.zeros((16, 32), np.uint8)
    sideways[:, 16:] = 255  # left half black, right half white; Orientation 6 turns it 90 degrees clockwise

    def save(folder):
        picture = Image.fromarray(sideways).convert("RGB")
        exif = picture.getexif()
        exif[0x0112] = 6
        picture.save(folder / "photo.jpg", exif=exif.tobytes(), quality=100)

    images, _, _ = load_folder(_one_picture(tmp_path, save), image_size=16, channels=1)
    top, bottom = images[0, :4, :, 0].mean(), images[0, -4:, :, 0].mean()
    assert top < 20 and bottom > 235  # black on top once upright (it was the left half)


def test_a_large_jpeg_decodes_at_a_fraction_of_its_size_with_the_same_pixels(tmp_path):
    """A camera photo is decoded at 1/8 scale (JPEG's DCT scaling), not whole and then shrunk: the same
    picture to within a grey level, rotated as a viewer shows it."""
    from trainer.data.resize import fit

    rows, cols = np.mgrid[0:1200, 0:1600]
    sideways = np.stack([cols * 255 // 1600, rows * 255 // 1200, np.full_like(rows, 90)], -1).astype(np.uint8)
    picture = Image.fromarray(sideways)
    exif = picture.getexif()
    exif[0x0112] = 6  # stored sideways, shown turned 90 degrees clockwise
    picture.save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)

    with Image.open(tmp_path / "photo.jpg") as whole:
        whole.load()  # decoded in full first: draft() can no longer shrink it
        reference = fit(whole, 64, 3)
    with Image.open(tmp_path / "photo.jpg") as photo:
        drafted = fit(photo, 64, 3)
        assert photo.size == (200, 150)  # what was decoded: 1600x1200 / 8, still at least 64 each way
    assert np.abs(drafted.astype(int) - reference).max() <= 2
    # upright: the stored columns' red, left to right, now runs top to bottom
    assert drafted[-1, :, 0].mean() > drafted[0, :, 0].mean() + 150


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_the_dark_background_not_their_hidden_colour(tmp_path, kind):
    def save(folder):
        if kind == "P":
            picture = Image.new("P", (8, 8), 1)
            picture.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 is red, and transparent
            picture.save(folder / "cut.png", transparency=1)
        else:
            colour = (255, 0, 0, 0) if kind == "RGBA" else (200, 0)
            Image.new(kind, (8, 8), colour).save(folder / "cut.png")

    folder = _one_picture(tmp_path, save)
    for channels in (1, 3):
        images, _, _ = load_folder(folder, image_size=8, channels=channels)
        assert images.max() == 0, (kind, channels)


def test_opaque_pixels_of_a_picture_with_alpha_keep_their_colour(tmp_path):
    folder = _one_picture(tmp_path, lambda f: Image.new("RGBA", (8, 8), (10, 200, 30, 255)).save(f / "solid.png"))
    images, _, _ = load_folder(folder, image_size=8, channels=3)
    assert images[0, 0, 0].tolist() == [10, 200, 30]


ADOBE = icc_profile(b"RGB ", ADOBE_RGB, ADOBE_RGB_GAMMA)
# (64, 128, 192) in Adobe RGB is (0, 129, 196) in sRGB: its wider green takes the colour below sRGB's red 0.
ADOBE_BLUE, AS_SRGB = (64, 128, 192), (0, 129, 196)
SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))  # LittleCMS's sRGB


def test_the_test_profile_is_adobe_rgb_to_littlecms():
    """LittleCMS reads the written-out profile, and converts with it what the two matrices give by hand."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE))
    assert profile.profile.xcolor_space == "RGB " and ImageCms.getProfileDescription(profile).strip()
    as_srgb = ImageCms.profileToProfile(Image.new("RGB", (1, 1), ADOBE_BLUE), profile,
                                        ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert as_srgb.getpixel((0, 0)) == AS_SRGB
    xyz = np.array(ADOBE_RGB).T @ (np.array(ADOBE_BLUE) / 255) ** ADOBE_RGB_GAMMA
    linear = np.clip(np.linalg.solve(np.array(SRGB_D50).T, xyz), 0, 1)
    by_hand = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 255
    assert np.abs(by_hand - AS_SRGB).max() < 1


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_a_picture_with_a_colour_profile_is_taken_in_srgb(tmp_path, name):
    """An iPhone's Display P3 photo or an Adobe RGB one: its numbers taken as sRGB were the wrong colour."""
    folder = _one_picture(tmp_path, lambda f: Image.new("RGB", (16, 16), ADOBE_BLUE).save(
        f / name, icc_profile=ADOBE, quality=100))
    images, _, _ = load_folder(folder, image_size=8, channels=3)
    assert np.abs(images[0].reshape(-1, 3).astype(int) - AS_SRGB).max() <= 2  # JPEG's rounding
    grey, _, _ = load_folder(folder, image_size=8, channels=1)
    assert abs(int(grey[0, 0, 0, 0]) - round(0.299 * 0 + 0.587 * 129 + 0.114 * 196)) <= 2  # 98, not 116


def test_transparent_pixels_of_a_picture_with_a_colour_profile_stay_dark(tmp_path):
    def save(folder):
        picture = Image.new("RGBA", (16, 16), ADOBE_BLUE + (255,))
        picture.paste((255, 0, 0, 0), (0, 0, 16, 8))  # top half: transparent red
        picture.save(folder / "cut.png", icc_profile=ADOBE)

    images, _, _ = load_folder(_one_picture(tmp_path, save), image_size=16, channels=3)
    assert images[0, :8].max() == 0 and images[0, 8:].reshape(-1, 3).tolist() == [list(AS_SRGB)] * 128


@pytest.mark.parametrize("mode", ["L", "LA", "I;16"])
def test_a_grey_picture_with_a_grey_profile_is_taken_in_srgb(tmp_path, mode):
    """Grey 128 under a gamma-1.8 profile (Photoshop's "Gray Gamma 1.8") is sRGB grey 146."""
    def save(folder):
        picture = Image.new("L", (8, 8), 128)
        if mode == "LA":
            picture.putalpha(255)
        elif mode == "I;16":  # a 16-bit scan: made 8-bit first, the profile still applies
            picture = Image.fromarray(np.full((8, 8), 128 * 257, np.uint16))
        picture.save(folder / "scan.png", icc_profile=icc_profile(b"GRAY", gamma=1.8))

    folder = _one_picture(tmp_path, save)
    for channels in (1, 3):
        images, _, _ = load_folder(folder, image_size=8, channels=channels)
        assert np.abs(images.astype(int) - 146).max() <= 1, (mode, channels)


@pytest.mark.parametrize("case", ["corrupt", "truncated", "rgb profile on grey", "rgb profile on cmyk"])
def test_a_colour_profile_that_cannot_be_used_is_ignored(tmp_path, capfd, case):
    """As a viewer does: the picture loads, its numbers taken as they are, and nothing is printed."""
    mode, colour = {"rgb profile on grey": ("L", 90), "rgb profile on cmyk": ("CMYK", (10, 20, 30, 0))}.get(
        case, ("RGB", ADOBE_BLUE))
    profile = {"corrupt": b"not an ICC profile" * 10, "truncated": ADOBE[:200]}.get(case, ADOBE)
    folder = _one_picture(tmp_path, lambda f: Image.new(mode, (8, 8), colour).save(
        f / "odd.jpg", icc_profile=profile, quality=100))
    with Image.open(folder / "odd.jpg") as picture:
        assert picture.info["icc_profile"] == profile
        plain = np.asarray(picture.convert("RGB"))
    images, _, _ = load_folder(folder, image_size=8, channels=3, stream=io.StringIO())  # progress: not stderr
    np.testing.assert_array_equal(images[0], plain)
    assert capfd.readouterr() == ("", "")


def test_data_dir_holds_the_pictures(tmp_path):
    folder = make_image_folder(tmp_path / "staged", classes=("a", "b"), n=2)
    data = load_dataset("folder:/where/the/user/had/them", data_dir=folder, image_size=16)
    assert data.class_names == ("a", "b") and data.images.shape == (4, 16, 16, 3)


def test_a_picture_with_an_upper_case_suffix_is_read(tmp_path):
    """Cameras write IMG_0001.JPG: left out, a class would shrink (or be refused as empty) without a word."""
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    (folder / "b" / "000.png").rename(folder / "b" / "IMG_0001.PNG")
    files, labels, _ = list_folder(folder)
    assert [f.name for f in files] == ["000.png", "001.png", "001.png", "IMG_0001.PNG"] and labels.tolist() == [0, 0, 1, 1]


def test_a_hidden_picture_file_is_not_read(tmp_path):
    """._0.png is a macOS resource fork beside 0.png (a copy from a Mac's disk): not a picture, not an error."""
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    (folder / "a" / "._000.png").write_bytes(b"\0\5\26\7")
    files, labels, _ = list_folder(folder)
    assert "._000.png" not in [f.name for f in files] and labels.tolist() == [0, 0, 1, 1]


def test_hidden_files_and_folders_below_a_class_are_not_taken_for_nested_pictures(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    (folder / "a" / "notes" / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "a" / "notes" / ".ipynb_checkpoints" / "plot.png").write_bytes(b"\0")
    (folder / "a" / "notes" / "._plot.png").write_bytes(b"\0\5\26\7")
    files, labels, _ = list_folder(folder)
    assert len(files) == 4 and labels.tolist() == [0, 0, 1, 1]


def test_a_class_folder_that_is_a_broken_link_is_named_not_skipped(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a",), n=2)
    (folder / "b").symlink_to(tmp_path / "moved-away", target_is_directory=True)
    message = error(tmp_path, folder)
    assert f"{folder / 'b'} is a dangling symlink" in message and "fix or remove it" in message


def test_hidden_subfolders_are_ignored(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    make_image_folder(folder / ".ipynb_checkpoints", classes=(), n=1)
    assert load_folder(folder, 16, 3)[2] == ("a", "b")


def test_the_macosx_folder_of_a_zip_unpacked_off_macos_is_ignored(tmp_path):
    # It holds only ._ resource forks, and was refused as an empty class folder (or, holding a picture's fork
    # under a picture's suffix, below the top folder as a class of its own).
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    (folder / "__MACOSX" / "a").mkdir(parents=True)
    (folder / "__MACOSX" / "a" / "._0.png").write_bytes(b"\0\5\26\7")
    assert load_folder(folder, 16, 3)[2] == ("a", "b")
    flat = make_image_folder(tmp_path / "flat", classes=(), n=3)
    (flat / "__MACOSX").mkdir()
    (flat / "__MACOSX" / "._0.png").write_bytes(b"\0\5\26\7")
    assert load_folder(flat, 16, 3)[0].shape == (3, 16, 16, 3)


def error(tmp_path, path, **kwargs):
    with pytest.raises(UsageError) as e:
        load_dataset(f"folder:{path}", **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_path_and_file_instead_of_folder(tmp_path):
    assert f"image folder {tmp_path / 'nope'} does not exist" in error(tmp_path, tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    assert "is not a folder" in error(tmp_path, tmp_path / "f.png")


def test_no_pictures(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    assert f"image folder {tmp_path / 'empty'} has no pictures" in error(tmp_path, tmp_path / "empty")


def test_unreadable_picture_is_named(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=3)
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    message = error(tmp_path, folder)
    assert f"cannot read image {folder / 'b' / 'broken.jpg'}" in message and "fix or remove it" in message


def test_truncated_picture_is_named(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=(), n=2, size=(64, 64))
    data = (folder / "001.png").read_bytes()
    (folder / "001.png").write_bytes(data[: len(data) // 2])
    assert f"cannot read image {folder / '001.png'}" in error(tmp_path, folder)


def test_mixed_flat_and_class_folders(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a",), n=2)
    make_image_folder(folder, classes=(), n=1)
    message = error(tmp_path, folder)
    assert "mixes pictures (000.png, ...) with class subfolders (a/, ...)" in message


def test_empty_class_folder(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    (folder / "c").mkdir()
    assert f"class folder {folder / 'c'} has no pictures" in error(tmp_path, folder)


def test_pictures_below_a_class_folder_are_named_not_left_out(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a", "b"), n=2)
    make_image_folder(folder / "b" / "2019", classes=("june",), n=1)  # b/2019/june/000.png: two levels down
    (folder / "a" / "notes").mkdir()
    (folder / "a" / "notes" / "todo.txt").write_text("not a picture: fine")
    (folder / "a" / "loop").symlink_to("loop")  # neither a folder nor a picture: passed over
    message = error(tmp_path, folder)
    assert message.startswith(f"{folder / 'b' / '2019' / 'june' / '000.png'} is in 2019/, a subfolder of class "
                              f"folder {folder / 'b'} that training does not read")
    assert f"move its pictures up into {folder / 'b'}, or remove them" in message


def test_pictures_below_a_flat_folder_are_named_not_left_out(tmp_path):
    folder = make_image_folder(tmp_path / "faces", classes=(), n=2)
    make_image_folder(folder / "more", classes=("older",), n=1)
    assert f"{folder / 'more' / 'older' / '000.png'} is in more/, a subfolder of image folder {folder}" \
        in error(tmp_path, folder)


def test_a_class_folder_name_that_is_not_utf8_is_refused(tmp_path):
    """Its name (kept by Python as surrogates) is the class name: report.html could not be written with it."""
    import os

    folder = make_image_folder(tmp_path / "p", classes=("a",), n=2)
    make_image_folder(folder / os.fsdecode(b"caf\xe9"), classes=(), n=2)
    message = error(tmp_path, folder)
    assert message.startswith(f"class folder {folder}/caf\\xe9 has a name that is not valid UTF-8 text")
    assert message.endswith("rename it")


def test_folders_have_only_a_train_split(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a",), n=1)
    assert "has no test split" in error(tmp_path, folder, split="test")


def test_broken_link_is_named_not_skipped(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a",), n=2)
    (folder / "a" / "gone.png").symlink_to(tmp_path / "moved-away.png")
    message = error(tmp_path, folder)
    assert f"{folder / 'a' / 'gone.png'} is a dangling symlink" in message and "fix or remove it" in message


def test_symlink_loop_is_named_as_one(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("a",), n=2)
    (folder / "a" / "x.png").symlink_to("x.png")
    message = error(tmp_path, folder)
    assert f"{folder / 'a' / 'x.png'} is a symlink loop (it points to x.png, which leads back to itself)" in message


def test_a_folder_too_small_to_evaluate_says_so(tmp_path):
    from trainer.evaluate import make_reference

    folder = make_image_folder(tmp_path / "p", classes=("a",), n=4)  # 1 held out for testing
    make_image_folder(folder / "b", classes=(), n=1)  # a class of one picture has none to hold out
    with pytest.raises(UsageError) as error_info:
        make_reference(f"folder:{folder}", None, (16, 16, 3), 20)
    assert str(error_info.value) == (f"folder:{folder} has too few images to evaluate (4 train, 1 test; at least 2 "
                                     "each): an image folder keeps 1 picture in 6 of each class for testing (one of "
                                     "a class of 2 to 8), so add pictures")


def test_a_picture_above_pillows_warning_size_loads_without_a_warning(tmp_path):
    # A 90-megapixel picture printed Pillow's DecompressionBombWarning (two lines, mid progress bar).
    import subprocess
    import sys

    (tmp_path / "big").mkdir()
    Image.new("1", (9500, 9500), 1).save(tmp_path / "big" / "huge.png")  # 90.25 MP, bits: 30 kB on disk
    code = ("from trainer.data.folder import load_folder; "
            f"images = load_folder({str(tmp_path / 'big')!r}, 8, 1)[0]; print(images.shape, images.min())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "(1, 8, 8, 1) 255", done.stderr
    assert "Warning" not in done.stderr, done.stderr
