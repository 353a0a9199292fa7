"""Image processor for the XModal vision tower, on transformers' PIL backend (torchvision is unusable here).

Every input becomes an 8-bit RGB image first (transparent pixels composited on
`background_color`), then the standard CLIP-style pipeline runs: resize the shortest edge
(bicubic), centre-crop, rescale to [0, 1], normalise.

Defaults: 64 px, mean = std = 0.5 (pixels in [-1, 1]). The towers are trained from scratch on
rendered emoji and digits, so CLIP's photo statistics would describe the wrong data.
"""

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_transforms import get_resize_output_image_size
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.processing_utils import ImagesKwargs

ACCEPTED_IMAGES = (
    "a PIL.Image (any mode), a numpy array or torch tensor (HW, HWC or CHW with 1-4 channels; uint8, "
    "bool, integers in 0-255, uint16, or floats in [0, 1] or [0, 255]; a 4-D array is a batch), a file "
    "path (str or pathlib.Path), encoded image bytes, a {'bytes' or 'path'} dict (a `datasets` Image "
    "column read with decode=False), or a flat list of these"
)
# PIL modes with an alpha channel that numpy sees as (H, W, 2) or (H, W, 4) straight away.
_ALPHA_MODES = {"LA", "RGBA"}
_CONVERT_TO_RGBA = {"PA", "RGBa"}


def bad_image(where, problem):
    """The ValueError for a rejected image: what was wrong, and what is accepted."""
    return ValueError(f"{where}: {problem}. Accepted: {ACCEPTED_IMAGES}.")


class XModalImagesKwargs(ImagesKwargs, total=False):
    """ImagesKwargs plus the colour (R, G, B) that transparent pixels are composited on."""

    # Typed loosely so that a bad value reaches `_check_background` and becomes a ValueError.
    background_color: Any


def split_image_batch(images):
    """Return (list of single images, is_batched). Lists and 4-D arrays are batches."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise bad_image("images", "empty list")
        return list(images), True
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise bad_image("images", f"empty batch of shape {tuple(images.shape)}")
        return list(images), True
    return [images], False


def _open_image(source, where):
    """Decode a file path or encoded bytes with PIL, applying the EXIF orientation."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise bad_image(where, f"no image file at {os.fspath(source)!r} (URLs are not fetched)")
        handle = source
    else:
        handle = io.BytesIO(bytes(source))
    try:
        with Image.open(handle) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except Exception as error:  # UnidentifiedImageError, truncated data, decompression bombs...
        raise bad_image(where, f"could not decode the image ({type(error).__name__}: {error})") from error


def _to_uint8(array, where):
    """Scale a numeric array to uint8 by the rules in ACCEPTED_IMAGES."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit images
        return np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise bad_image(where, f"integer pixels must lie in 0-255 (or be uint16), got "
                                   f"[{array.min()}, {array.max()}]")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise bad_image(where, "the image contains NaN or infinite pixels")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise bad_image(where, f"float pixels must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.round(array.astype(np.float32) * scale).astype(np.uint8)
    raise bad_image(where, f"pixels of dtype {array.dtype} are not an image")


def _pil_to_array(image, where):
    """A PIL image of any mode as (H, W) or (H, W, C) uint8, C in {2, 3, 4}, keeping its alpha."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in _CONVERT_TO_RGBA:
        image = image.convert("RGBA")
    elif mode == "La":  # premultiplied luminance + alpha; PIL cannot convert it
        luminance, alpha = np.moveaxis(np.asarray(image, dtype=np.float32), -1, 0)
        straight = np.where(alpha > 0, luminance * 255.0 / np.maximum(alpha, 1), 0)
        return np.stack([np.clip(np.round(straight), 0, 255), alpha], axis=-1).astype(np.uint8)
    elif mode in ("1", "L", "RGB", "F") or mode in _ALPHA_MODES or mode.startswith("I;16"):
        pass
    elif mode == "I":
        pixels = np.asarray(image)
        # 32-bit integer images are usually 16-bit data (PNG); 8-bit data stays as it is.
        pixels = np.clip(pixels, 0, 65535)
        return _to_uint8(pixels.astype(np.uint16) if pixels.max() > 255 else pixels.astype(np.uint8), where)
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            image = image.convert("RGB")
        except ValueError as error:
            raise bad_image(where, f"cannot convert PIL mode {mode!r} to RGB ({error})") from error
    return _to_uint8(np.asarray(image), where)


