"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

optional=True: without a compiler the build goes on and wrappers/packets.py uses pure Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wrappers._csum", ["wrappers/_csum.c"], optional=True)])
