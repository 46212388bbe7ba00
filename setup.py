"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

The wheel carries the dashboard as the package ``simx_dashboard`` (``app.py``, ``app_pages/`` with its scripts and
assets, and the Streamlit settings in ``.streamlit/config.toml``), so that ``pip install .`` gives a working
``simx dashboard``. In a source checkout the same files are used where they are; the repository keeps them at its
top because that is where ``streamlit run app.py`` expects them.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class _BuildPy(build_py):
    """The dashboard package maps to the repository's top folder: take its ``app.py`` only, not this file."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "simx_dashboard" and m[1] != "app")]


setup(
    packages=find_packages(include=["simx", "simx.*"]) + ["simx_dashboard", "simx_dashboard.app_pages"],
    package_dir={"simx_dashboard": ".", "simx_dashboard.app_pages": "app_pages"},
    cmdclass={"build_py": _BuildPy},
)
