"""Build configuration for the optional C extension ``tensorpng._native``.

Everything else about the package is in pyproject.toml. The extension is ``optional=True``:
where no C compiler exists, ``pip install`` still succeeds and tensorpng falls back to its
NumPy + ISA-L encoder (``tensorpng info`` says which one is active, and why).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    # -O3: the row filters are plain loops that the compiler vectorizes (for AVX2 in the
    # functions compiled for it, chosen at run time).
    compile_args = ["-O3", "-fvisibility=hidden"]

setup(
    ext_modules=[
        Extension(
            "tensorpng._native",
            sources=["tensorpng/_native.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
