"""What a prompt is, and the one reader of many prompts (map, compare, batch, batch_jsonl).

A prompt is a string or a list of ``{"role", "content"}`` messages; ``build_messages`` makes
the chat messages of one. Many prompts are given as

- a list (or any iterable) of prompts; with ``template`` each is filled in: ``{}`` is the
  prompt itself, and for records (a list of dicts) fields are taken by name;
- a pandas Series (its index is kept; ``template`` may use ``{}`` or the Series' name);
- a DataFrame with ``template`` naming its columns (``"Classify: {review}"``).

A dict, a single string, bytes or anything that is not a collection is refused with advice,
before anything is sent. ``images`` gives one entry per prompt (or, with a DataFrame, the name
of its column of images). ``read_prompts`` returns a ``PromptSet``: plain data from which each
feature builds its requests. A prompt that is neither a string nor a message list is not
refused here: it is that item's error when its messages are built (``build_messages``).

>>> read_prompts(df, "Classify: {review}").prompts
['Classify: great phone', 'Classify: awful battery']
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from holynb.errors import ConfigurationError

__all__ = [
    "Prompt",
    "PromptSet",
    "build_messages",
    "images_per_item",
    "prompt_error",
    "prompt_text",
    "read_prompts",
]

Prompt = str | Sequence[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PromptSet:
    """Many prompts read from the user's input: the prompts in input order (templates filled
    in), the input's pandas index (None: positions 0..n-1) and each prompt's images (None:
    no image).

    >>> read_prompts(pd.Series(["a", "b"], index=[10, 20])).labels
    [10, 20]
    """

    prompts: list[Any]
    images: list[Any]
    index: Any = None  # a pandas Index, as given

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def labels(self) -> list[Any]:
        """The input's label of each prompt (its position when the input had no index)."""
        return list(range(len(self.prompts))) if self.index is None else self.index.tolist()

    @property
    def index_name(self) -> Any:
        """The name of the input's index, if any."""
        return None if self.index is None else self.index.name


def read_prompts(
    prompts: Any, template: str | None = None, *, images: Any = None, what: str = "map"
) -> PromptSet:
    """The prompts of ``prompts`` (see the module) with ``template`` filled in and ``images``
    as one entry per prompt. ``what`` names the call in error messages. Raises
    ConfigurationError, before anything is sent, for input that is not many prompts and for a
    template the input cannot fill."""
    kind = _pandas_kind(prompts)  # pandas is imported only when the input is pandas
    index = None
    if kind == "frame":
        filled, index = _fill_frame(prompts, template, what), prompts.index
    elif kind == "series":
        filled = _fill_values(list(prompts), template, prompts.name)
        index = prompts.index
    elif isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise ConfigurationError(
            f"{what} needs several prompts: a list of strings or message lists, a pandas "
            f"Series, or a DataFrame with template=, got {type(prompts).__name__}. For one "
            "prompt use session.chat()."
        )
    elif isinstance(prompts, Mapping):
        raise ConfigurationError(
            f"{what} got a dict: pass a list of prompts, or pd.Series(your_dict) to keep the "
            "keys as the index."
        )
    else:
        filled = _fill_values(list(prompts), template, None)
    return PromptSet(filled, images_per_item(prompts, images, len(filled), what), index)


def images_per_item(prompts: Any, images: Any, n: int, what: str = "map") -> list[Any]:
    """``images`` as one entry per prompt (None: no image): a list or Series of entries, or
    with a DataFrame the name of its column of images. ``what`` names the call in errors."""
    if images is None:
        return [None] * n
    if isinstance(images, str) and _pandas_kind(prompts) == "frame":
        if images not in prompts.columns:
            raise ConfigurationError(
                f"images={images!r} is not a column of the DataFrame (columns: "
                f"{', '.join(map(repr, prompts.columns))}). Nothing was sent."
            )
        images = prompts[images]
    if isinstance(images, str | bytes) or not isinstance(images, Sequence | Iterable):
        images = None
    else:
        images = list(images)
    if images is None or len(images) != n:
        got = "one source" if images is None else f"{len(images)} entries"
        raise ConfigurationError(
            f"{what}'s images= needs one entry per prompt ({n}), got {got}: a list like "
            "[path1, [path2, path3], None, ...], or with a DataFrame the name of its column of "
            "images. Nothing was sent."
        )
    return [None if isinstance(i, float) and i != i else i for i in images]  # NaN: no image


