"""`make gpu-wheels`: the wheels a bare GPU machine lacks to run gridtune, at the versions uv.lock pins.

    python3 scripts/gpu_wheels.py [--dest .whl] [--python-version 3.12]   download, verify, report the size
    python3 scripts/gpu_wheels.py --list                                   the wheels' name==version, nothing fetched
    python3 scripts/gpu_wheels.py --image-requirements                     the image's packages, uv.lock's versions

The GPU machine's image already holds torch 2.11.0, torchaudio 2.11.0, numpy, scipy, matplotlib and
the rest of IMAGE below; nothing can be downloaded there. What gridtune needs beyond it is the
closure, through uv.lock's dependency graph (markers evaluated for CPython X.Y on Linux x86_64), of
ROOTS minus IMAGE: Hydra and its config library, submitit and Hydra's submitit launcher, soundfile
(its manylinux wheel bundles libsndfile) and librosa, which only `scripts/bench.py`'s naive baseline
(section f, run beside section b) imports. Left out on purpose: wandb (imported only with
`tracking=wandb`), tinysoundfont and pretty_midi (`gridtune.data.demo`'s SoundFont rendering; the GPU
check writes `gridtune.data.synth` instead) and the ONNX export extras.

Wheels come from `pip download --no-deps --only-binary=:all: --python-version X.Y --implementation cp
--platform manylinux...` and each file's sha256 must be one uv.lock records for that package. A
package uv.lock knows only as an sdist (antlr4-python3-runtime 4.9.3, pure Python) is downloaded as
its sdist, checked the same way, and built here into a py3-none-any wheel with `pip wheel --no-deps`.
Wheels in --dest that are not in the set (another version) are removed: two versions of one package
would stop the install.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:   # Python 3.10
    from pip._vendor import tomli as tomllib
try:
    from packaging.markers import Marker
except ImportError:
    from pip._vendor.packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
# gridtune's dependencies that the trial, sweep, reduce and predict paths (and bench.py's sections a
# and b with the naive baseline) import on the GPU machine; their own dependencies follow from uv.lock.
ROOTS = ("hydra-core", "omegaconf", "submitit", "hydra-submitit-launcher", "soundfile", "librosa", "filelock",
         "pyyaml", "numpy", "scipy", "matplotlib", "pillow", "tqdm", "torch", "torchaudio")
# The GPU machine image's Python packages ('cuda' image, as listed in the device documentation, read
# 2026-11-17): python3 there is CPython 3.12 with torch 2.11.0 (cu130) and torchaudio 2.11.0.
IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov
pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_env(python_version: str) -> dict:
    full = python_version if python_version.count(".") == 2 else python_version + ".0"
    return {"python_version": ".".join(full.split(".")[:2]), "python_full_version": full,
            "platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


class Lock:
    """uv.lock's packages as resolved for one CPython version on Linux x86_64."""

    def __init__(self, path: Path, python_version: str):
        self.env = marker_env(python_version)
        self.by_name: dict[str, list[dict]] = {}
        for p in tomllib.loads(Path(path).read_text())["package"]:
            self.by_name.setdefault(norm(p["name"]), []).append(p)

    def applies(self, marker: str | None) -> bool:
        return marker is None or Marker(marker).evaluate(self.env)

    def entry(self, name: str, version: str | None = None) -> dict:
        cands = self.by_name.get(norm(name), [])
        if version is not None:
            cands = [p for p in cands if p["version"] == version]
        if len(cands) > 1:
            cands = [p for p in cands if any(self.applies(m) for m in p.get("resolution-markers", []))]
        if len(cands) != 1:
            raise SystemExit(f"gpu_wheels: uv.lock has no single entry of {name} for Python "
                             f"{self.env['python_full_version']} ({len(cands)} found)")
        return cands[0]

    def deps(self, entry: dict) -> list[dict]:
        """The packages `entry` needs here, those that the extras it asks of a dependency add included."""
        out = []
        for d in entry.get("dependencies", []):
            if self.applies(d.get("marker")):
                dep = self.entry(d["name"], d.get("version"))
                out.append(dep)
                out += [self.entry(o["name"], o.get("version")) for x in d.get("extra", [])
                        for o in dep.get("optional-dependencies", {}).get(x, []) if self.applies(o.get("marker"))]
        return out

    def closure(self, roots) -> list[dict]:
        """Every package reachable from roots (roots included), each once, in a stable order."""
        seen, todo = {}, [self.entry(r) for r in roots]
        while todo:
            e = todo.pop(0)
            if norm(e["name"]) not in seen:
                seen[norm(e["name"])] = e
                todo += self.deps(e)
        return sorted(seen.values(), key=lambda e: norm(e["name"]))


