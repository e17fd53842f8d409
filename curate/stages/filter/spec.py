"""The filter-spec grammar: pydantic models for every condition, and the YAML loader.

A spec is a name, a description and a list of conditions that must all hold. A condition is a
YAML mapping whose keys say what it is:

    {column: lang, eq: en}                       comparison (gt ge lt le eq ne), between, in, not_in
    {column: clip_l14_similarity_score, top_fraction: 0.3}        global rank cut (DataComp)
    {column: clip_dfn_similarity_score, top_count: 5000}          the N best rows (ties broken by uid)
    {score: {clip_dfn_similarity_score: 1.0, lang_en_score: 0.2}, top_count: 5000}   ... by a weighted sum
    {not_duplicate: exact}                        dedup/<method>.parquet flag
    {all: [...]}, {any: [...]}, {not: {...}}      combinators
    {include: basic.yaml}                         another spec's conditions (path relative to this file)

Validation happens here, before any data is read; errors carry file:line: key: expected.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from curate.errors import ConfigError
from curate.names import PoolName
from curate.yamlconf import KeyPath, dotted, line_of, load_yaml, one_line, short

MAX_SPEC_FILES = 256  # spec files one load_spec may read, each include counted
COMPARE_OPS = ("gt", "ge", "lt", "le", "eq", "ne")
RANGE_OPS = ("between", "in", "not_in")
FRACTION_OPS = ("top_fraction", "bottom_fraction")
COUNT_OPS = ("top_count", "bottom_count")
RANK_OPS = FRACTION_OPS + COUNT_OPS  # global rank cuts: each needs a cut-off computed over the population
COLUMN_OPS = COMPARE_OPS + RANGE_OPS + RANK_OPS
SCORE_OPS = ("gt", "ge", "lt", "le", "between", *RANK_OPS)  # what a weighted-sum `score` can be compared with
OP_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}

Number = int | float
Scalar = bool | int | float | str
_UNION_MEMBERS = {"bool", "int", "float", "str"}


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # A label for the funnel table; defaults to a rendering of the condition.
    name: str | None = Field(None, min_length=1)


class ColumnCondition(_Node):
    """One operator applied to one column (a score column, a shard column or a derived value), or to
    `score`, a weighted sum of numeric columns computed per row in float64."""

    column: str | None = Field(None, min_length=1)
    score: dict[Annotated[str, Field(min_length=1)], StrictInt | StrictFloat] | None = Field(None, min_length=1)
    gt: Number | None = None
    ge: Number | None = None
    lt: Number | None = None
    le: Number | None = None
    eq: Scalar | None = None
    ne: Scalar | None = None
    between: tuple[Number, Number] | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(None, min_length=1)
    top_fraction: float | None = Field(None, ge=0, le=1)
    bottom_fraction: float | None = Field(None, ge=0, le=1)
    # Strict: 5000.0 or "5000" is refused rather than silently rounded into a size target.
    top_count: StrictInt | None = Field(None, ge=1)
    bottom_count: StrictInt | None = Field(None, ge=1)
    # Population a fraction (or count) is taken of: the whole pool (DataComp), or the rows that pass every
    # earlier top-level condition of the spec.
    within: Literal["pool", "survivors"] | None = None
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("between")
    @classmethod
    def _ordered(cls, value: tuple[Number, Number] | None) -> tuple[Number, Number] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"expected [low, high] with low <= high, got [{value[0]}, {value[1]}]")
        return value

    @field_validator("score")
    @classmethod
    def _finite(cls, value: dict[str, Number] | None) -> dict[str, Number] | None:
        for name, weight in (value or {}).items():
            if not math.isfinite(weight):
                raise ValueError(f"weight of {name!r} must be a finite number, got {weight}")
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> ColumnCondition:
        if (self.column is None) == (self.score is None):
            raise ValueError("expected exactly one of 'column' or 'score' (a mapping column: weight)")
        given = [op for op in COLUMN_OPS if getattr(self, _attr(op)) is not None]
        if len(given) != 1:
            what = "none" if not given else ", ".join(given)
            raise ValueError(f"expected exactly one operator of {', '.join(COLUMN_OPS)}; got {what}")
        if self.within is not None and given[0] not in RANK_OPS:
            raise ValueError("'within' applies only to top_fraction / bottom_fraction / top_count / bottom_count")
        if self.score is not None and given[0] not in SCORE_OPS:
            raise ValueError(f"a 'score' takes only the numeric operators {', '.join(SCORE_OPS)}; got {given[0]}")
        return self

    @property
    def columns(self) -> list[str]:
        """The table columns the condition reads: its column, or every column of its score."""
        return [self.column] if self.column is not None else list(self.score or {})

    @property
    def subject(self) -> str:
        """What is compared, for labels and reports: the column name, or the score as a sum."""
        if self.column is not None:
            return self.column
        return " + ".join(f"{w:g}*{c}" for c, w in (self.score or {}).items())

    @property
    def op(self) -> str:
        return next(op for op in COLUMN_OPS if getattr(self, _attr(op)) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, _attr(self.op))

    @property
    def is_fraction(self) -> bool:
        """A global rank cut (top/bottom fraction or count): its cut-off is computed before the apply pass."""
        return self.op in RANK_OPS

    @property
    def is_count(self) -> bool:
        return self.op in COUNT_OPS

    def label(self) -> str:
        if self.name:
            return self.name
        op, value = self.op, self.value
        subject = self.subject if self.column is not None else f"({self.subject})"
        if op in OP_SYMBOLS:
            return f"{subject} {OP_SYMBOLS[op]} {value!r}"
        if op == "between":
            return f"{value[0]!r} <= {subject} <= {value[1]!r}"
        if op in ("in", "not_in"):
            return f"{subject} {op.replace('_', ' ')} {list(value)!r}"
        side = "top" if op.startswith("top_") else "bottom"
        scope = " of survivors" if self.within == "survivors" else ""
        if op in COUNT_OPS:
            return f"{subject} {side} {value:,}{scope}"
        return f"{subject} {side} {value * 100:.4g}%{scope}"


class DedupCondition(_Node):
    """Keep samples not flagged is_duplicate in dedup/<method>.parquet."""

    not_duplicate: str = Field(..., min_length=1)

    def label(self) -> str:
        return self.name or f"not duplicate ({self.not_duplicate})"


class CaptionSynsets(BaseModel):
    """DataComp's text-based rule (curate/stages/filter/wordnet.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # One WordNet id per line (n01440764), e.g. DataComp's imagenet21k_wordnet_ids.txt; relative to the spec.
    synsets: str = Field(..., min_length=1)
    # A directory with WordNet 3.0's dict files (index.noun ... adv.exc); relative to the spec when not absolute.
    wordnet: str = Field("/usr/share/wordnet", min_length=1)
    morphy: Literal["nltk-3.8", "nltk-3.9"] = "nltk-3.8"


