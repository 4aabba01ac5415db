"""The IDX datasets gankit knows: files, where they come from, how to check them.

Two kinds of checksum, for two kinds of copy:
- `md5`: the publisher's checksum of the downloaded bytes (the .gz, or the
  archive holding it). Checked on every download.
- `sha256`: of the decoded uint8 array (`array.tobytes()`), where the project
  knows it. Checks a local copy that was recompressed (Debian's are), whose
  .gz bytes no longer match the publisher's md5.
"""

from dataclasses import dataclass
from string import ascii_uppercase


@dataclass(frozen=True)
class IdxFile:
    name: str  # canonical file name, e.g. train-images-idx3-ubyte.gz
    shape: tuple  # shape of the published array
    md5: str | None = None  # publisher's md5 of the .gz (None: it comes inside a verified archive)
    sha256: str | None = None  # sha256 of the decoded array's bytes, where known
    also: tuple = ()  # other names accepted in --data-dir (EMNIST's files under MNIST's names)


@dataclass(frozen=True)
class Archive:
    """One download that holds the files (EMNIST ships all its splits in one zip)."""

    name: str
    md5: str


@dataclass(frozen=True)
class IdxDataset:
    name: str
    title: str
    class_names: tuple
    urls: tuple  # base URLs, tried in order; a file's URL is base + file name
    splits: dict  # "train" / "test" -> (images IdxFile, labels IdxFile)
    archive: Archive | None = None
    transposed: bool = False  # images stored column-major (EMNIST): turn them upright
    system_dir: str | None = None  # folder under the system datasets root (Debian's packages)
    aliases: tuple = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def files(self) -> tuple:
        return tuple(f for pair in self.splits.values() for f in pair)


def _mnist_style_splits(prefix, n_train, n_test, md5=None, sha256=None):
    """The four MNIST-layout files; `md5`/`sha256` map file name -> checksum."""
    md5, sha256 = md5 or {}, sha256 or {}

    def idx(name, shape):
        full = f"{prefix}{name}"
        return IdxFile(full, shape, md5.get(full), sha256.get(full), also=(name,) if prefix else ())

    return {
        "train": (idx("train-images-idx3-ubyte.gz", (n_train, 28, 28)), idx("train-labels-idx1-ubyte.gz", (n_train,))),
        "test": (idx("t10k-images-idx3-ubyte.gz", (n_test, 28, 28)), idx("t10k-labels-idx1-ubyte.gz", (n_test,))),
    }


MNIST = IdxDataset(
    name="mnist",
    title="MNIST handwritten digits",
    class_names=tuple(str(d) for d in range(10)),
    # yann.lecun.com often refuses downloads now; the PyTorch mirror serves the same files.
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    splits=_mnist_style_splits("", 60000, 10000, md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
)

ZALANDO = IdxDataset(
    name="zalando",
    title="Zalando's Fashion-MNIST",
    class_names=("t_shirt_top", "trouser", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle_boots"),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    splits=_mnist_style_splits(
        "", 60000, 10000,
        # The md5s listed in Fashion-MNIST's README.
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Decoded from Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1).
        sha256={
            "train-images-idx3-ubyte.gz": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "train-labels-idx1-ubyte.gz": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            "t10k-images-idx3-ubyte.gz": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "t10k-labels-idx1-ubyte.gz": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
        },
    ),
    system_dir="fashion-mnist",
    aliases=("fashion-mnist",),
)

EMNIST = IdxDataset(
    name="emnist",
    title="EMNIST balanced (digits and letters)",
    # emnist-balanced-mapping.txt: digits, upper case, then the 11 lower-case
    # letters that do not look like their capitals.
    class_names=tuple(str(d) for d in range(10)) + tuple(ascii_uppercase) + tuple("abdefghnqrt"),
    urls=("https://biometrics.nist.gov/cs_links/EMNIST/",),
    splits=_mnist_style_splits("emnist-balanced-", 112800, 18800),
    archive=Archive("gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e"),
    transposed=True,
)

CATALOG = {spec.name: spec for spec in (MNIST, ZALANDO, EMNIST)}
ALIASES = {alias: spec.name for spec in CATALOG.values() for alias in spec.aliases}
