"""Countries, states and addresses as real CRM exports write them.

Exports carry countries as names ('United States', 'Korea'), as any ISO code or
misspelt ('Philipines'); states as names or codes; sometimes one address text.
Rules compare codes, so these values are resolved to ISO 3166 codes here. Nothing
is guessed: a value not recognised resolves to None, with a did-you-mean for the
error message when one is close, because a wrong territory is worse than an error.

The ISO data (names, official and common names, subdivisions of every country)
comes from pycountry, the ``places`` extra; the spellings ISO lacks ('UK',
'Holland', 'Calif.') are data in ``data/place_variants.json``. The caller resolves
each distinct value of a column once; lookup tables are built on first use and kept.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, cached_property
from importlib import resources
from typing import Any

MISSING_EXTRA = "field type 'country' needs the places extra: pip install 'assignment-engine[places]'"
_ANCHORED = ("US", "CA", "AU")  # where a state is looked up when no country is given
_NEAR = Fraction(4, 5)  # difflib ratio from which an unknown value gets a did-you-mean (exact, for the length bounds)
_SHORTEST_SUGGESTED = 4  # codes are not suggested: every two-letter typo is close to some code
_SUGGESTED_KEYS = 3  # closest names offered; a did-you-mean naming more helps no one

_DROPPED = re.compile(r"['’.]")  # U.S.A. is USA, Côte d'Ivoire is Cote dIvoire on both sides
_SEPARATORS = re.compile(r"[\W_]+")
_BRACKETS = re.compile(r"\s*\[([^\]]*)\]")  # ISO's alternative names: 'A Coruña [La Coruña]'
_PARENTHESES = re.compile(r"\s*\([^)]*\)")  # ISO's qualifiers: 'Falkland Islands (Malvinas)'
_ALTERNATIVE_CODE = re.compile(r"\s+[A-Z]{2}-[A-Z0-9]{1,3}$")  # 'Sir Ynys Môn GB-YNM'


@dataclass(frozen=True)
class Resolved:
    """A value's code, or None with a did-you-mean such as ``PH (Philippines)`` when one is close."""

    code: str | None
    suggestion: str | None = None


def available() -> bool:
    """Whether pycountry is installed, so a rule file using place types can say which extra it needs."""
    return importlib.util.find_spec("pycountry") is not None


def country_code(value: str) -> Resolved:
    """The ISO 3166-1 alpha-2 code of a country however an export writes it.

    Accepted: alpha-2, alpha-3 and numeric codes (numeric without its leading
    zeros too, as spreadsheets store it), ISO's name, official and common names
    (also 'Republic of Korea' for 'Korea, Republic of') and the variants in
    ``data/place_variants.json``; case, accents, punctuation, '&' for 'and', a
    leading 'the' and 'St' for 'Saint' do not matter. Misspellings are not corrected.
    """
    text = value.strip()
    if text.isdecimal():
        return Resolved(_countries().numeric.get(text.lstrip("0")))
    return _countries().table.resolve(_normalise(text))


def subdivision_code(country: str | None, value: str) -> Resolved:
    """A state's or province's ISO 3166-2 code without the country prefix ('CA', 'NSW', 'ON').

    ``value`` is a code ('CA', 'US-CA') or a name ('new south wales'), of the
    country ``country`` (anything ``country_code`` accepts). A name shared by a
    region and one of its parts resolves to the region. Without a country the
    value must be unambiguous across the US, Canada and Australia: 'WA' (Washington
    or Western Australia) resolves to None with both as the suggestion. A country
    not recognised, or one ISO lists no subdivisions for, resolves nothing.
    """
    tables = _subdivisions()
    if country is None or not country.strip():
        table = tables.anchored
    else:
        found = tables.by_country.get(country_code(country).code or "")
        if found is None:
            return Resolved(None)
        table = found
    return table.resolve(_normalise(value))


