"""load_clip / save_clip_dir: every accepted model form, offline errors, and the trained tiny CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curate.errors import ModelNotFoundError
from curate.models.loading import RANDOM_WEIGHTS, check_available, describe_model, load_clip
from curate.testing.synthetic import make_samples, mismatched_caption
from tests.clip_fixtures import matched_vs_shuffled_auc


def test_tiny_clip_dir_loads_and_separates_matched_from_shuffled(tiny_clip_dir: Path) -> None:
    clip = load_clip(str(tiny_clip_dir))
    assert (clip.embed_dim, clip.image_size) == (64, 64)
    assert not clip.model.training
    samples = make_samples(96, seed=123)
    rng = np.random.default_rng(5)
    pixels = torch.stack([clip.preprocess(s.image) for s in samples])
    img = clip.encode_images(pixels)
    pos = (img * clip.encode_texts([s.caption for s in samples])).sum(-1).numpy()
    neg = (img * clip.encode_texts([mismatched_caption(s, rng) for s in samples])).sum(-1).numpy()
    assert matched_vs_shuffled_auc(pos, neg) >= 0.9
    assert np.allclose(torch.linalg.norm(img, dim=-1).numpy(), 1.0, atol=1e-4)


def test_saved_dir_round_trips_weights_exactly(tiny_clip_dir: Path, tmp_path: Path) -> None:
    from curate.models.loading import read_model_config
    from curate.models.save import save_clip_dir

    first = load_clip(str(tiny_clip_dir))
    save_clip_dir(first.model, read_model_config(tiny_clip_dir)["model_cfg"], tmp_path / "copy")
    second = load_clip(str(tmp_path / "copy"))
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not list((tmp_path / "copy").glob("*.tmp-*"))


def test_architecture_with_weights_file(tiny_clip_dir: Path) -> None:
    weights = str(tiny_clip_dir / "open_clip_model.safetensors")
    by_file = load_clip("curate-tiny", weights)
    by_dir = load_clip(str(tiny_clip_dir))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(by_file.encode_images(x), by_dir.encode_images(x), atol=1e-5)


def test_bf16_autocast_stays_close_to_fp32(tiny_clip_dir: Path) -> None:
    x = torch.rand(4, 3, 64, 64)
    full = load_clip(str(tiny_clip_dir)).encode_images(x)
    half = load_clip(str(tiny_clip_dir), precision="bf16").encode_images(x)
    assert half.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(full, half).min() > 0.98


def test_random_weights_must_be_asked_for() -> None:
    assert load_clip("curate-tiny", RANDOM_WEIGHTS).embed_dim == 64
    with pytest.raises(ModelNotFoundError, match="needs `pretrained`"):
        load_clip("curate-tiny")


@pytest.mark.parametrize(
    ("model", "pretrained", "match"),
    [
        ("hf-hub:apple/DFN-public-does-not-exist", None, "hf download apple/DFN-public-does-not-exist"),
        ("ViT-B-32", "laion2b_s34b_b79k", "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
        ("ViT-B-32", "/no/such/weights.pt", "does not exist"),
        ("/no/such/model_dir", None, "does not exist"),
        ("not-a-model", None, "unknown model"),
    ],
)
def test_missing_models_fail_with_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str,
                                                  pretrained: str | None, match: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=match):
        check_available(model, pretrained, cache_dir=str(tmp_path))
    with pytest.raises(ModelNotFoundError):
        load_clip(model, pretrained, cache_dir=str(tmp_path))


def test_directory_without_weights_is_named(tiny_clip_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text((tiny_clip_dir / "open_clip_config.json").read_text())
    with pytest.raises(ModelNotFoundError, match="no weights"):
        load_clip(str(tmp_path))


def test_hf_hub_id_loads_from_the_offline_cache(tiny_clip_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A model in the HF cache layout (models--org--repo/snapshots/<rev>/) loads with HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "models--curate--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (snapshot / name).write_bytes((tiny_clip_dir / name).read_bytes())
    (tmp_path / "models--curate--tiny" / "refs").mkdir()
    (tmp_path / "models--curate--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip("hf-hub:curate/tiny", cache_dir=str(tmp_path))
    assert clip.embed_dim == 64
    assert describe_model("hf-hub:curate/tiny", cache_dir=str(tmp_path)).image_size == 64
