"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

The wheel carries the dashboard as the package ``simx_dashboard`` (``app.py``, ``app_pages/`` and the Streamlit
settings in ``.streamlit/config.toml``), so that ``pip install .`` gives a working ``simx dashboard``. In a source
checkout the same files are used where they are; the repository keeps them at its top because that is where
``streamlit run app.py`` expects them.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["simx", "simx.*"]) + ["simx_dashboard", "simx_dashboard.app_pages"],
    package_dir={"simx_dashboard": ".", "simx_dashboard.app_pages": "app_pages"},
)