def _tensor_to_array(tensor, where):
    tensor = tensor.detach().cpu()
    if tensor.is_complex():
        raise bad_image(where, "complex tensors are not images")
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def _channels_last(array, where, channels_first_preferred):
    """(H, W) or 3-D array -> (H, W) or (H, W, C); a 1-4 sized axis at either end is the channel axis."""
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise bad_image(where, f"expected a 2-D or 3-D image, got shape {array.shape}")
    first, last = array.shape[0] <= 4, array.shape[-1] <= 4
    if first and (channels_first_preferred or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise bad_image(where, f"no channel axis of size 1-4 at either end of shape {array.shape}")


def _composite(pixels, background):
    """(H, W[, C]) uint8 -> (H, W, 3) uint8 RGB; alpha blends onto `background` with integer rounding."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    color = pixels[..., :1].repeat(3, axis=-1) if channels in (1, 2) else pixels[..., :3]
    if channels in (1, 3):
        return np.ascontiguousarray(color)
    alpha = pixels[..., -1:].astype(np.uint32)
    background = np.asarray(background, dtype=np.uint32)
    blended = (color.astype(np.uint32) * alpha + background * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def load_rgb_image(image, background_color=(255, 255, 255), where="image"):
    """Any accepted single image -> (3, H, W) uint8 RGB array."""
    return _chw(rgb_image(image, background_color, where))


def _chw(image):
    """An `rgb_image` result as a (3, H, W) uint8 array."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(image), -1, 0))


def rgb_image(image, background_color=(255, 255, 255), where="image"):
    """Any accepted single image -> 8-bit RGB pixels: the PIL image itself when it is already RGB, else an
    (H, W, 3) uint8 array (both read the same through `np.asarray`)."""
    if image is None:
        raise bad_image(where, "got None")
    if isinstance(image, dict):
        source = image.get("bytes") if image.get("bytes") is not None else image.get("path")
        if source is None:
            raise bad_image(where, f"a dict needs 'bytes' or 'path', got keys {sorted(map(str, image))}")
        image = source
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        image = _open_image(image, where)
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise bad_image(where, f"zero-size image ({image.width}x{image.height})")
        if image.mode == "RGB":
            return image
        pixels = _pil_to_array(image, where)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        is_tensor = isinstance(image, torch.Tensor)
        array = _tensor_to_array(image, where) if is_tensor else image
        if array.size == 0:
            raise bad_image(where, f"zero-size image of shape {tuple(array.shape)}")
        pixels = _to_uint8(_channels_last(array, where, channels_first_preferred=is_tensor), where)
    else:
        raise bad_image(where, f"unsupported type {type(image).__name__}")
    return _composite(pixels, background_color)


_IMAGES_PER_THREAD = 8
_POOLS = {}


def _thread_pool(threads):
    """A thread pool of this size for this process (a forked child makes its own: threads do not survive fork)."""
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="xmodal-image")
    return _POOLS[key]


def _shortest_edge_size(height, width, shortest):
    """(height, width) after resizing the shortest edge to `shortest`, as the base class computes it."""
    return get_resize_output_image_size(np.empty((1, height, width), np.uint8), size=shortest,
                                        default_to_square=False, input_data_format=ChannelDimension.FIRST)


def _check_background(color):
    values = tuple(color) if isinstance(color, (list, tuple)) else ()
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in values):
        raise ValueError(f"background_color must be three integers in 0-255 (R, G, B), got {color!r}.")
    return tuple(int(v) for v in values)