def split_address(text: str) -> dict[str, str | None]:
    """One address text as ``street``, ``city``, ``state``, ``postal_code`` and ``country``.

    Parts are separated by commas or new lines; the layout is told by the
    postcode's shape and place, looked for in the last part or the one before it
    (the part after it is the country):

    - North American and Australian ``street, city, ST 12345[-6789][, country]``:
      a US ZIP, a Canadian ``A1A 1A1`` or an Australian 4-digit postcode after the
      state, which is a code or a name; the city may share the state's part
      (``Sydney NSW 2000``) or have its own; the street may be missing.
    - British ``street, city, POSTCODE[, country]`` (``SW1A 1AA``), the city also
      before the postcode in its part (``London SW1A 1AA``).
    - Continental ``street, 12345 city[, country]``: a 4- or 5-digit postcode, with
      a country prefix (``D-10115``) or not, Dutch ``1012 AB`` and Polish or
      Portuguese ``00-950``, ``1000-001``. A street or a country must be present,
      and what follows must be a country or close to one, since US street lines look the same.
    - Without a postcode, ``[street, ]city, state[, country]`` or ``city, country``
      when the state is known or the country is recognised, and the city has no digits.

    Values are returned as written (the caller resolves the country with
    ``country_code`` and the state with ``subdivision_code``); a part the layout
    does not place is None, and a text no layout fits is all None.
    """
    parts = [part for part in (" ".join(line.split()) for line in _PARTS.split(text)) if part]
    for at in range(len(parts) - 1, max(len(parts) - 3, -1), -1):
        before, part, after = parts[:at], parts[at], parts[at + 1 :]
        country = after[0] if after else None
        found = _american(before, part, country) or _british(before, part, country) or _continental(before, part, country)
        if found:
            return found
    return _without_postcode(parts)


def _normalise(text: str) -> str:
    """Text as the lookups key it: lower case, no accents or punctuation, '&' as 'and', no leading 'the', 'st' as 'saint'."""
    text = unicodedata.normalize("NFKD", text.casefold().replace("&", " and "))
    text = "".join(char for char in text if not unicodedata.combining(char))
    words = [word for word in _SEPARATORS.split(_DROPPED.sub("", text)) if word]
    if len(words) > 1 and words[0] == "the":
        del words[0]
    if len(words) > 1 and words[0] == "st":
        words[0] = "saint"
    return " ".join(words)


def _forms(name: str) -> list[str]:
    """ISO's other ways of writing a name: bracketed alternatives, the name without its qualifier, 'X, Y' as 'Y X'."""
    forms = [_ALTERNATIVE_CODE.sub("", alternative) for alternative in _BRACKETS.findall(name)]
    main = _PARENTHESES.sub("", _BRACKETS.sub("", name)).strip()
    forms.append(main)
    before, comma, after = main.partition(", ")
    if comma:
        forms.append(f"{after} {before}")
    return forms


def _index(levels: Iterable[Iterable[tuple[str, str]]]) -> dict[str, frozenset[str]]:
    """Normalised text → codes; a key keeps the codes of the first level that has it, so a code never loses to a name."""
    index: dict[str, frozenset[str]] = {}
    for level in levels:
        found: dict[str, set[str]] = {}
        for text, code in level:
            key = _normalise(text)
            if key and key not in index:
                found.setdefault(key, set()).add(code)
        index.update((key, frozenset(codes)) for key, codes in found.items())
    return index


