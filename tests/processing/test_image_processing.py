"""XModalImageProcessor: the pipeline against a manual PIL + numpy computation, every PIL mode,
every accepted input form, every rejected one, save/load, Auto-class resolution, and fuzzing."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from xmodal.processing import XModalImageProcessor


@pytest.fixture(scope="module")
def processor():
    return XModalImageProcessor()


def pixels(processor, images, **kwargs):
    return processor(images, return_tensors="np", **kwargs)["pixel_values"]


def manual_pipeline(image, size=64):
    """Reference: resize the shortest edge (bicubic), centre-crop, scale to [0, 1], (x - 0.5) / 0.5."""
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    image = image.resize(new_size, Image.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return ((array - 0.5) / 0.5).transpose(2, 0, 1)


def random_image(width=97, height=50, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def test_output_shape_dtype_and_range(processor):
    out = pixels(processor, [random_image(), random_image(30, 200, seed=1)])
    assert out.shape == (2, 3, 64, 64) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize("size", [(97, 50), (50, 97), (64, 64), (200, 200), (3, 7)])
def test_matches_manual_pil_numpy_pipeline(processor, size):
    image = random_image(*size)
    np.testing.assert_allclose(pixels(processor, image)[0], manual_pipeline(image), atol=1e-6)


@pytest.mark.parametrize("sizes", [[(320, 240), (97, 50), (50, 97)], [(64, 64), (65, 64), (200, 201)], [(3, 7)]])
def test_batch_path_equals_clip_image_processor_bit_for_bit(processor, sizes):
    """The batched fast path (resize + crop in PIL, batch arithmetic) gives CLIPImageProcessor's pixels."""
    from transformers import CLIPImageProcessor
    from transformers.utils import logging

    logging.set_verbosity_error()  # CLIPImageProcessor without torchvision: its PIL backend
    clip = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                              image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images = [random_image(*size, seed=i) for i, size in enumerate(sizes)]
    for tensors in ("np", "pt"):
        ours, theirs = (p(images, return_tensors=tensors)["pixel_values"] for p in (processor, clip))
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    padded = {"size": {"shortest_edge": 48}}  # the crop is larger than the resized image: the padding path
    np.testing.assert_array_equal(XModalImageProcessor(**padded)(images, return_tensors="np")["pixel_values"],
                                  CLIPImageProcessor(**{**clip.to_dict(), **padded})(
                                      images, return_tensors="np")["pixel_values"])
    listed = processor(images)["pixel_values"]
    assert isinstance(listed, list) and len(listed) == len(images)
    np.testing.assert_array_equal(np.stack(listed), pixels(processor, images))


