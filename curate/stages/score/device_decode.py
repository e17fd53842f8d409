"""Decode JPEGs inside a model actor, on the model's device: nvJPEG on a GPU, libjpeg-turbo on a CPU.

With `score.jpeg_decode_on: model` the CPU decode tasks only read each JPEG's header
(curate.stages.score.decode.jpeg_size) and send its bytes; the actor decodes a whole batch with
`torchvision.io.decode_jpeg(..., device=...)`, resizes and crops on the same device, and feeds the
model. On a GPU machine that takes the JPEG decode, the largest CPU cost of scoring, off the CPUs
(a ViT-B-32 on an H100 outruns ~14 cores of PIL decoding). Images the header check turned away
(PNG, WebP, CMYK, 12-bit, cut short) were decoded on the CPU as before and arrive as raw view
bytes. An image the device decoder rejects gets the reason `undecodable_image`, like on the CPU.

The crop is CLIP's eval transform (shortest side to `size` with antialiased bicubic, centre crop),
done with torch instead of PIL, so scores differ from the CPU path's in the third decimal.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from curate.scorers.base import ImageView

if TYPE_CHECKING:
    import torch

IMAGE_BYTES = "_jpeg_bytes"  # batch column: JPEG bytes the model actor decodes itself (b"" for none)


def _decode_all(raw: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """CHW uint8 RGB tensors on `device`; None for an image the decoder rejects."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libjpeg's "corrupt data" warnings: the result is checked below
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one bad image fails the whole batched call: find it one by one
        out: list[torch.Tensor | None] = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def _resize_group(images: list[torch.Tensor], view: ImageView) -> torch.Tensor:
    """Same-sized CHW images → N×3×size×size uint8, as CLIP's eval transform (or a squash)."""
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    x = torch.stack(images).float()
    target = [view.size] if view.mode == "crop" else [view.size, view.size]
    if list(x.shape[-2:]) != [view.size, view.size]:
        x = F.resize(x, target, interpolation=InterpolationMode.BICUBIC, antialias=True)
    if view.mode == "crop":
        x = F.center_crop(x, [view.size, view.size])
    return x.round_().clamp_(0, 255).to(torch.uint8)


def device_views(raw: np.ndarray, cpu_views: np.ndarray, ok: np.ndarray, view: ImageView,
                 device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Pixels of every row that has an image, decoded here or on the CPU.

    raw: JPEG bytes per row (b"" where the CPU decoded the image); cpu_views: that view's raw
    H×W×3 bytes per row (b"" where not decoded on the CPU); ok: rows whose image is usable so far.
    Returns (N_ok × 3 × size × size uint8 on `device`, in row order; the updated ok mask)."""
    import torch

    ok = ok.copy()
    on_device = [i for i in np.flatnonzero(ok) if raw[i]]
    decoded = dict(zip(on_device, _decode_all([raw[i] for i in on_device], device), strict=True))
    for i, img in decoded.items():
        if img is None:
            ok[i] = False
    rows = np.flatnonzero(ok)
    out = torch.empty((len(rows), 3, view.size, view.size), dtype=torch.uint8, device=device)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    from_cpu: list[int] = []
    for k, i in enumerate(rows):
        img = decoded.get(i)
        if img is None:
            from_cpu.append(k)
        else:
            by_shape[tuple(img.shape)].append(k)
    # Images of one size (downloads are usually resized to one) are resized in one call.
    for members in by_shape.values():
        out[members] = _resize_group([decoded[rows[k]] for k in members], view)  # type: ignore[misc]
    if from_cpu:
        pixels = np.stack([np.frombuffer(cpu_views[rows[k]], np.uint8).reshape(view.size, view.size, 3)
                           for k in from_cpu])
        out[from_cpu] = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2)
    return out, ok
