"""The versions recorded in every manifest, read from package metadata (nothing is imported)."""

from __future__ import annotations

import importlib.metadata
import platform

import safemix


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python's and safemix's versions and each named package's installed version (``not installed`` if absent)."""
    versions = {"python": platform.python_version(), "safemix": safemix.__version__}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
