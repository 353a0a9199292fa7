import pytest

from .helpers import ensure_tiny_scenes


@pytest.fixture(scope="session")
def tiny_scenes():
    """The tiny scene dataset (built on first use, then reused from tests/artifacts/)."""
    return ensure_tiny_scenes()


@pytest.fixture(scope="module")
def tiny_processor():
    """A processor for the tiny scenes: 32 px images, 16 mel bins, the built-in tokenizer."""
    from xmodal.processing import XModalFeatureExtractor, XModalImageProcessor, XModalProcessor, load_default_tokenizer

    return XModalProcessor(image_processor=XModalImageProcessor(size={"shortest_edge": 32},
                                                                crop_size={"height": 32, "width": 32}),
                           feature_extractor=XModalFeatureExtractor(feature_size=16, max_duration=4.0),
                           tokenizer=load_default_tokenizer())
