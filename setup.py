"""Builds the optional C extension and ships the policies; the rest is in pyproject.toml.

The Cedar policies live at the top of the repository (``policies/``); a build copies them, with
their schema and their tests, into the package as ``gateway/_policies`` so that an installed
gateway finds its own policies without the source tree (``gateway.config.default_policies_dir``).

``gateway.audit._native`` moves the offline verifier's hashing loops out of the interpreter
(SHA-256 from OpenSSL's libcrypto). It needs a C compiler and OpenSSL's headers; where they are
missing the build says so and goes on without it, and the verifier uses the same loops in
Python (``gateway/audit/_verify_fast.py``), about a quarter as fast.
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithPolicies(build_py):
    """``build_py`` that also copies ``policies/`` into the built package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "gateway" / "_policies"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree("policies", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    cmdclass={"build_py": BuildWithPolicies},
    ext_modules=[
        Extension(
            "gateway.audit._native",
            ["gateway/audit/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ],
)