def test_threaded_batch_equals_one_image_at_a_time(processor):
    """A batch of 24 is resized on 2 threads; every image comes out as it does alone."""
    images = [random_image(40 + 7 * i, 90 - 2 * i, seed=i) for i in range(24)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batch = pixels(processor, images)
    finally:
        torch.set_num_threads(threads)
    alone = np.concatenate([pixels(processor, image) for image in images])
    np.testing.assert_array_equal(batch, alone)


def test_pt_and_np_agree(processor):
    image = random_image()
    torch_out = processor(image, return_tensors="pt")["pixel_values"]
    assert isinstance(torch_out, torch.Tensor) and torch_out.dtype == torch.float32
    np.testing.assert_array_equal(torch_out.numpy(), pixels(processor, image))


ALL_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "RGBa", "La", "CMYK", "YCbCr", "LAB", "HSV", "RGBX",
             "I", "I;16", "I;16B", "I;16L", "F"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_pil_mode_becomes_rgb(processor, mode):
    image = Image.new(mode, (20, 12))
    out = pixels(processor, image)
    assert out.shape == (1, 3, 64, 64) and np.isfinite(out).all()


def test_grey_modes_match_rgb_conversion(processor):
    grey = random_image(mode="L")
    np.testing.assert_allclose(pixels(processor, grey)[0], manual_pipeline(grey), atol=1e-6)
    np.testing.assert_array_equal(pixels(processor, grey), pixels(processor, np.asarray(grey)))


def test_cmyk_matches_pil_conversion(processor):
    image = random_image(mode="CMYK")
    np.testing.assert_allclose(pixels(processor, image)[0], manual_pipeline(image.convert("RGB")), atol=1e-6)


def test_transparent_pixels_take_the_background_colour(processor):
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.allclose(pixels(processor, clear), 1.0)  # white
    black = pixels(processor, clear, background_color=(0, 0, 0))
    assert np.allclose(black, -1.0)
    half = pixels(processor, Image.new("RGBA", (8, 8), (255, 0, 0, 128)), background_color=[0, 0, 255])
    expected = (np.array([255 * 128, 0, 255 * 127]) + 127) // 255 / 255.0 * 2 - 1
    np.testing.assert_allclose(half[0, :, 0, 0], expected, atol=1e-6)


def test_palette_with_transparency_uses_background(processor):
    image = Image.new("P", (6, 6), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    assert np.allclose(pixels(processor, image), 1.0)
    del image.info["transparency"]
    np.testing.assert_allclose(pixels(processor, image)[0, :, 0, 0], np.array([10, 20, 30]) / 255 * 2 - 1, atol=1e-6)


def test_la_and_pa_modes_composite(processor):
    image = Image.new("LA", (4, 4), (0, 0))
    assert np.allclose(pixels(processor, image, background_color=(255, 255, 255)), 1.0)
    assert np.allclose(pixels(processor, Image.new("LA", (4, 4), (0, 255))), -1.0)


def test_high_bit_depth_modes_are_scaled(processor):
    white16 = Image.new("I;16", (5, 5), 65535)
    assert np.allclose(pixels(processor, white16), 1.0)
    assert np.allclose(pixels(processor, Image.new("I", (5, 5), 65535)), 1.0)
    assert np.allclose(pixels(processor, Image.new("I", (5, 5), 255)), 1.0)
    assert np.allclose(pixels(processor, Image.new("F", (5, 5), 1.0)), 1.0)
    assert np.allclose(pixels(processor, Image.new("F", (5, 5), 0.0)), -1.0)


def test_array_layouts_and_dtypes_agree(processor):
    image = random_image(40, 30)
    hwc = np.asarray(image)
    reference = pixels(processor, image)
    variants = [hwc, hwc.transpose(2, 0, 1), torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
                torch.from_numpy(hwc.copy()), hwc.astype(np.float32) / 255.0, hwc.astype(np.float64),
                hwc.astype(np.int64), torch.from_numpy(hwc.transpose(2, 0, 1) / 255.0).half()]
    for variant in variants[:-1]:
        np.testing.assert_array_equal(pixels(processor, variant), reference)
    np.testing.assert_allclose(pixels(processor, variants[-1]), reference, atol=2 / 255 * 2)


def test_grey_and_alpha_arrays(processor):
    grey = np.full((10, 10), 255, np.uint8)
    assert np.allclose(pixels(processor, grey), 1.0)
    assert np.allclose(pixels(processor, grey[..., None]), 1.0)
    rgba = np.zeros((10, 10, 4), np.uint8)
    assert np.allclose(pixels(processor, rgba), 1.0)
    assert np.allclose(pixels(processor, np.zeros((10, 10), bool)), -1.0)
    assert np.allclose(pixels(processor, np.full((10, 10), 65535, np.uint16)), 1.0)


def test_paths_and_bytes(processor, tmp_path):
    image = random_image()
    png = tmp_path / "image.png"
    image.save(png)
    reference = pixels(processor, image)
    np.testing.assert_array_equal(pixels(processor, str(png)), reference)
    np.testing.assert_array_equal(pixels(processor, Path(png)), reference)
    np.testing.assert_array_equal(pixels(processor, png.read_bytes()), reference)
    np.testing.assert_array_equal(pixels(processor, {"bytes": png.read_bytes(), "path": None}), reference)
    np.testing.assert_array_equal(pixels(processor, {"bytes": None, "path": str(png)}), reference)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    assert pixels(processor, [buffer.getvalue(), bytearray(buffer.getvalue())]).shape == (2, 3, 64, 64)


def test_batches_lists_and_4d_arrays(processor):
    batch = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    from_array = pixels(processor, batch)
    from_list = pixels(processor, list(batch))
    assert from_array.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(from_array, from_list)
    mixed = [random_image(), np.asarray(random_image()), torch.zeros(3, 5, 5)]
    assert pixels(processor, mixed).shape == (3, 3, 64, 64)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (2, 1)])
