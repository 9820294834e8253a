"""Build hook for the one optional compiled module, ``codedml.codes._kernels``.

Everything else is in setup.cfg. The extension is ``optional``: where no C compiler is found
the install goes on without it and codedml runs its numpy encode (``codedml.codes._encode``
says which it uses: ``kernels()``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("codedml.codes._kernels", ["codedml/codes/_kernels.c"],
                             extra_compile_args=["-O2"], optional=True)])
