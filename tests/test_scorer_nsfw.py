"""nsfw: the shipped word list, a LAION-format classifier head, and the zero-shot fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curate.errors import ConfigError, ModelNotFoundError
from curate.scorers.base import embedding_column
from curate.scorers.clip import ClipConfig
from curate.scorers.nsfw import MlpHead, NsfwConfig, NsfwScorer, load_words, text_word_scores, words_pattern


def test_word_list_ships_and_matches_whole_words_case_insensitively() -> None:
    words = load_words()
    assert "porn" in words and len(words) > 20
    pattern = words_pattern(words)
    captions = ["Free PORN video", "a naked mole rat", "pornstar", "explicit   sex scene", "a red circle",
                "Sussex county map", "NSFW!", "erotica,", ""]
    assert text_word_scores(captions, pattern).tolist() == [1, 1, 0, 1, 0, 0, 1, 1, 0]


def test_custom_word_list(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# comment\nBanana split\n\nkiwi\n")
    pattern = words_pattern(load_words(path))
    assert text_word_scores(["a banana  split", "kiwis", "KIWI"], pattern).tolist() == [1, 0, 1]


def _laion_style_head(dim: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 1),
    ).eval()


def test_mlp_head_reproduces_the_sequential_checkpoint(tmp_path: Path) -> None:
    head = _laion_style_head(64)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    x = torch.nn.functional.normalize(torch.randn(8, 64), dim=-1)
    expected = torch.sigmoid(head(x)[:, 0]).detach().numpy()
    assert np.allclose(MlpHead(tmp_path / "head.pth")(x.numpy()), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="expects 64-d"):
        MlpHead(tmp_path / "head.pth")(np.zeros((2, 32), np.float32))


def _batch(ok: list[bool], emb: np.ndarray, captions: list[str]) -> dict[str, np.ndarray]:
    return {"image_ok": np.array(ok), "caption": np.array(captions, dtype=object),
            embedding_column("tiny", "image"): emb.astype(np.float16),
            embedding_column("tiny", "text"): emb.astype(np.float16)}


def test_scorer_with_head_and_missing_images(tmp_path: Path) -> None:
    torch.save(_laion_style_head(64).state_dict(), tmp_path / "head.pth")
    scorer = NsfwScorer(NsfwConfig(clip="tiny", head=str(tmp_path / "head.pth")))
    scorer.preflight()
    emb = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = scorer(_batch([True, False, True], emb, ["porn", "a cat", "a dog"]))
    assert np.isnan(out["nsfw_image_score"][1]) and np.isfinite(out["nsfw_image_score"][[0, 2]]).all()
    assert out["nsfw_text_score"].tolist() == [1.0, 0.0, 0.0]


def test_missing_head_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="head file"):
        NsfwScorer(NsfwConfig(clip="tiny", head=str(tmp_path / "nope.pth"))).preflight()


def test_zero_shot_prompts_use_the_clip_model(tiny_clip_dir: Path) -> None:
    from curate.models.loading import load_clip

    clip_cfg = ClipConfig(name="tiny", model=str(tiny_clip_dir))
    # Prompts the tiny model understands stand in for the unsafe/safe ones, so the ranking is checkable.
    cfg = NsfwConfig(clip="tiny", unsafe_prompts=["a red circle"], safe_prompts=["a blue square"])
    scorer = NsfwScorer(cfg, {"tiny": clip_cfg, cfg.name: cfg})
    scorer.setup()
    clip = load_clip(str(tiny_clip_dir))
    emb = clip.encode_texts(["a photo of a red circle", "a photo of a blue square"]).numpy()
    out = scorer(_batch([True, True], emb, ["x", "y"]))
    assert out["nsfw_image_score"][0] > 0.5 > out["nsfw_image_score"][1]