class XModalImageProcessor(PilBackend):
    """CLIP-style image processor (PIL backend) that accepts every PIL mode, arrays, paths and bytes."""

    valid_kwargs = XModalImagesKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    size = {"shortest_edge": 64}
    default_to_square = False
    crop_size = {"height": 64, "width": 64}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True  # always done: the tower needs three channels
    background_color = (255, 255, 255)

    def _standardize_kwargs(self, background_color=None, **kwargs):
        kwargs = super()._standardize_kwargs(**kwargs)
        kwargs["background_color"] = None if background_color is None else _check_background(background_color)
        return kwargs

    def _preprocess(self, images, do_resize, size, resample, do_center_crop, crop_size, do_rescale, rescale_factor,
                    do_normalize, image_mean, image_std, do_pad, pad_size, return_tensors, **kwargs):
        """The base pipeline's result, faster: each image is resized and cropped as 8-bit pixels in PIL (the
        base class converts between arrays and PIL for every image; RGB PIL inputs are never copied to arrays
        here; a batch of 16 or more is spread over torch's threads), then the batch is rescaled and normalised
        at once with the base class's arithmetic: the same pixels, bit for bit (tested). Other settings
        (padding, longest edge...) take the base class's path."""
        shortest = size.shortest_edge if do_resize else None
        fast = (do_resize and do_center_crop and shortest and not size.longest_edge and not do_pad
                and crop_size.height and crop_size.width)
        crop_h, crop_w = (crop_size.height, crop_size.width) if fast else (None, None)
        sizes = [image.size[::-1] if isinstance(image, Image.Image) else image.shape[:2] for image in images]
        plans = [_shortest_edge_size(height, width, shortest) for height, width in sizes] if fast else []
        if (not fast or resample is None or not isinstance(resample, (PILImageResampling, int))
                or any(new_h < crop_h or new_w < crop_w for new_h, new_w in plans)):  # padding: the base class's
            return super()._preprocess([_chw(image) for image in images], do_resize, size, resample, do_center_crop,
                                       crop_size, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                                       do_pad, pad_size, return_tensors, **kwargs)
        batch = np.empty((len(images), crop_h, crop_w, 3), dtype=np.uint8)

        def resize_and_crop(index):
            (height, width), (new_h, new_w) = sizes[index], plans[index]
            image = images[index]
            pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
            if (new_h, new_w) != (height, width):
                pil = pil.resize((new_w, new_h), resample=resample)
            top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
            batch[index] = np.asarray(pil.crop((left, top, left + crop_w, top + crop_h)))

        # PIL resizes without the GIL: a batch is spread over torch's intra-op threads (1 in DataLoader workers).
        threads = min(torch.get_num_threads(), len(images) // _IMAGES_PER_THREAD)
        if threads > 1:
            list(_thread_pool(threads).map(resize_and_crop, range(len(images))))
        else:
            for index in range(len(images)):
                resize_and_crop(index)
        # The base class's arithmetic, on the whole batch: rescale in float64, then float32, then normalise.
        pixels = batch.transpose(0, 3, 1, 2)
        if do_rescale:
            pixels = (pixels.astype(np.float64) * rescale_factor).astype(np.float32)
        else:
            pixels = pixels.astype(np.float32)
        if do_normalize:
            mean = np.asarray(image_mean, dtype=np.float32).reshape(-1, 1, 1)
            std = np.asarray(image_std, dtype=np.float32).reshape(-1, 1, 1)
            pixels = (pixels - mean) / std
        pixels = np.ascontiguousarray(pixels)
        return BatchFeature(data={"pixel_values": pixels if return_tensors else list(pixels)},
                            tensor_type=return_tensors)

    def _prepare_image_like_inputs(self, images, *args, background_color=None, **kwargs):
        """Load and convert every image to 8-bit RGB (`rgb_image`), with errors that name the bad item."""
        batch, is_batched = split_image_batch(images)
        background = background_color or self.background_color
        return [
            rgb_image(image, background, where=f"images[{index}]" if is_batched else "image")
            for index, image in enumerate(batch)
        ]


__all__ = ["XModalImageProcessor", "ACCEPTED_IMAGES"]
