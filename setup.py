"""Build hook: the wheel carries the shipped prompts/ and pipelines/ inside the package.

The repository keeps them at the top level (users copy and edit them there); an
installed factory finds them as factory/_shipped/ (see factory/core/resources.py). Everything
else about the build is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("prompts", "pipelines")


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "factory" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithShipped})
