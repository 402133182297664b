"""Pixels: decoded frames to uint8, captioned panels, grids, a colour map and GIF / MP4 / PNG files.

Everything here works on plain ``numpy`` arrays of shape (H, W, 3) uint8 (RGB), so the same panel
that goes into a GIF is what ``twm play`` blits into its window and what TensorBoard receives.
Text is drawn with Pillow's built-in font (no font files, no matplotlib), and only ASCII is used:
Pillow's bitmap fallback font (without FreeType) cannot encode characters such as a Greek gamma.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from twm.envs.minatar import render_state

CAPTION_BG = (20, 20, 28)
CAPTION_FG = (235, 235, 235)
MASKED_RGB = (96, 96, 96)
SEPARATOR_RGB = (200, 60, 60)

ANIMATION_SUFFIXES = (".gif", ".mp4")
MP4_HINT = (
    "writing .mp4 needs ffmpeg: pip install imageio-ffmpeg (or pip install 'twm[viz]'); .gif works without it"
)


class VizError(ValueError):
    """Something a visualisation was asked for cannot be done; the message is one line."""


# --------------------------------------------------------------------------------------- frames


def to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pixel intensities in [0, 1] (decoder means may overshoot) -> uint8 array of the same shape;
    uint8 frames (already pictures) are returned as they are."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    if frames.dtype == np.uint8:
        return frames
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def vector_picture(values: np.ndarray, size: int = 64) -> np.ndarray:
    """A vector of n numbers as a (size, size) uint8 bar chart: bar i goes up (positive) or down from
    the middle row by tanh(symlog(v_i)) of half the height, so the same number always draws the same
    bar (a real and a decoded vector compare by eye). At most ``size`` numbers are drawn."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)[:size]
    image = np.full((size, size), 40, dtype=np.uint8)
    middle = size // 2
    image[middle, :] = 110  # the zero line
    width = max(1, size // max(len(values), 1))
    heights = np.rint(np.tanh(np.sign(values) * np.log1p(np.abs(values))) * (middle - 1)).astype(int)
    for i, h in enumerate(heights):
        left, right = i * width, (i + 1) * width - (1 if width >= 3 else 0)  # a gap between wide bars
        top, bottom = (middle - h, middle) if h >= 0 else (middle, middle - h)
        image[top : bottom + 1, left:right] = 255
    return image


def newest_image(
    frames: torch.Tensor | np.ndarray, frame_channels: int, observation: str = "picture"
) -> np.ndarray:
    """The newest frame of stacked observations (N, S*c, 64, 64): (N, 64, 64) gray or (N, 64, 64, 3) RGB.

    A MinAtar grid (``observation`` 'grid': (N, S*c, 10, 10), uint8 0/255 or probabilities in [0, 1])
    is drawn as the game's colour picture (N, 64, 64, 3) of the cells at least half set; uint8 in,
    uint8 out, floats in [0, 1] out for floats in. A vector ('vector': (N, S*n, 1, 1) numbers) is
    drawn as a uint8 bar chart (N, 64, 64) of its newest n numbers (``vector_picture``).
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy() if frames.is_floating_point() else frames.cpu().numpy()
    if observation == "vector":
        return np.stack([vector_picture(v) for v in frames[:, -frame_channels:]])  # (N, 64, 64)
    if observation == "grid":
        floats = np.issubdtype(frames.dtype, np.floating)
        cells = frames[:, -frame_channels:] >= (0.5 if floats else 128)  # (N, c, 10, 10)
        pictures = np.stack([render_state(np.moveaxis(c, 0, -1), color=True) for c in cells])  # (N, 64, 64, 3)
        return pictures.astype(np.float32) / 255.0 if floats else pictures
    if frame_channels == 1:
        return frames[:, -1]
    return np.moveaxis(frames[:, -frame_channels:], 1, -1)  # (N, 64, 64, 3)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W) grayscale or (H, W, 3) uint8 -> (H, W, 3) uint8."""
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    return frame


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: pixel art stays crisp (interpolation would blur 64x64 frames)."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1) if scale > 1 else image


# --------------------------------------------------------------------------------------- text


@functools.cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (FreeType), or its fixed bitmap font on older Pillow."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def font_size(scale: int) -> int:
    """Caption font size for frames upscaled ``scale`` times: readable, but fits a 128 px panel."""
    return int(min(20, max(10, 4 * scale)))


def line_height(size: int) -> int:
    return size + 3


def draw_lines(
    image: Image.Image,
    lines: Sequence[str],
    xy: tuple[int, int],
    size: int,
    fill: tuple[int, int, int] = CAPTION_FG,
) -> None:
    """Draw text lines from ``xy`` downwards (clipped at the image border)."""
    draw = ImageDraw.Draw(image)
    x, y = xy
    for line in lines:
        draw.text((x, y), line, fill=fill, font=font(size))
        y += line_height(size)


def caption_height(num_lines: int, scale: int) -> int:
    return num_lines * line_height(font_size(scale)) + 4 if num_lines else 0


def panel(frame: np.ndarray, lines: Sequence[str], scale: int, num_lines: int | None = None) -> np.ndarray:
    """A frame upscaled ``scale`` times under a caption band of ``num_lines`` text lines.

    Args:
        frame: (H, W) grayscale or (H, W, 3) uint8.
        lines: caption text, one string per line (at most ``num_lines``).
        num_lines: height of the band in lines (default ``len(lines)``); fixed by callers so that
            all panels of an animation have the same size.

    Returns:
        (caption_height + H * scale, W * scale, 3) uint8.
    """
    num_lines = len(lines) if num_lines is None else num_lines
    if len(lines) > num_lines:
        raise ValueError(f"{len(lines)} caption lines do not fit a band of {num_lines}")
    body = upscale(to_rgb(frame), scale)
    band_h = caption_height(num_lines, scale)
    if band_h == 0:
        return body
    band = Image.new("RGB", (body.shape[1], band_h), CAPTION_BG)
    draw_lines(band, lines, (3, 2), font_size(scale))
    return np.concatenate([np.asarray(band), body], axis=0)


def grid(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Tile equally sized (H, W, 3) images: ``rows[i][j]`` lands in row i, column j."""
    return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)


# --------------------------------------------------------------------------------------- colours

# A few anchor colours of matplotlib's "viridis" (perceptually uniform, readable in grayscale).
_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB uint8 (shape + (3,)), piecewise-linear viridis."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(np.floor(v).astype(np.int64), len(_VIRIDIS) - 2)
    frac = (v - low)[..., None]
    rgb = _VIRIDIS[low] * (1.0 - frac) + _VIRIDIS[low + 1] * frac
    return np.rint(rgb).astype(np.uint8)


# --------------------------------------------------------------------------------------- files


def check_animation_path(path: str | Path) -> Path:
    """Fail early (before any model work) on a suffix we cannot write, or MP4 without ffmpeg."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise VizError(f"cannot write {path}: the file name must end in .gif or .mp4")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (only its presence matters: imageio finds ffmpeg through it)
        except ImportError:
            raise VizError(MP4_HINT) from None
    return path


def write_animation(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write equally sized (H, W, 3) uint8 frames as a looping GIF (Pillow) or an MP4 (ffmpeg)."""
    path = check_animation_path(path)
    if not frames:
        raise VizError("no frames to write")
    if fps <= 0:
        raise VizError(f"fps must be positive; got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        # GIF stores delays in 1/100 s. Pillow merges a frame into its predecessor only if the two
        # are identical; our captions carry the step number, so every frame is kept.
        duration = max(10, int(round(1000.0 / fps / 10.0)) * 10)
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    import imageio.v2 as imageio

    # H.264 with the widely playable yuv420p needs even sizes: pad with the caption colour.
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    writer = imageio.get_writer(
        str(path),
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    try:
        for f in frames:
            writer.append_data(np.pad(f, pad, constant_values=CAPTION_BG[0]) if any(p[1] for p in pad) else f)
    finally:
        writer.close()
    return path


def write_png(path: str | Path, image: np.ndarray | Image.Image) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path)
    return path
