"""Pictures for the demo, drawn with PIL alone: attention heat maps over an image, and a similarity
matrix with image thumbnails as column heads."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of a perceptually ordered dark-to-bright map (after matplotlib's "inferno").
_HEAT_ANCHORS = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
                          (245, 125, 21), (250, 193, 39), (252, 255, 164)], dtype=np.float32)


def heat_colors(values):
    """Values in [0, 1] -> uint8 RGB of a dark-to-bright colour map."""
    positions = np.clip(values, 0, 1) * (len(_HEAT_ANCHORS) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_HEAT_ANCHORS) - 2)
    weight = (positions - low)[..., None]
    return (_HEAT_ANCHORS[low] * (1 - weight) + _HEAT_ANCHORS[low + 1] * weight).round().astype(np.uint8)


def heatmap_overlay(image, grid, size=192, alpha=0.55):
    """`grid` (min-max scaled, bicubic upsampled) drawn over `image`, both `size` x `size`."""
    grid = np.asarray(grid, dtype=np.float32)
    spread = grid.max() - grid.min()
    scaled = (grid - grid.min()) / spread if spread > 0 else np.zeros_like(grid)
    smooth = np.asarray(Image.fromarray(scaled, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    heat = Image.fromarray(heat_colors(smooth))
    return Image.blend(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), heat, alpha)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def similarity_heatmap(images, captions, matrix, cell=64, label_width=260):
    """The matrix as coloured cells with values; image thumbnails head the columns, captions the rows."""
    rows, columns = matrix.shape
    canvas = Image.new("RGB", (label_width + columns * cell, cell + rows * cell), "white")
    draw, font = ImageDraw.Draw(canvas), _font(13)
    low, high = float(matrix.min()), float(matrix.max())
    colors = heat_colors((matrix - low) / (high - low) if high > low else np.zeros_like(matrix))
    for j, image in enumerate(images):
        canvas.paste(image.convert("RGB").resize((cell - 6, cell - 6)), (label_width + j * cell + 3, 3))
    for i, caption in enumerate(captions):
        top = cell + i * cell
        text = caption if len(caption) <= 34 else caption[:33] + "…"
        draw.text((6, top + cell // 2), text, fill="black", font=font, anchor="lm")
        for j in range(columns):
            left = label_width + j * cell
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=tuple(int(c) for c in colors[i, j]))
            shade = "black" if colors[i, j].mean() > 140 else "white"
            draw.text((left + cell // 2, top + cell // 2), f"{matrix[i, j]:.2f}", fill=shade, font=font, anchor="mm")
    return canvas


__all__ = ["heat_colors", "heatmap_overlay", "similarity_heatmap"]