def build_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages from a prompt string or a list of ``{"role", "content"}`` dicts."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt if isinstance(m, dict)]
        for i, m in enumerate(messages):
            if "role" not in m or "content" not in m:
                raise ValueError(
                    f"Message {i} needs 'role' and 'content' keys, got {sorted(m)}: e.g. "
                    '{"role": "user", "content": "Hi"}.'
                )
    else:
        raise TypeError(
            "prompt must be a string or a list of messages like "
            f'[{{"role": "user", "content": "Hi"}}], got {type(prompt).__name__}.'
        )
    if not messages:
        raise ValueError("The prompt has no messages: give at least one user message.")
    if system and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def prompt_error(label: Any, err: TypeError | ValueError) -> TypeError | ValueError:
    """``err`` (a bad prompt, from ``build_messages``) as the same class of error naming the
    input row, for calls that refuse all their prompts when one is bad (a batch)."""
    return type(err)(f"Prompt {label!r}: {err} Nothing was sent.")


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one line of text for a results frame: the string, or the content of its
    last user message."""
    if isinstance(prompt, str):
        return prompt
    user = [m for m in prompt if m.get("role") == "user"] or list(prompt)
    content = user[-1].get("content") if user else ""
    return content if isinstance(content, str) else str(content)


# -- filling templates -------------------------------------------------------------------------


def _pandas_kind(obj: Any) -> str | None:
    if not type(obj).__module__.startswith("pandas"):
        return None
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return "frame"
    return "series" if isinstance(obj, pd.Series) else None


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigurationError(
            f"template {template!r} is not a valid format string: {err}."
        ) from None
    names = []
    for _, name, _, _ in parsed:
        if name is not None:
            names.append(name.split(".", 1)[0].split("[", 1)[0])
    return names


def _filled(template: str, position: int, fill: Any) -> str:
    """``fill(template)``, a template that cannot take this item being a ConfigurationError."""
    try:
        return str(fill(template))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
        raise ConfigurationError(
            f"template {template!r} cannot be filled for item {position}: "
            f"{type(err).__name__}: {err}. Nothing was sent."
        ) from None


def _fill_frame(frame: Any, template: str | None, what: str) -> list[str]:
    if template is None:
        raise ConfigurationError(
            f"{what} over a DataFrame needs template=, e.g. template='Classify: {{review}}' "
            f"with columns from {list(frame.columns)[:10]}; or pass one column: "
            f"s.{what}(df['review'])."
        )
    names = _template_fields(template)
    if any(n == "" or n.isdigit() for n in names):
        raise ConfigurationError(
            f"template {template!r} has a positional field ({{}}): with a DataFrame, name the "
            f"columns, e.g. {{{frame.columns[0] if len(frame.columns) else 'review'}}}."
        )
    columns = {str(c): c for c in frame.columns}
    missing = [n for n in dict.fromkeys(names) if n not in columns]
    if missing:
        raise ConfigurationError(
            f"template {template!r} names {', '.join(repr(m) for m in missing)}, not a column "
            f"of the DataFrame (columns: {', '.join(map(repr, columns))}). Nothing was sent."
        )
    used = list(dict.fromkeys(names))
    if not used:
        return [template] * len(frame)
    rows = zip(*(frame[columns[n]].tolist() for n in used), strict=True)
    return [
        _filled(template, i, lambda t, row=row: t.format_map(dict(zip(used, row, strict=True))))
        for i, row in enumerate(rows)
    ]


def _fill_values(values: list[Any], template: str | None, name: Any) -> list[Any]:
    if template is None:
        return values
    names = _template_fields(template)
    if all(n == "" or n == "0" for n in names):
        return [_filled(template, i, lambda t, v=v: t.format(v)) for i, v in enumerate(values)]
    if name is not None and all(n == str(name) for n in names):
        return [
            _filled(template, i, lambda t, v=v: t.format_map({str(name): v}))
            for i, v in enumerate(values)
        ]
    if values and all(isinstance(v, Mapping) for v in values):
        wanted = list(dict.fromkeys(names))
        for i, record in enumerate(values):
            lacking = [n for n in wanted if n not in record]
            if lacking:
                raise ConfigurationError(
                    f"template {template!r} names {', '.join(map(repr, lacking))}, which "
                    f"record {i} lacks (its keys: {', '.join(map(repr, record))}). Nothing "
                    "was sent."
                )
        return [_filled(template, i, lambda t, v=v: t.format_map(v)) for i, v in enumerate(values)]
    raise ConfigurationError(
        f"template {template!r} names fields that a list or Series cannot fill: use {{}} for "
        "the prompt itself, give records (a list of dicts with those keys), or pass a "
        "DataFrame whose columns the fields name. Nothing was sent."
    )
