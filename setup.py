"""Build hook: ship the repository's mappings/ inside the wheel as schemahub/mappings/.

The mappings stay where they are edited (mappings/ at the repository root, also copied into the Lambda code
asset by cdk_app/package.py); every wheel, and so every `pip install .`, gets a copy beside the code, which
schemahub.config.default_mappings_dir() finds when there is no checkout around the package. Everything else
is declared in pyproject.toml.
"""

from pathlib import Path
from shutil import copytree, ignore_patterns

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithMappings(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's own mappings/
        src = ROOT / "mappings"
        if not (src / "product_ids_seed.yaml").is_file():
            raise SystemExit(f"schemahub build: {src} is missing; build from a full checkout (or an sdist of one)")
        copytree(src, Path(self.build_lib) / "schemahub" / "mappings", dirs_exist_ok=True,
                 ignore=ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithMappings})