class SynsetCondition(_Node):
    """Keep samples with a caption word whose first WordNet synset's offset is in a list (DataComp text-based)."""

    caption_synsets: CaptionSynsets

    def label(self) -> str:
        return self.name or f"caption word in {Path(self.caption_synsets.synsets).name}"


class ImageClusters(BaseModel):
    """DataComp's image-based rule (curate/stages/filter/clusters.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    embeddings: str = Field(..., min_length=1, description="embeddings/<name>/ written by a clip scorer")
    column: str = Field("image_embedding", min_length=1)
    # (k, d) float .npy; relative to the spec. Absent: trained with k-means at filter time (kmeans below).
    centroids: str | None = Field(None, min_length=1)
    # (n, d) float .npy of reference embeddings, e.g. ImageNet-1k train images; relative to the spec.
    reference: str = Field(..., min_length=1)
    clusters: int | None = Field(None, ge=1, description="k-means cluster count (DataComp: 100000)")
    niter: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _centroids_or_clusters(self) -> ImageClusters:
        if (self.centroids is None) == (self.clusters is None):
            raise ValueError("expected exactly one of 'centroids' (a .npy file) or 'clusters' (train k-means)")
        return self


class ClusterCondition(_Node):
    """Keep samples whose image embedding is nearest to a centroid some reference embedding is nearest to."""

    image_clusters: ImageClusters

    def label(self) -> str:
        return self.name or f"image cluster near {Path(self.image_clusters.reference).name}"


class AllCondition(_Node):
    all: list[Condition] = Field(..., min_length=1)

    def label(self) -> str:
        return self.name or "all(" + ", ".join(c.label() for c in self.all) + ")"


class AnyCondition(_Node):
    any: list[Condition] = Field(..., min_length=1)

    def label(self) -> str:
        return self.name or "any(" + ", ".join(c.label() for c in self.any) + ")"


class NotCondition(_Node):
    not_: Condition = Field(..., alias="not")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def label(self) -> str:
        return self.name or f"not({self.not_.label()})"


class IncludeCondition(_Node):
    """A reference to another spec file; resolved by the loader into an AllCondition."""

    include: str = Field(..., min_length=1)

    def label(self) -> str:
        return self.name or f"include {self.include}"


_KIND_KEYS = (
    ("column", "column-condition"),
    ("score", "column-condition"),
    ("not_duplicate", "dedup-condition"),
    ("caption_synsets", "synset-condition"),
    ("image_clusters", "cluster-condition"),
    ("all", "all-condition"),
    ("any", "any-condition"),
    ("not", "not-condition"),
    ("include", "include-condition"),
)


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {
            ColumnCondition: "column-condition", DedupCondition: "dedup-condition", AllCondition: "all-condition",
            SynsetCondition: "synset-condition", ClusterCondition: "cluster-condition",
            AnyCondition: "any-condition", NotCondition: "not-condition", IncludeCondition: "include-condition",
        }.get(type(value))
    if not isinstance(value, dict):
        return None
    present = {kind for key, kind in _KIND_KEYS if key in value}  # column and score: one kind (its validator
    return present.pop() if len(present) == 1 else None          # then asks for exactly one of the two)


Condition = Annotated[
    Annotated[ColumnCondition, Tag("column-condition")]
    | Annotated[DedupCondition, Tag("dedup-condition")]
    | Annotated[SynsetCondition, Tag("synset-condition")]
    | Annotated[ClusterCondition, Tag("cluster-condition")]
    | Annotated[AllCondition, Tag("all-condition")]
    | Annotated[AnyCondition, Tag("any-condition")]
    | Annotated[NotCondition, Tag("not-condition")]
    | Annotated[IncludeCondition, Tag("include-condition")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition_kind",
        custom_error_message=(
            "expected a mapping with exactly one of the keys column, not_duplicate, all, any, not, include, "
            "caption_synsets, image_clusters"
        ),
    ),
]

AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()

TAGS = {"column-condition", "dedup-condition", "synset-condition", "cluster-condition", "all-condition",
        "any-condition", "not-condition",
        "include-condition"}


class FilterSpec(BaseModel):
    """A whole spec file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: PoolName = Field(..., description="subset directory name")
    description: str = ""
    conditions: list[Condition] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """Stable hash of the resolved spec: a changed spec must not resume an old run."""
        blob = json.dumps(self.model_dump(by_alias=True, exclude_none=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _attr(op: str) -> str:
    return "in_" if op == "in" else op


# ----------------------------------------------------------------------------- loading


class SourceMap:
    """Where every condition came from: object id -> (file, key path, line)."""

    def __init__(self) -> None:
        self._where: dict[int, tuple[str, KeyPath, int | None]] = {}
        self._keep: list[Any] = []  # ids are only unique while the objects live
        self.files_loaded = 0  # spec files read, counting each include of the same file

    def add(self, cond: Any, file: str, path: KeyPath, lines: dict[KeyPath, int]) -> None:
        self._keep.append(cond)
        self._where[id(cond)] = (file, path, line_of(lines, path))

    def where(self, cond: Any, key: str | None = None) -> str:
        """`file:line: key.path` for a condition (and optionally one of its keys)."""
        file, path, line = self._where.get(id(cond), ("<spec>", (), None))
        full = (*path, key) if key else path
        return f"{file}:{line}: {dotted(full)}" if line is not None else f"{file}: {dotted(full)}"


def _format_errors(exc: ValidationError, file: str, lines: dict[KeyPath, int]) -> str:
    messages: dict[KeyPath, str] = {}
    for err in exc.errors():
        # Drop the union tags pydantic inserts into locations so paths match the YAML.
        raw = [p for p in err["loc"] if not (isinstance(p, str) and (p in TAGS or p.startswith("function-")))]
        union_member = bool(raw) and raw[-1] in _UNION_MEMBERS
        if union_member:
            raw = raw[:-1]
        loc: KeyPath = tuple("in" if p == "in_" else p for p in raw)
        if loc in messages:
            continue  # one message per key: the first union member's is as good as any
        line = line_of(lines, loc)
        where = f"{file}:{line}" if line is not None else file
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif union_member:
            msg = "expected a number or a string" if (loc and loc[-1] in ("eq", "ne", "in", "not_in")) or (
                len(loc) > 1 and loc[-2] in ("in", "not_in")) else "expected a number"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        got = err.get("input")
        suffix = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict):
            suffix = f" (got {short(got)})"
        messages[loc] = f"{where}: {one_line(dotted(loc), 200)}: {one_line(msg)}{suffix}"
    return "\n".join(messages.values())


def load_spec(path: str | Path) -> tuple[FilterSpec, SourceMap]:
    """Load and validate a spec, resolving include: recursively (cycles are errors)."""
    sources = SourceMap()
    spec = _load(Path(path), (), sources)
    return spec, sources


def _load(path: Path, stack: tuple[Path, ...], sources: SourceMap) -> FilterSpec:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"{path}: include cycle: {chain}")
    # Includes multiply like aliases (10 files that each include the next 10 times: 10^9 loads).
    sources.files_loaded += 1
    if sources.files_loaded > MAX_SPEC_FILES:
        raise ConfigError(f"{path}: more than {MAX_SPEC_FILES} spec files included in all (an include bomb?)")
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{path}:1: (top level): expected a mapping with name, description, conditions; got {got}")
    try:
        spec = FilterSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path), lines)) from None
    flat: list[Any] = []
    for i, cond in enumerate(spec.conditions):
        path_i: KeyPath = ("conditions", i)
        if isinstance(cond, IncludeCondition) and cond.name is None:
            # A top-level include splices the other spec's conditions in place, so each shows in the funnel.
            flat.extend(_include(cond, str(path), path_i, lines, path, (*stack, resolved), sources).conditions)
        else:
            flat.append(_resolve(cond, str(path), path_i, lines, path, (*stack, resolved), sources, top=True))
    return spec.model_copy(update={"conditions": flat})


