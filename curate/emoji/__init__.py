"""A web-like benchmark pool of real emoji artwork (docs/emoji-pool.md).

build_emoji_web: the pool's web (pages, images, planted noise, and what each image really is);
write_emoji_evalset: the same concepts in another vendor's style, for `curate eval`;
write_clean_pairs: clean pairs for training a DFN.
"""

from curate.emoji.concepts import Concept, choose_concepts, eligible_concepts
from curate.emoji.evalset import write_emoji_evalset
from curate.emoji.hq import write_clean_pairs
from curate.emoji.web import EmojiNoise, EmojiWeb, ImageTruth, build_emoji_web

__all__ = ["Concept", "EmojiNoise", "EmojiWeb", "ImageTruth", "build_emoji_web", "choose_concepts",
           "eligible_concepts", "write_clean_pairs", "write_emoji_evalset"]
