"""Where the transformer looked: attention of one imagined step over the earlier z, a and r tokens.

h_t, the state that predicts z_{t+1}, r_t and gamma_t, is the transformer output at the token a_t,
so the view shows the attention of the a_t query: one row per layer (heads averaged, or one row per
head), one column per key token (the memory, then the step's own r_{t-1}, z_t, a_t). Columns are
labelled with the token type and the dream step it belongs to (z0 is the dream's first latent, the
real context steps are negative). Keys the mask forbids (another episode, outside the window) are
grey; their probability is exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from twm.models.transformer_xl import A_TOKEN, R_TOKEN, Z_TOKEN
from twm.viz.dream import Dream
from twm.viz.render import MASKED_RGB, colormap, draw_lines, font_size, line_height

_KIND = {Z_TOKEN: "z", A_TOKEN: "a", R_TOKEN: "r"}


@dataclass
class AttentionView:
    """matrix (rows, K): attention of the a_t query; allowed (K,): the mask; labels of rows and columns."""

    matrix: np.ndarray
    allowed: np.ndarray
    row_labels: list[str]
    column_labels: list[str]
    step: int
    start: int


def token_label(position: int, tokens_per_step: int, context_steps: int) -> str:
    """'z3', 'a-1', 'r0': the token type and its dream step (0 = the dream's first latent)."""
    kind = _KIND[position % tokens_per_step]
    return f"{kind}{position // tokens_per_step - context_steps}"


def attention_view(dream: Dream, start: int = 0, step: int = -1, heads: bool = False) -> AttentionView:
    """The attention of the a_t token of imagined step ``step`` (default: the last) in dream ``start``.

    Needs a dream recorded with ``record_attention=True``. Rows are the layers with the heads
    averaged, or with ``heads=True`` one row per layer and head.
    """
    if dream.attention is None:
        raise ValueError("this dream was made without record_attention=True")
    if not 0 <= start < dream.starts:
        raise ValueError(f"start must be in [0, {dream.starts}); got {start}")
    t = step if step >= 0 else dream.horizon + step
    if not 0 <= t < dream.horizon:
        raise ValueError(f"step must be in [0, {dream.horizon}) (or negative from the end); got {step}")
    maps = dream.attention[t]
    rows: list[np.ndarray] = []
    labels: list[str] = []
    for layer, probs in enumerate(maps.probs):  # (B, h, N, K); the a_t query is the call's last token
        p = probs[start, :, -1].numpy()  # (h, K)
        if heads:
            rows.extend(p)
            labels.extend(f"L{layer + 1} h{i + 1}" for i in range(p.shape[0]))
        else:
            rows.append(p.mean(axis=0))
            labels.append(f"layer {layer + 1}")
    n = dream.tokens_per_step
    columns = [token_label(int(pos), n, dream.context_steps) for pos in maps.key_positions.tolist()]
    return AttentionView(
        matrix=np.stack(rows),
        allowed=maps.allowed[start, -1].numpy(),
        row_labels=labels,
        column_labels=columns,
        step=t,
        start=start,
    )


def attention_image(view: AttentionView, cell: int = 16) -> Image.Image:
    """A heat map of ``view``: colour = probability / the largest one shown, grey = masked key."""
    rows, cols = view.matrix.shape
    size = font_size(2)
    lh = line_height(size)
    left = 8 + 7 * max(len(label) for label in view.row_labels)
    label_h = 8 + 7 * max(len(label) for label in view.column_labels)  # rotated column labels
    top = 3 * lh + 6
    width = max(left + cols * cell + 8, 400)
    height = top + rows * cell + label_h + 4
    image = Image.new("RGB", (width, height), (255, 255, 255))

    vmax = float(view.matrix[:, view.allowed].max()) if view.allowed.any() else 1.0
    cells = colormap(view.matrix / max(vmax, 1e-12))  # (rows, cols, 3)
    cells[:, ~view.allowed] = MASKED_RGB
    block = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    block[::cell, :] = 255  # thin white grid lines keep neighbouring cells apart
    block[:, ::cell] = 255
    image.paste(Image.fromarray(block), (left, top))

    t = view.step
    title = [
        f"query a{t} of start {view.start}: its output h{t} predicts frame {t + 1}, r{t} and disc{t}",
        f"colour: probability / {vmax:.3f} (the largest one); grey: masked key",
        "keys: token type and step (z0 = first dream frame, negative = real context)",
    ]
    draw_lines(image, title, (4, 2), size, fill=(0, 0, 0))
    for i, label in enumerate(view.row_labels):
        draw_lines(image, [label], (4, top + i * cell + (cell - lh) // 2 + 1), size, fill=(0, 0, 0))
    for j, label in enumerate(view.column_labels):
        text = Image.new("RGB", (label_h, cell), (255, 255, 255))
        draw_lines(text, [label], (2, (cell - lh) // 2 + 1), size, fill=(0, 0, 0))
        # Rotated so the label reads bottom to top under its column.
        image.paste(text.rotate(90, expand=True), (left + j * cell, top + rows * cell + 2))
    return image


def attention_heatmap(
    dream: Dream, start: int = 0, step: int = -1, heads: bool = False, cell: int = 16
) -> Image.Image:
    """``attention_image(attention_view(...))``: the heat map of one imagined step as a PIL image."""
    return attention_image(attention_view(dream, start, step, heads), cell)
