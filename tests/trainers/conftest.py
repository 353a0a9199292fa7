import pytest

from .helpers import ensure_tiny_scenes


@pytest.fixture(scope="session")
def tiny_scenes():
    """The tiny scene dataset (built on first use, then reused from tests/artifacts/)."""
    return ensure_tiny_scenes()
