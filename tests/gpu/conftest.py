"""GPU tests reuse the integration tests' tiny-model fixtures."""

from tests.integration.conftest import tiny_mixture, tiny_model_dir  # noqa: F401 (fixtures, found by name)
