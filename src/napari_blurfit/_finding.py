"""`Finding`: one thing a fit found, as data (code, suggestion, values) and as the core's sentence.

Front ends word findings in their own terms with a `Vocabulary`: the sentence is the core's, the
advice in it is rendered from the finding's ``suggestion`` (never by matching sentence wording).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: How the core's sentences give each suggestion, keyed by `advice_key`: the words a front end
#: replaces with its own (`Vocabulary.advice`).
ADVICE: dict[tuple[str, Any], str] = {
    ("gain_offset", True): "consider gain_offset=True",
    ("shift", True): "fit with shift=True",
    ("per_axis", True): "use per_axis=True",
    ("full_covariance", True): "use full_covariance=True",
    ("reverse", True): "refit with reverse=True",
    ("reverse", False): "refit with reverse=False",
    ("sigma_bounds", None): "widen sigma_bounds",
    ("spatial_axes", None): "pass spatial_axes={value}",
}


def advice_key(option: str, value: Any) -> tuple[str, Any]:
    """``(option, value)`` for a True/False option; ``(option, None)`` for any other value.

    The advice to change a bound reads the same whatever the new bound: only a switch's advice
    depends on which way it goes.
    """
    return (option, bool(value)) if isinstance(value, (bool, np.bool_)) else (option, None)


def advise(suggestion: Mapping[str, Any]) -> str:
    """The core's advice for ``suggestion`` (`ADVICE`), as its sentences give it."""
    return " and ".join(core_advice(k, v) for k, v in suggestion.items())


def core_advice(option: str, value: Any) -> str | None:
    """The core's phrase for one suggested option (`ADVICE`; ``{value}`` filled in), or None."""
    phrase = ADVICE.get(advice_key(option, value))
    return None if phrase is None else phrase.replace("{value}", _value_text(value))


