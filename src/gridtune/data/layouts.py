"""Finding the clips of a dataset on disk: IRMAS training and test layouts, folder-per-class, PNGs.

Indexing only lists files and parses names; decoding is the cache's job (`gridtune.data.cache`).

- IRMAS training: `IRMAS-TrainingData/<cls>/[cls][genre]NNNN__k.wav` or
  `PPP__[cls][dru|nod][genre]NNNN__k.wav`. Names are parsed by position, because `cla` is both a
  class (clarinet) and a genre (classical). The folder is the label.
- IRMAS test: every `*.wav` below `IRMAS-TestingData*` (any depth) with a `.txt` beside it listing
  one class code per line (trailing tabs and blank lines allowed). Multi-label, variable length.
- folders: `<root>/<class>/*.wav`.
- png: `<root>/<class>/*.png` mel-spectrogram images (e.g. data.root=pipeline/mel/train).

Every clip has a *group*, `name.rsplit('__', 1)[0]`: the recording it was cut from, so that a
split never puts excerpts of one recording on both sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TRAIN_DIR = "IRMAS-TrainingData"
TRAIN_RE = re.compile(
    r"^(?:(?P<prefix>\d+)__)?\[(?P<inst>[a-z]{3})\](?:\[(?P<drums>dru|nod)\])?"
    r"\[(?P<genre>cou_fol|cla|pop_roc|lat_sou|jaz_blu)\](?P<track>\d+)__(?P<excerpt>\d+)\.wav$")
AUDIO_EXT = (".wav", ".flac", ".ogg")


class DataError(ValueError):
    """The data root cannot be used; the message is one line naming the path."""


@dataclass(frozen=True)
class Clip:
    path: str        # relative to the data root
    label: int
    group: str       # recording id: excerpts of one recording share it


def group_of(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return stem.rsplit("__", 1)[0] if "__" in stem else stem


def detect_layout(root: Path) -> str:
    if (root / TRAIN_DIR).is_dir():
        return "irmas"
    if any(p.suffix.lower() == ".png" for p in root.glob("*/*.png")):
        return "png"
    return "folders"


def class_dirs(root: Path, layout: str) -> Path:
    return root / TRAIN_DIR if layout == "irmas" else root


def class_folders(base: Path) -> list[str]:
    """The class folders below `base`, sorted (hidden ones, like the cache, excluded)."""
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def index_train(root: str | Path, layout: str = "auto", classes: list[str] | None = None
                ) -> tuple[list[Clip], list[str], str]:
    """(clips, class_names, layout) of a training layout. Raises DataError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root={root}: not a directory")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in ("irmas", "folders", "png"):
        raise DataError(f"data.layout={layout}: must be auto|irmas|folders|png")
    base = class_dirs(root, layout)
    if not base.is_dir():
        raise DataError(f"{base}: missing (expected for data.layout={layout})")
    names = list(classes) if classes else class_folders(base)
    exts = (".png",) if layout == "png" else AUDIO_EXT
    clips: list[Clip] = []
    for label, name in enumerate(names):
        folder = base / name
        if not folder.is_dir():
            raise DataError(f"{folder}: class folder missing for class '{name}'")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
        readable = [p for p in files if p.stat().st_size > 0]
        if not readable:
            raise DataError(f"{folder}: class '{name}' has no readable {'/'.join(exts)} file")
        for p in files:
            clips.append(Clip(str(p.relative_to(root)), label, f"{name}/{group_of(p.name)}"))
    return clips, names, layout


def check_features(layout: str, features_name: str) -> None:
    """PNG folders hold spectrograms already; audio layouts need a log-mel front end."""
    if (layout == "png") != (features_name == "image"):
        want = "features=image" if layout == "png" else "features=logmel224 (or another logmel option)"
        raise DataError(f"data.layout={layout} needs {want}, not features.name={features_name}")


def parse_train_name(name: str) -> dict | None:
    """Fields of an IRMAS training file name, or None when it does not follow the scheme."""
    m = TRAIN_RE.match(name)
    return m.groupdict() if m else None


def read_label_file(path: Path, classes: list[str]) -> list[int]:
    """Class indices listed in an IRMAS test .txt (one code per line, trailing tabs allowed)."""
    labels = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        code = line.strip()[:3]
        if code:
            if code not in classes:
                raise DataError(f"{path}: unknown class code '{code}'")
            labels.append(classes.index(code))
    return sorted(set(labels))


def index_test(root: str | Path, classes: list[str]) -> list[tuple[str, list[int]]]:
    """(relative wav path, class indices) of every IRMAS test clip under root; [] when there are none."""
    root = Path(root)
    out = []
    for part in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("IRMAS-TestingData")):
        for wav in sorted(part.rglob("*")):
            if wav.suffix.lower() != ".wav":
                continue
            txt = wav.with_suffix(".txt")
            if not txt.exists():
                raise DataError(f"{wav}: no label file {txt.name} beside it")
            out.append((str(wav.relative_to(root)), read_label_file(txt, classes)))
    return out
