"""Lead → account matching: does a new lead belong to an account the plan already has?

A lead carries a company name, an email and sometimes a website. When its
company is already an account, the lead should go to that account's owner
rather than be routed like a stranger. Domains are tried first, because a
domain is an identifier while a name is a description: the lead's email
domain, then its website's, against the accounts' website domains. Then the
company name, exactly after normalising (case, accents, punctuation, legal
forms), then fuzzily.

Free-mail domains (``data/free_mail.json``) say nothing about an employer and
never match; legal forms are data too (``data/legal_suffixes.json``). Fuzzy
matching needs rapidfuzz (the ``leads`` extra); without it ``FUZZY_AVAILABLE``
is False and only domains and exact names match. See docs/leads.md for the
threshold, the blocking that keeps a million accounts fast, and what it misses.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

try:
    from rapidfuzz import fuzz, process
except ImportError:  # the leads extra is not installed: domains and exact names only
    FUZZY_AVAILABLE = False
else:
    FUZZY_AVAILABLE = True

_BRACKETED = re.compile(r"<([^<>]*)>")  # 'Jane Doe <jane@acme.com>'
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.\-]*:)?//")
_AFTER_HOST = re.compile(r"[/?#\\]")
_NOT_AN_ADDRESS = re.compile(r"[\s,;]")  # a list of addresses or a sentence is not one address
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"  # letters and digits of any script: IDN hosts are kept as written
_HOST = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_TLD = re.compile(r"[a-z]{2,3}")  # what a free-mail pattern's '*' ends with: fr, com

_DROPPED = re.compile(r"['’.]")  # S.A. is sa, O'Brien is obrien
_WORD = re.compile(r"[^\W_]+")
_UNDECOMPOSED = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})  # NFKD keeps these whole

NAME_LIMIT = 1000  # characters of a company name that count: four times the longest Salesforce Account Name (255)
_CHAR_BLOCK = 4  # a name is also blocked by the first and last four letters of its rarest word
_LARGEST_BLOCK = 2000  # keys sharing a word or word end, above which the block is dropped: a scan of it costs ~0.3 ms


@dataclass(frozen=True)
class LeadMatch:
    """The account a lead belongs to and, for its reason, how that was found."""

    account_id: str
    how: str  # "email domain acme.com", "company name 'Acme Corporation' (fuzzy 93)", ...
    score: float  # 100 unless fuzzy


def domain(value: str | None) -> str | None:
    """The host of a website or an email address, as accounts and leads can be compared by it.

    Scheme, 'mailto:', credentials, port, path, query, fragment, leading 'www.'
    and trailing dots are dropped and the host lower-cased; an IDN host is kept
    as written (``bücher.de`` and ``xn--bcher-kva.de`` differ). Subdomains are
    kept: ``eu.acme.com`` is not ``acme.com``. None for an empty value, an IP
    address or anything that is not a host. Free-mail hosts are returned:
    ``email_domain`` and ``AccountIndex`` are where they are refused.
    """
    if not value:
        return None
    text = value.strip().lower()
    bracketed = "<" in text and _BRACKETED.search(text)
    if bracketed:
        text = bracketed.group(1).strip()
    if text.startswith("mailto:"):
        text = text.removeprefix("mailto:").split("?", 1)[0]
    if "@" in text and not _SCHEME.match(text):
        local, _, host = text.rpartition("@")
        if not local or _NOT_AN_ADDRESS.search(local):
            return None
    else:
        authority = _AFTER_HOST.split(_SCHEME.sub("", text, count=1), maxsplit=1)[0]
        host, colon, port = authority.rpartition("@")[2].partition(":")
        if colon and not (port.isascii() and port.isdigit()):
            return None
    host = host.rstrip(".")
    if not _HOST.fullmatch(host) or "_" in host or host.rpartition(".")[2].isdigit():
        return None
    while host.startswith("www.") and host.count(".") > 1:
        host = host[4:]
    return host


def is_free_mail(host: str) -> bool:
    """Whether ``host`` (as ``domain`` returns it) is a mailbox anyone can open: gmail.com, yahoo.co.uk."""
    data = _free_mail()
    if host in data.domains:
        return True
    name, _, tail = host.partition(".")
    if name not in data.patterns:
        return False
    *second, top = tail.split(".")
    return bool(_TLD.fullmatch(top)) and (not second or (len(second) == 1 and second[0] in data.second_levels))


def email_domain(value: str | None) -> str | None:
    """The domain of an email address, or None when it is not an address or is a free-mail domain."""
    if not value or "@" not in value:
        return None
    host = domain(value)
    return None if host is None or is_free_mail(host) else host


def company_key(name: str | None) -> str | None:
    """A company name reduced to what tells companies apart, so that spellings of one name are equal.

    Accents are stripped and case folded (``Müller`` is ``muller``; ``Mueller``
    stays different), '&' is 'and', dots and apostrophes are dropped, other
    punctuation separates words; a leading 'The' and legal forms at the end
    (``data/legal_suffixes.json``, longest first and repeatedly) are removed.
    ``Acme, Inc.``, ``ACME Incorporated`` and ``The Acme Co., Ltd.`` are all
    ``acme``. None when nothing is left ('', 'Inc.', '---').

    Only the first ``NAME_LIMIT`` characters count (far above any real name;
    see docs/leads.md): a lead's name is outside text, and its cost, like the
    fuzzy scoring of the key, must not grow with whatever a form was sent.
    """
    if not name:
        return None
    words = _words(name[:NAME_LIMIT])
    legal = _legal()
    start, end = 0, len(words)  # the words kept: bounds moved, never a list copied per word dropped
    while end - start > 1 and words[start] in legal.leading:
        start += 1
    while end > start:
        for suffix in legal.by_last.get(words[end - 1], ()):
            if end - start >= len(suffix) and tuple(words[end - len(suffix) : end]) == suffix:
                end -= len(suffix)
                break
        else:
            break
    return " ".join(words[start:end]) or None


class AccountIndex:
    """Built once from the plan's accounts; answers one lead in microseconds (exact) or well under a millisecond (fuzzy).

    Accounts are given as parallel sequences in plan order; where several
    accounts share a domain or a name, the first wins, so a lead always goes to
    the same account, and ``how`` says how many there were. Accounts whose
    website is a free-mail domain are not matched by domain.

    The fuzzy score is rapidfuzz's ``token_sort_ratio`` of the two names'
    keys (the normalised Indel similarity of their words in sorted order, so
    word order does not count), computed as ``fuzz.ratio`` on keys sorted once
    here. ``threshold`` 90 lets through one inserted or missing letter in names
    of five letters and more, one wrong or swapped letter in names of ten and
    more, and nothing in shorter names, which collide too easily.

    Blocking, so that a lead is not compared with every name: a key is
    compared only with keys sharing one of its two rarest words, or the first
    or last four letters and the length (within one) of its rarest word; a
    block of over 2,000 keys is not scanned. One typo is found unless it
    crosses a space, hits both ends of a word under eight letters, or is in a
    name made only of words so common their blocks are dropped ('Medical
    Systms' among a million accounts). docs/leads.md has the measured recall.
    """

    def __init__(self, ids: Sequence[str], names: Sequence[str | None], websites: Sequence[str | None], *, threshold: float = 90.0):
        if not len(ids) == len(names) == len(websites):
            raise ValueError(f"ids, names and websites differ in length: {len(ids)}, {len(names)}, {len(websites)}")
        if not 0 < threshold <= 100:
            raise ValueError(f"threshold must be in (0, 100], not {threshold}")
        self._ids = list(ids)
        self._names = list(names)
        self._threshold = threshold
        hosts = [domain(website) for website in websites]
        self._domains = _Firsts([None if host is None or is_free_mail(host) else host for host in hosts])
        keys = [company_key(name) for name in names]
        self._keys = _Firsts(keys)
        self._fuzzy = FUZZY_AVAILABLE
        self._blocks: dict[str, list[str]] = {}
        if self._fuzzy:
            sorted_keys = {key: _sorted(key) for key in self._keys.first}
            self._sorted = _Firsts([None if key is None else sorted_keys[key] for key in keys])
            self._words = Counter(word for words in self._sorted.first for word in set(words.split(" ")))
            for words in self._sorted.first:
                for block in self._block_ids(words, lead=False):
                    self._blocks.setdefault(block, []).append(words)
            self._blocks = {block: keys for block, keys in self._blocks.items() if len(keys) <= _LARGEST_BLOCK}

    def match(self, *, company: str | None, email: str | None, website: str | None = None) -> LeadMatch | None:
        """The account this lead belongs to: by email domain, website domain, exact name, then fuzzy name; None when none is found."""
        for what, host in (("email", email_domain(email)), ("website", domain(website))):
            if host is not None and host in self._domains.first:  # free-mail hosts are not indexed
                return self._found(self._domains, host, f"{what} domain {host}", 100.0)
        key = company_key(company)
        if key is None:
            return None
        if key in self._keys.first:
            return self._found(self._keys, key, f"company name {self._quoted(self._keys.first[key])} (exact after normalising)", 100.0)
        if not self._fuzzy:
            return None
        words = _sorted(key)
        best: tuple[float, int, str] | None = None  # score, the negated first position (ties: the earlier account), key
        for block in self._block_ids(words, lead=True):
            cutoff = best[0] if best else self._threshold
            found = process.extractOne(words, self._blocks.get(block, ()), scorer=fuzz.ratio, score_cutoff=cutoff)
            if found is not None:
                candidate = (found[1], -self._sorted.first[found[0]], found[0])
                best = candidate if best is None else max(best, candidate)
        if best is None:
            return None
        score, at, matched = best
        return self._found(self._sorted, matched, f"company name {self._quoted(-at)} (fuzzy {int(score)})", score)

    def _block_ids(self, words: str, *, lead: bool) -> list[str]:
        """The blocks a key is filed in, or a lead's key looked up in: its two rarest words, and its rarest word's ends.

        Ranking by rarity keeps blocks small ('systems' is in many names). A
        word the index does not know ranks first, being most likely the
        misspelt one: its first or last letters find its account (one typo
        leaves one end whole, and the length within one), and its account's
        other words, which the lead shares, are in the word blocks.
        """
        ranked = sorted((self._words.get(word, 0), word) for word in set(words.split(" ")))
        rarest = ranked[0][1]
        lengths = (len(rarest) - 1, len(rarest), len(rarest) + 1) if lead else (len(rarest),)
        ends = (f"{rarest[:_CHAR_BLOCK]}<", f">{rarest[-_CHAR_BLOCK:]}")  # '<', '>' and ':' are never in a word
        return [word for count, word in ranked if count][:2] + [f"{n}:{end}" for end in ends for n in lengths]

    def _found(self, table: _Firsts, value: str, how: str, score: float) -> LeadMatch:
        at, count = table.first[value], table.count(value)
        return LeadMatch(self._ids[at], how if count == 1 else f"{how} (first of {count} accounts)", score)

    def _quoted(self, at: int) -> str:
        return repr(self._names[at])


class _Firsts:
    """Where each value first occurs in input order, and how many accounts have it."""

    def __init__(self, values: list[str | None]) -> None:
        self.first: dict[str, int] = {}
        for at, value in enumerate(values):
            if value is not None and value not in self.first:
                self.first[value] = at
        self._shared = {value: count for value, count in Counter(values).items() if count > 1 and value is not None}

    def count(self, value: str) -> int:
        return self._shared.get(value, 1)


@dataclass(frozen=True)
class _FreeMail:
    domains: frozenset[str]
    patterns: frozenset[str]  # 'yahoo' for 'yahoo.*'
    second_levels: frozenset[str]


@dataclass(frozen=True)
class _Legal:
    leading: frozenset[str]
    by_last: dict[str, list[tuple[str, ...]]]  # a legal form's last word → the forms ending with it, longest first


def _words(name: str) -> list[str]:
    if not name.isascii():
        name = "".join(c for c in unicodedata.normalize("NFKD", name.casefold()) if not unicodedata.combining(c)).casefold()
        name = name.translate(_UNDECOMPOSED)
    return _WORD.findall(_DROPPED.sub("", name.lower().replace("&", " and ")))


def _sorted(key: str) -> str:
    return " ".join(sorted(key.split(" ")))


def _data(name: str) -> Any:
    return json.loads(resources.files("assignment_engine").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def _free_mail() -> _FreeMail:
    data = _data("free_mail.json")
    patterns = [pattern.removesuffix(".*") for pattern in data["patterns"]]
    return _FreeMail(frozenset(data["domains"]), frozenset(patterns), frozenset(data["second_levels"]))


@cache
def _legal() -> _Legal:
    data = _data("legal_suffixes.json")
    by_last: dict[str, list[tuple[str, ...]]] = {}
    for suffix in sorted({tuple(_words(text)) for text in data["suffixes"]}, key=len, reverse=True):
        by_last.setdefault(suffix[-1], []).append(suffix)
    return _Legal(frozenset(word for text in data["leading"] for word in _words(text)), by_last)