def plain(value: Any) -> Any:
    """``value`` as plain Python for JSON: numpy scalars and arrays, tuples become lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Finding:
    """One finding about a fit: a machine-readable code, what to try, the numbers, the sentence.

    Attributes
    ----------
    code : str
        A stable identifier; see the table below.
    suggestion : dict of str to object
        Keyword arguments of `napari_blurfit.fit_blur` to refit with, e.g. ``{"shift": True}``;
        empty when there is nothing to change.
        ``fit_blur(reference, target, **options, **finding.suggestion)`` acts on it.
    values : dict of str to object
        The numbers behind it: plain floats, ints, tuples of them or None (a text for
        ``"no_fit"``).
    text : str
        The finding as one English sentence (what ``BlurFit.notes`` and the warnings say).

    Notes
    -----
    The codes the core gives, with their suggestion and values:

    ======================  ===============================  ===================================
    code                    suggestion                       values
    ======================  ===============================  ===================================
    ``brightness``          ``gain_offset=True``             ``loss_ratio`` (L2 loss with a
                                                             gain/offset over the loss without)
    ``target_sharper``      ``reverse=True`` (``False``      ``reverse_sigma`` (px, the other
                            when the fit was reversed)       direction's fit)
    ``not_identifiable``    none                             ``sigma`` (px, the smallest)
    ``at_bound``            ``sigma_bounds``: the bounds     ``sigma`` (px; principal sigmas of a
                            reached widened (a lower one     rotated fit), ``sigma_bounds``
                            to 0, an upper one doubled)
    ``nonfinite_excluded``  none                             ``n_nonfinite`` (pixels)
    ``not_gaussian``        none                             ``share`` (of the residual a free
                                                             kernel removes), ``r2``, ``r2_linear``
    ``elliptical``          ``per_axis=True``                ``sigma`` (px per axis),
                                                             ``loss_reduction`` (share)
    ``misaligned``          ``shift=True``                   ``shift`` (px per axis: the target
                                                             is the reference moved by it),
                                                             ``distance`` (px)
    ``rotated``             ``full_covariance=True``         ``principal_sigmas`` (px), ``angle``
                                                             (degrees from +x towards +y)
    ``reference_noise``     none                             ``reference_noise`` (sd),
                                                             ``bias`` (a plain fit's, relative),
                                                             ``plain_sigma`` (px), ``corrected``
    ``lacks_detail``        none                             ``change``, ``quantum`` (grey
                                                             levels), or ``relative_stderr``
    ``no_fit``              none                             ``reason`` (the error's text)
    ``note``                none                             none: a note given only as text
    ======================  ===============================  ===================================

    Examples
    --------
    >>> from napari_blurfit import Finding
    >>> f = Finding("misaligned", {"shift": True}, {"shift": (0.4, -0.6), "distance": 0.72},
    ...             "the target looks misaligned ...: fit with shift=True")
    >>> f.suggestion
    {'shift': True}
    """

    code: str
    suggestion: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self):
        if not isinstance(self.code, str) or not self.code:
            raise ValueError(f"code must be a non-empty str, got {self.code!r}")
        object.__setattr__(self, "suggestion", dict(self.suggestion or {}))
        object.__setattr__(self, "values", dict(self.values or {}))
        object.__setattr__(self, "text", str(self.text))

    def __hash__(self) -> int:
        return hash((self.code, self.text))

    def to_dict(self) -> dict:
        """``code``, ``suggestion``, ``values`` and ``text`` as plain Python (JSON-ready lists)."""
        return {"code": self.code, "suggestion": plain(self.suggestion),
                "values": plain(self.values), "text": self.text}


def _value_text(value: Any) -> str:
    """A suggested value as the core's messages write it (a tuple of axes as ``(-2, -1)``)."""
    value = plain(value)
    return str(tuple(value)) if isinstance(value, list) else str(value)


_VALUE = r"\([^)]*\)|'[^']*'|[^\s,;:)]+"  # what follows ``name=`` in a message


@dataclass(frozen=True)
class Vocabulary:
    """How a front end names `napari_blurfit.fit_blur`'s options.

    Attributes
    ----------
    names : dict of str to str
        Option name -> this front end's name for it (``"shift"`` -> ``"--shift"``).
    advice : dict
        `advice_key` -> the phrase that gives that suggestion here (``"fit with --shift"``);
        the same keys as `ADVICE`. ``{option}`` in a phrase stands for the option set to the
        suggested value, in these words (``"use {option}"`` -> ``"use --spatial-axes -2,-1"``).
    """

    names: Mapping[str, str]
    advice: Mapping[tuple[str, Any], str]

    def finding(self, finding: Finding) -> str:
        """The finding's sentence with its advice in these words.

        The advice comes from the finding's ``suggestion`` (`advice`); an option the sentence
        names besides is renamed as in `text`.
        """
        text = finding.text
        for option, value in finding.suggestion.items():
            key = advice_key(option, value)
            ours = self.advice.get(key) or self.names.get(option, option)
            ours = ours.replace("{option}", self.option(option, _value_text(value)))
            core = core_advice(option, value)
            if core and core in text:
                head, _, tail = text.rpartition(core)
                text = head + ours + tail
            else:  # a sentence that does not give the advice itself: add it
                text = f"{text} ({ours})"
        return self.text(text)

    def option(self, name: str, value: str | None = None) -> str:
        """``name`` (set to ``value``, as the core writes it) in these words."""
        word = self.names.get(name, name)
        if value is None or value == "True":
            return word
        if value == "False":
            return f"no {word}"
        if value.startswith("("):  # a tuple of axes: 0,1 as a flag takes it
            value = ",".join(re.findall(r"-?\d+", value))
        return f"{word} {value}"

    def text(self, message: str) -> str:
        """A free-text message (an error, a warning) with the option names it uses in these words.

        Underscored names are replaced wherever they stand; plain words (``loss``, ``mask``,
        ``shift``) as ``name=value``, or as the word that opens the message or a clause after
        ``": "`` (its subject), since elsewhere they are ordinary words.
        """
        compound = "|".join(n for n in self.names if "_" in n) or "(?!)"
        simple = "|".join(n for n in self.names if "_" not in n) or "(?!)"
        pattern = (rf"(?<![\w-])(?:(?P<a>{compound})(?:=(?P<av>{_VALUE}))?|(?P<b>{simple})=(?P<bv>{_VALUE}))"
                   rf"(?!\w)|(?:^|(?<=: ))(?P<c>{simple})(?= )")
        return re.sub(pattern, lambda m: self.option(m["a"] or m["b"] or m["c"], m["av"] or m["bv"]),
                      message)


#: The core's own words: options by their `napari_blurfit.fit_blur` names.
API_WORDS = Vocabulary({}, ADVICE)
