"""Two builds of the encode kernel (``codedml/codes/_kernels.c``) side by side in one process.

A kernel change is judged here, not across two benchmark runs: on a shared machine repeated
runs of one build differed by up to 30% within the hour, while encodes alternated in one
process give stable ratios. The script compiles ``_kernels.c`` as it is at ``--base`` (a git
revision, default ``HEAD``) and as it is in the work tree, with the same compiler command,
loads each under a module name of its own (CPython caches extension modules: two builds
loaded under the package's own name can come back as one module, and a comparison would
then time a build against itself), and alternates ``code.encode(A, B)`` between them, the
order swapped every round, each encode after ``encode.py``'s ``evict`` (its inputs in
memory, not left in cache by the encode before), for each case and size. It prints a table and writes
``benchmarks/results/kernel_ab.json`` (and ``.png``)::

    python benchmarks/kernel_ab.py --base HEAD~1 --sizes 1024 2048 --cases gf-poly gf-mds
    python benchmarks/kernel_ab.py --quick       # size 512, 5 rounds

``work / base`` below 1 means the work tree's kernel is faster. Both builds also encode one
case's input and their tasks are compared entry for entry (they must agree exactly: the
kernels' arithmetic is fixed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)
from encode import PRIME, _operands, evict  # noqa: E402  (benchmarks/encode.py: its cases, tasks, evict)
from encode import cases as encode_cases  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import _encode  # noqa: E402
from codedml.codes._pool import task_pool  # noqa: E402

SOURCE = "codedml/codes/_kernels.c"

#: Short names for cases of ``benchmarks/encode.py`` (its label, input dtype).
CASES = {
    "gf-poly": (f"Polynomial (17) 4x4 GF({PRIME})", "int64"),
    "gf-mds": (f"MDS (17,15) GF({PRIME})", "int64"),
    "gf-sys": (f"MDS (17,15) sys GF({PRIME})", "int64"),
    "f64-sys": ("MDS (17,15) sys", "float64"),
    "f32-sys": ("MDS (17,15) sys", "float32"),
    "f64-sys8": ("MDS (8,6) sys", "float64"),
    "f32-sys8": ("MDS (8,6) sys", "float32"),
    "f64-mds": ("MDS (17,15)", "float64"),
    "f32-mds": ("MDS (17,15)", "float32"),
    "f64-poly": ("Polynomial (17) 4x4", "float64"),
    "f64-mds8": ("MDS (8,6)", "float64"),
    "f64-matdot-sys": ("MatDot (17) m=8 sys", "float64"),
    "f64-matdot": ("MatDot (17) m=8", "float64"),
    "f64-polydot": ("PolyDot (17) 2x2x3", "float64"),
    "f32-poly": ("Polynomial (17) 4x4", "float32"),
    "f32-matdot-sys": ("MatDot (17) m=8 sys", "float32"),
    "f32-mds8": ("MDS (8,6)", "float32"),
}


COMPILER = (sysconfig.get_config_var("CC") or "cc").split()[0]
FLAGS = ["-shared", "-fPIC", "-O2", "-fwrapv"]


def build(source: Path, out: Path) -> None:
    """Compile one ``_kernels.c`` into an extension module (the same command for both
    builds: ``-O2``, as setup.py asks)."""
    cmd = [COMPILER, *FLAGS, f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(out)]
    try:
        got = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise SystemExit(f"cannot run the compiler {COMPILER!r}: {exc}")
    if got.returncode != 0:
        raise SystemExit(f"compiling {source} failed:\n{got.stderr}")


def compiler_version() -> str | None:
    try:
        return subprocess.run([COMPILER, "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def load(path: Path, tag: str):
    """The extension at ``path`` as a module named ``kernel_ab_<tag>._kernels`` (its init
    function is still ``PyInit__kernels``), never a module loaded before under another name."""
    name = f"kernel_ab_{tag}._kernels"
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    if Path(mod.__file__).resolve() != path.resolve():
        raise SystemExit(f"loaded {mod.__file__} for {path}: the comparison would be void")
    return mod


def keyed_cases() -> dict[str, tuple[str, str, object]]:
    """Each :data:`CASES` key's label, input dtype and code (``encode.py``'s cases)."""
    codes = {(c["label"], c["dtype"]): c["code"] for c in encode_cases()}
    return {key: (label, dtype, codes[(label, dtype)]) for key, (label, dtype) in CASES.items()}


def inputs(size: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``A`` and ``B`` (``size x size``) per input dtype of :data:`CASES`: standard normal
    float64 (float32: the same values rounded), GF(65537) residues as int64."""
    data = {"float64": (rng.standard_normal((size, size)), rng.standard_normal((size, size))),
            "int64": (rng.integers(0, PRIME, (size, size)), rng.integers(0, PRIME, (size, size)))}
    data["float32"] = tuple(x.astype(np.float32) for x in data["float64"])
    return data