def test_tiny_and_thin_images(processor, size):
    out = pixels(processor, Image.new("RGB", size, (255, 0, 0)))
    assert out.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(out[0, :, 32, 32], [1, -1, -1], atol=1e-6)


BAD_INPUTS = {
    "corrupt bytes": (b"\x89PNG\r\n\x1a\n not really", "could not decode"),
    "empty bytes": (b"", "could not decode"),
    "missing file": ("/no/such/image.png", "no image file"),
    "zero-size PIL": (Image.new("RGB", (0, 5)), "zero-size"),
    "zero-size array": (np.zeros((0, 4, 3), np.uint8), "zero-size"),
    "None": (None, "got None"),
    "None in batch": ([np.zeros((4, 4, 3), np.uint8), None], r"images\[1\]: got None"),
    "dict without image": ({"image": 1}, "a dict needs 'bytes' or 'path'"),
    "unknown type": (object(), "unsupported type object"),
    "number": (3.5, "unsupported type float"),
    "nested list": ([[np.zeros((4, 4, 3), np.uint8)]], "unsupported type list"),
    "empty list": ([], "empty list"),
    "float out of range": (np.full((4, 4, 3), 300.0), "float pixels"),
    "negative ints": (np.full((4, 4), -1), "0-255"),
    "nan": (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    "five channels": (np.zeros((5, 6, 5), np.uint8), "channel axis"),
    "1-D array": (np.zeros(5, np.uint8), "2-D or 3-D"),
    "5-D array": (np.zeros((1, 1, 4, 4, 3), np.uint8), "2-D or 3-D"),
    "complex tensor": (torch.zeros(3, 4, 4, dtype=torch.complex64), "complex"),
    "string dtype": (np.array([["a"]]), "dtype"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_value_error_naming_the_problem(processor, name):
    bad, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message) as error:
        processor(bad)
    assert "Accepted: a PIL.Image" in str(error.value)


@pytest.mark.parametrize("color", [(0, 0), (0, 0, 256), "white", (0.5, 0, 0)])
def test_bad_background_colour(processor, color):
    with pytest.raises(ValueError, match="background_color"):
        processor(np.zeros((4, 4, 4), np.uint8), background_color=color)


def test_save_load_round_trip(tmp_path):
    processor = XModalImageProcessor(background_color=(0, 128, 255), size={"shortest_edge": 32},
                                     crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path)
    reloaded = XModalImageProcessor.from_pretrained(tmp_path)
    assert reloaded.background_color == (0, 128, 255)
    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    np.testing.assert_array_equal(pixels(reloaded, image), pixels(processor, image))
    assert pixels(reloaded, image).shape == (1, 3, 32, 32)


def test_auto_image_processor_resolves_saved_folder(tmp_path):
    from transformers import AutoImageProcessor

    from xmodal.processing.registration import register_processing_auto_classes

    assert register_processing_auto_classes()
    XModalImageProcessor(background_color=(1, 2, 3)).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is XModalImageProcessor and loaded.background_color == (1, 2, 3)


ARRAY_DTYPES = [np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def image_like(draw):
    height, width = draw(st.integers(0, 24)), draw(st.integers(0, 24))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    shape = (height, width) if channels is None else (
        (channels, height, width) if draw(st.booleans()) else (height, width, channels))
    dtype = draw(st.sampled_from(ARRAY_DTYPES))
    scale = draw(st.sampled_from([1.0, 255.0, 65535.0, 1000.0, -1.0]))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).random(shape) * scale
    array = values.astype(dtype)
    if draw(st.booleans()) and array.dtype != np.uint16:
        array = torch.from_numpy(np.ascontiguousarray(array))
    return array


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_like())
def test_fuzz_arrays_give_valid_output_or_value_error(image):
    processor = XModalImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    try:
        out = processor(image, return_tensors="np")["pixel_values"]
    except ValueError:
        return
    assert out.shape == (1, 3, 16, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= -1.0 and out.max() <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ALL_MODES), st.integers(1, 30), st.integers(1, 30), st.binary(max_size=64))
def test_fuzz_pil_modes_and_random_bytes(mode, width, height, junk):
    processor = XModalImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    out = processor(Image.new(mode, (width, height)), return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError):
        processor(junk)