@dataclass(frozen=True)
class _Table:
    """One lookup: keys → full ISO codes ('US-CA'), a label per code for messages, the codes preferred when a key names several."""

    index: dict[str, frozenset[str]]
    labels: dict[str, str]
    preferred: frozenset[str] = frozenset()

    @cached_property
    def suggestible(self) -> dict[int, list[str]]:
        """The names a did-you-mean is chosen among (not the codes), by length: only lengths near the value's can be close."""
        by_length: dict[int, list[str]] = {}
        for key in self.index:
            if len(key) >= _SHORTEST_SUGGESTED:
                by_length.setdefault(len(key), []).append(key)
        return by_length

    def resolve(self, key: str) -> Resolved:
        codes = self.index.get(key)
        if codes is None:
            return Resolved(None, self._suggest(key))
        if len(codes) > 1:
            codes = (codes & self.preferred) or codes
        if len(codes) == 1:
            return Resolved(next(iter(codes)).rpartition("-")[2])
        return Resolved(None, " or ".join(self.labels[code] for code in sorted(codes)))

    def _suggest(self, key: str) -> str | None:
        if len(key) < _SHORTEST_SUGGESTED:
            return None
        # difflib's ratio is at most 2·shorter/(both lengths): past these lengths it is below _NEAR
        lengths = range(math.ceil(len(key) * _NEAR / (2 - _NEAR)), math.floor(len(key) * (2 - _NEAR) / _NEAR) + 1)
        candidates = [name for length in lengths for name in self.suggestible.get(length, ())]
        close = difflib.get_close_matches(key, candidates, n=_SUGGESTED_KEYS, cutoff=float(_NEAR))
        codes = dict.fromkeys(code for match in close for code in sorted(self.index[match]))
        return " or ".join(self.labels[code] for code in codes) or None


@dataclass(frozen=True)
class _Countries:
    table: _Table
    numeric: dict[str, str]  # without leading zeros


@dataclass(frozen=True)
class _Subdivisions:
    by_country: dict[str, _Table]
    anchored: _Table  # US, CA and AU together, labels naming the country


@cache
def _variants() -> dict[str, Any]:
    text = resources.files("assignment_engine").joinpath("data", "place_variants.json").read_text(encoding="utf-8")
    variants: dict[str, Any] = json.loads(text)
    return variants


@cache
def _countries() -> _Countries:
    import pycountry  # noqa: PLC0415  the places extra

    countries = list(pycountry.countries)
    variants: dict[str, list[str]] = _variants()["countries"]
    names = {country.alpha_2: getattr(country, "common_name", country.name) for country in countries}
    names.update((code, spellings[0]) for code, spellings in variants.items() if code not in names)  # XK (Kosovo)
    official = [(text, c.alpha_2) for c in countries for text in (c.name, getattr(c, "official_name", None), names[c.alpha_2]) if text]
    index = _index(
        [
            [(code, code) for code in names] + [(country.alpha_3, country.alpha_2) for country in countries],
            official,
            [(form, code) for text, code in official for form in _forms(text)],
            [(spelling, code) for code, spellings in variants.items() for spelling in spellings],
        ]
    )
    labels = {code: f"{code} ({name})" for code, name in names.items()}
    return _Countries(_Table(index, labels), {country.numeric.lstrip("0"): country.alpha_2 for country in countries})


@cache
def _subdivisions() -> _Subdivisions:
    import pycountry  # noqa: PLC0415  the places extra

    grouped: dict[str, list[Any]] = {}
    for subdivision in pycountry.subdivisions:
        grouped.setdefault(subdivision.country_code, []).append(subdivision)
    variants: dict[str, dict[str, list[str]]] = _variants()["subdivisions"]
    by_country = {}
    names = {s.code: _BRACKETS.sub("", s.name) for s in pycountry.subdivisions}
    for country, subdivisions in grouped.items():
        index = _index(
            [
                [(s.code, s.code) for s in subdivisions] + [(s.code.partition("-")[2], s.code) for s in subdivisions],
                [(s.name, s.code) for s in subdivisions],
                [(form, s.code) for s in subdivisions for form in _forms(s.name)],
                [(spelling, f"{country}-{code}") for code, spellings in variants.get(country, {}).items() for spelling in spellings],
            ]
        )
        labels = {s.code: f"{s.code.partition('-')[2]} ({names[s.code]})" for s in subdivisions}
        by_country[country] = _Table(index, labels, frozenset(s.code for s in subdivisions if s.parent_code is None))
    merged: dict[str, frozenset[str]] = {}
    for country in _ANCHORED:
        for key, codes in by_country[country].index.items():
            merged[key] = merged.get(key, frozenset()) | codes
    labels = {code: f"{code.partition('-')[2]} ({names[code]}, {code[:2]})" for codes in merged.values() for code in codes}
    preferred = frozenset().union(*(by_country[country].preferred for country in _ANCHORED))
    return _Subdivisions(by_country, _Table(merged, labels, preferred))