def wheel_set(lock: Lock) -> list[dict]:
    """The packages to carry: what the roots need that the image does not hold (the walk stops at the image)."""
    seen, todo = {}, [lock.entry(r) for r in ROOTS if norm(r) not in IMAGE]
    while todo:
        e = todo.pop(0)
        if norm(e["name"]) in seen or norm(e["name"]) in IMAGE:
            continue
        seen[norm(e["name"])] = e
        todo += lock.deps(e)
    return sorted(seen.values(), key=lambda e: norm(e["name"]))


def image_requirements(lock: Lock) -> list[str]:
    """The image's packages that gridtune's dependencies reach, at uv.lock's versions (for a rehearsal)."""
    return [f"{e['name']}=={e['version']}" for e in lock.closure(ROOTS) if norm(e["name"]) in IMAGE]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def lock_hashes(entry: dict) -> dict[str, str]:
    files = list(entry.get("wheels", [])) + ([entry["sdist"]] if "sdist" in entry else [])
    return {f["url"].rsplit("/", 1)[1]: f["hash"] for f in files}


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"gpu_wheels: failed: {' '.join(cmd)}")


def download(entries: list[dict], dest: Path, python_version: str) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    binary = [e for e in entries if e.get("wheels")]
    source = [e for e in entries if not e.get("wheels")]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
        *plat, "-d", str(dest), *(f"{e['name']}=={e['version']}" for e in binary))
    files = []
    for e in binary:
        known = lock_hashes(e)
        got = [f for f in dest.glob("*.whl") if f.name in known]
        if len(got) != 1:
            raise SystemExit(f"gpu_wheels: {e['name']} {e['version']}: expected one wheel uv.lock knows in {dest}, "
                             f"found {[f.name for f in got]}")
        if sha256(got[0]) != known[got[0].name]:
            raise SystemExit(f"gpu_wheels: {got[0].name}: sha256 differs from uv.lock's")
        files.append(got[0])
    for e in source:   # sdist only: fetch it, check it against the lock, build a wheel from it here
        with tempfile.TemporaryDirectory() as tmp:
            pip("download", "--no-deps", "--no-binary=:all:", "-d", tmp, f"{e['name']}=={e['version']}")
            sdist = next(Path(tmp).iterdir())
            if sha256(sdist) != lock_hashes(e).get(sdist.name):
                raise SystemExit(f"gpu_wheels: {sdist.name}: sha256 differs from uv.lock's")
            pip("wheel", "--no-deps", "-w", str(dest), str(sdist))
        built = [f for f in dest.glob("*.whl")
                 if norm(f.name.split("-")[0]) == norm(e["name"]) and f.name.split("-")[1] == e["version"]]
        if len(built) != 1 or not built[0].name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"gpu_wheels: {e['name']}: expected one pure-Python wheel built from the sdist, "
                             f"got {[f.name for f in built]}")
        files.append(built[0])
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / ".whl")
    ap.add_argument("--python-version", default="3.12", help="the GPU image's CPython (default 3.12)")
    ap.add_argument("--lock", type=Path, default=ROOT / "uv.lock")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="print the wheels' name==version and stop")
    what.add_argument("--image-requirements", action="store_true",
                      help="print the image's packages gridtune reaches, at uv.lock's versions, and stop")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d+(\.\d+)?", a.python_version):
        ap.error(f"--python-version={a.python_version}: expected 3.X or 3.X.Y")
    lock = Lock(a.lock, a.python_version)
    entries = wheel_set(lock)
    if a.list or a.image_requirements:
        lines = image_requirements(lock) if a.image_requirements else [f"{e['name']}=={e['version']}" for e in entries]
        print("\n".join(lines))
        return 0
    files = download(entries, a.dest, a.python_version)
    keep = set(files)
    for stale in set(a.dest.glob("*.whl")) - keep:
        stale.unlink()
        print(f"removed {stale.name} (not in the set)")
    sf = [f for f in files if norm(f.name.split("-")[0]) == "soundfile"]
    if sf and "manylinux" not in sf[0].name:
        raise SystemExit(f"gpu_wheels: {sf[0].name}: not the manylinux wheel that bundles libsndfile")
    total = sum(f.stat().st_size for f in files)
    for f in sorted(files, key=lambda f: f.name.lower()):
        print(f"  {f.stat().st_size / 1e6:7.2f} MB  {f.name}")
    print(f"{len(files)} wheels for CPython {a.python_version} manylinux x86_64 in {a.dest}: {total / 1e6:.1f} MB "
          f"({total / 2 ** 20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
