"""Builds the optional C extension; everything else about the package is in pyproject.toml.

``gateway.audit._native`` moves the offline verifier's hashing loops out of the interpreter
(SHA-256 from OpenSSL's libcrypto). It needs a C compiler and OpenSSL's headers; where they are
missing the build says so and goes on without it, and the verifier uses the same loops in
Python (``gateway/audit/_verify_fast.py``), about a quarter as fast.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.audit._native",
            ["gateway/audit/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