def _include(cond: IncludeCondition, file: str, path: KeyPath, lines: dict[KeyPath, int], spec_path: Path,
             stack: tuple[Path, ...], sources: SourceMap) -> FilterSpec:
    target = spec_path.parent / cond.include
    line = line_of(lines, (*path, "include"))
    if not target.is_file():
        raise ConfigError(f"{file}:{line}: {dotted((*path, 'include'))}: included spec not found: {target}")
    try:
        return _load(target, stack, sources)
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n  (included from {file}:{line})") from None


def _resolve(cond: Any, file: str, path: KeyPath, lines: dict[KeyPath, int], spec_path: Path,
             stack: tuple[Path, ...], sources: SourceMap, top: bool = False) -> Any:
    if isinstance(cond, IncludeCondition):
        included = _include(cond, file, path, lines, spec_path, stack, sources)
        label = cond.name or f"include {cond.include}"
        if included.conditions:
            out = AllCondition(all=list(included.conditions), name=label)
        else:  # an empty spec keeps everything, like an empty all()
            out = AllCondition.model_construct(all=[], name=label)
        sources.add(out, file, path, lines)
        return out
    if isinstance(cond, AllCondition):
        kids = [_resolve(c, file, (*path, "all", i), lines, spec_path, stack, sources) for i, c in enumerate(cond.all)]
        cond = cond.model_copy(update={"all": kids})
    elif isinstance(cond, AnyCondition):
        kids = [_resolve(c, file, (*path, "any", i), lines, spec_path, stack, sources) for i, c in enumerate(cond.any)]
        cond = cond.model_copy(update={"any": kids})
    elif isinstance(cond, NotCondition):
        cond = cond.model_copy(update={"not_": _resolve(cond.not_, file, (*path, "not"), lines, spec_path,
                                                        stack, sources)})
    elif isinstance(cond, ColumnCondition) and cond.within == "survivors" and not top:
        line = line_of(lines, (*path, "within"))
        raise ConfigError(
            f"{file}:{line}: {dotted((*path, 'within'))}: 'within: survivors' is allowed only on a top-level "
            "condition (survivors = rows passing the earlier top-level conditions)"
        )
    elif isinstance(cond, SynsetCondition | ClusterCondition):
        cond = _with_resolved_paths(cond, spec_path)
    sources.add(cond, file, path, lines)
    return cond


def _with_resolved_paths(cond: SynsetCondition | ClusterCondition, spec_path: Path) -> Any:
    """Resource files are named relative to the spec that names them (an included spec's own folder)."""
    def resolve(value: str | None) -> str | None:
        return None if value is None else str((spec_path.parent / value).resolve())

    if isinstance(cond, SynsetCondition):
        args = cond.caption_synsets
        new = args.model_copy(update={"synsets": resolve(args.synsets), "wordnet": resolve(args.wordnet)})
        return cond.model_copy(update={"caption_synsets": new})
    clusters = cond.image_clusters
    new_clusters = clusters.model_copy(update={"centroids": resolve(clusters.centroids),
                                               "reference": resolve(clusters.reference)})
    return cond.model_copy(update={"image_clusters": new_clusters})


def iter_conditions(conditions: list[Any]) -> Any:
    """Every condition in a tree, depth first."""
    for cond in conditions:
        yield cond
        if isinstance(cond, AllCondition):
            yield from iter_conditions(cond.all)
        elif isinstance(cond, AnyCondition):
            yield from iter_conditions(cond.any)
        elif isinstance(cond, NotCondition):
            yield from iter_conditions([cond.not_])
