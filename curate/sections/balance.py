"""The `balance:` section of a pipeline YAML. Balance: MetaCLIP balancing over metadata entries."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curate.names import PoolName
from curate.sections.base import Section


class BalanceConfig(Section):
    """MetaCLIP balancing (docs/balance.md)."""

    metadata: str | None = Field(
        None, description="entries: a `.txt` file (one entry a line), a `.json` list (MetaCLIP `metadata.json`), "
        "or a folder of `<lang>.txt`/`<lang>.json` files (MetaCLIP 2); local path or URL")
    name: PoolName = Field("balanced", description="output folder `balanced/<name>/`")
    t: int | None = Field(None, ge=1, description="at most about t samples per entry (MetaCLIP: 20000 for 400M); "
                          "with per-language metadata, t of `reference_language`; default 20000 when "
                          "`tail_fraction` is not given")
    tail_fraction: float | None = Field(None, gt=0, lt=1, description="instead of `t`: t per language "
                                        "by MetaCLIP 2's `p_to_t`, so this share of matches falls on tail entries "
                                        "(c_e < t); not together with `t`")
    seed: int = Field(0, description="seed of the per-sample draw hash(uid, seed)")
    subset: str | None = Field(None, description="balance only this filter subset's uids: `subsets/<spec>` or "
                        "`<spec>`")
    keep_unmatched: bool = Field(False, description="keep samples that match no entry (MetaCLIP drops them)")
    reference_language: str = Field("en", description="per-language metadata: the language `t` applies "
                                    "to; the others get the t with the same tail fraction")
    language_scorer: PoolName = Field("language", description="`scores/<name>/` whose `lang` column routes "
                                      "captions to per-language metadata")
    rule: Literal["auto", "metaclip", "metaclip2", "normalized"] = Field(
        "auto", description="matching rule (docs/balance.md): `metaclip` (MetaCLIP's substr_matching), `metaclip2` "
        "(MetaCLIP 2's), `normalized` (curate's: whitespace runs collapsed, entries spaced, full-width "
        "punctuation spaced); `auto`: metaclip for one metadata file, metaclip2 for a per-language folder")
    unspaced_languages: list[str] = Field(
        default_factory=lambda: ["zh", "ja", "th", "km", "lo", "my", "bo", "yue", "wuu"],
        description="rule `normalized` only: languages matched without space padding")
    lowercase: bool = Field(False, description="match case-insensitively (MetaCLIP matches case-sensitively)")
    language_map: dict[str, str] = Field(
        default_factory=dict, description="per-language metadata: language-id code → metadata file name "
        "(MetaCLIP 2's `lid_to_wiki`); a code mapped to `N/A`, an empty code, or one with no metadata file "
        "goes to `other_language`")
    other_language: str = Field("other", description="per-language metadata: the file (`<name>.txt`/`.json`) "
                                "that captions of unmapped languages are matched against, if the folder has it")

    @model_validator(mode="after")
    def _one_threshold(self) -> BalanceConfig:
        if self.t is not None and self.tail_fraction is not None:
            raise ValueError("give t or tail_fraction, not both")
        return self