def run(kernels: dict, cases: list[str], sizes: list[int], rounds: int,
        rng: np.random.Generator) -> list[dict]:
    rows = []
    codes = keyed_cases()
    saved = _encode._K
    try:
        for size in sizes:
            data = inputs(size, rng)
            for key in cases:
                label, dtype, code = codes[key]
                A, B = data[dtype]
                times: dict[str, list[float]] = {"base": [], "work": []}
                tasks = {}
                for r in range(rounds + 2):   # two warm rounds (pool, generators), not timed
                    for which in (("base", "work") if r % 2 else ("work", "base")):
                        _encode._K = kernels[which]
                        evict()   # (each encode from memory, as encode.py times it)
                        t0 = time.perf_counter()
                        enc = code.encode(A, B)
                        dt = time.perf_counter() - t0
                        if r >= 2:
                            times[which].append(dt)
                        if r == 1:
                            tasks[which] = [x.copy() for x in _operands(enc)]
                        del enc
                same = len(tasks["base"]) == len(tasks["work"]) and all(
                    np.array_equal(a, b) for a, b in zip(tasks["base"], tasks["work"]))
                mb, mw = statistics.median(times["base"]), statistics.median(times["work"])
                rows.append({"case": label, "key": key, "dtype": dtype, "size": size,
                             "rounds": rounds, "base_s": mb, "work_s": mw, "work_over_base": mw / mb,
                             "min_ratio": min(times["work"]) / min(times["base"]),
                             "tasks_identical": same, "samples": times})
                print(f"{label:32s} {dtype:8s} {size:5d}  base {1e3 * mb:9.2f} ms  work "
                      f"{1e3 * mw:9.2f} ms  work/base {mw / mb:6.3f}  (min {rows[-1]['min_ratio']:.3f})"
                      f"  tasks {'identical' if same else 'DIFFER'}", flush=True)
    finally:
        _encode._K = saved
    return rows


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows)), 4))
    labels = [f"{r['key']} {r['size']}" for r in rows]
    ax.bar(range(len(rows)), [r["work_over_base"] for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("encode time, work tree / base")
    ax.set_title("Encode kernel: work tree against base, side by side in one process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision of the base kernel (default HEAD)")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--rounds", type=int, default=9, help="timed encodes per build (default 9)")
    ap.add_argument("--quick", action="store_true", help="size 512, 5 rounds")
    ap.add_argument("--simd", type=int, default=-1, choices=(-1, 0, 1, 2),
                    help="lincomb's instruction set for both builds: -1 the best this CPU has "
                         "(default), 2 AVX-512F, 1 AVX2/FMA, 0 plain C (at most what the CPU has)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [512], 5
    for name, v in (("--rounds", args.rounds), *(("--sizes", s) for s in args.sizes)):
        if v < 1:
            raise SystemExit(f"{name} must be at least 1, got {v}")
    try:
        base_src = subprocess.run(["git", "show", f"{args.base}:{SOURCE}"], cwd=REPO,
                                  capture_output=True, text=True, check=True).stdout
        base_rev = subprocess.run(["git", "rev-parse", args.base], cwd=REPO, capture_output=True,
                                  text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--base {args.base!r}: not a revision with {SOURCE} ({exc.stderr.strip()})")
    except OSError as exc:
        raise SystemExit(f"--base {args.base!r} needs git, which did not run: {exc}")
    work_src = (REPO / SOURCE).read_text()
    sha = {"base": hashlib.sha256(base_src.encode()).hexdigest(),
           "work": hashlib.sha256(work_src.encode()).hexdigest()}
    if sha["base"] == sha["work"]:
        print(f"note: {SOURCE} is the same at --base {args.base} and in the work tree: the two "
              "builds are of one source, and the ratios measure only the noise", file=sys.stderr)
    _encode.LINCOMB_SIMD = args.simd
    pool = task_pool()
    pool.limit = max(pool.limit, 2 << 30)   # every case's tasks reused between its encodes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "base.c").write_text(base_src)   # (the work tree's is compiled where it lies)
        build(tmp / "base.c", tmp / "base.so")
        build(REPO / SOURCE, tmp / "work.so")
        kernels = {"base": load(tmp / "base.so", "base"), "work": load(tmp / "work.so", "work")}
        rows = run(kernels, args.cases, args.sizes, args.rounds, np.random.default_rng(0))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": _machine.machine_info(),
           "parameters": {"base": args.base, "base_commit": base_rev, "sizes": args.sizes,
                          "rounds": args.rounds, "cases": args.cases, "simd": args.simd,
                          "build": " ".join([COMPILER, *FLAGS]),
                          "compiler": compiler_version(),
                          "source_sha256": sha, "same_source": sha["base"] == sha["work"]},
           "rows": rows}
    (args.out / "kernel_ab.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    plot(rows, args.out / "kernel_ab.png")
    print(f"wrote {args.out / 'kernel_ab.json'} and kernel_ab.png")
    return 0 if all(r["tasks_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