_PARTS = re.compile(r"[,\n\r]+")
_NORTH_AMERICAN = re.compile(r"(?:(.*?)\s+)?(\d{5}(?:-\d{4})?|[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d|\d{4})")  # US, CA, AU
_BRITISH = re.compile(r"(?:(.*?)\s+)?([A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2})")
_CONTINENTAL = re.compile(r"((?:[A-Z]{1,3}-)?(?:\d{4} ?[A-Z]{2}|\d{4,5}|\d{2,4}-\d{3}))\s+(\D.*)")
_STATE_CODE = re.compile(r"[A-Z]{2,3}")  # as written: 'NSW', 'TX'; 'Apt' is not one


def _address(street: list[str], city: str | None, state: str | None, postal_code: str | None, country: str | None) -> dict[str, str | None]:
    return {"street": ", ".join(street) or None, "city": city or None, "state": state, "postal_code": postal_code, "country": country}


def _named_country(text: str | None) -> str | None:
    """The code of an address's country part, named or coded (a number there is not a country), without a did-you-mean."""
    codes = _countries().table.index.get(_normalise(text)) if text else None
    return next(iter(codes)) if codes else None


def _states(country: str | None) -> dict[str, frozenset[str]]:
    """The state keys of an address's country, or of the US, Canada and Australia when it names none with subdivisions."""
    tables = _subdivisions()
    return tables.by_country.get(_named_country(country) or "", tables.anchored).index


def _american(before: list[str], part: str, country: str | None) -> dict[str, str | None] | None:
    match = _NORTH_AMERICAN.fullmatch(part)
    if match is None:
        return None
    prefix, postal_code = match.groups()
    states = _states(country)
    state: str | None = None
    city: str | None = None
    if prefix is None:  # the postcode has its own part: 'Springfield, IL, 62704'
        if before and _normalise(before[-1]) in states:
            state, before = before[-1], before[:-1]
    else:
        words = prefix.split()
        at = next((at for at in range(len(words)) if _normalise(" ".join(words[at:])) in states), None)
        if at is None and _STATE_CODE.fullmatch(words[-1]):
            at = len(words) - 1
        if at is None:
            return None
        city, state = " ".join(words[:at]), " ".join(words[at:])
    if not city and before:
        city, before = before[-1], before[:-1]
    return _address(before, city, state, postal_code, country)


def _british(before: list[str], part: str, country: str | None) -> dict[str, str | None] | None:
    match = _BRITISH.fullmatch(part)
    if match is None:
        return None
    city, postal_code = match.groups()
    if not city and before:
        city, before = before[-1], before[:-1]
    return _address(before, city, None, postal_code, country)


def _continental(before: list[str], part: str, country: str | None) -> dict[str, str | None] | None:
    match = _CONTINENTAL.fullmatch(part)
    if match is None or not (before or country):
        return None
    if country is not None and country_code(country) == Resolved(None):  # neither a country nor close to one
        return None
    postal_code, city = match.groups()
    return _address(before, city, None, postal_code, country)


def _without_postcode(parts: list[str]) -> dict[str, str | None]:
    country = parts[-1] if parts and _named_country(parts[-1]) else None
    rest = parts[:-1] if country else parts
    state = None
    if rest and _normalise(rest[-1]) in _states(country) and (len(rest) > 1 or _STATE_CODE.fullmatch(rest[-1])):
        state, rest = rest[-1], rest[:-1]
    city = rest[-1] if rest else None
    if not (country or state) or (city and any(char.isdigit() for char in city)):  # '1600 Main St, Washington' is a street
        return _address([], None, None, None, None)
    return _address(rest[:-1], city, state, None, country)
