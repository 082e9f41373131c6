"""Which user does a file name mean? Pure functions, no I/O.

Both sides are normalised the same way (Unicode NFC, casefold, whitespace collapsed), so
"JANE  DOE.JPG" written on a Mac (NFD) matches "Jane Doe" typed on Windows (NFC).
"""

from __future__ import annotations

import difflib
import enum
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

from reconciler.model import IMAGE_SUFFIXES, User

MAX_SUGGESTIONS = 3


def normalise(text: str) -> str:
    """The comparison form of a name: NFC, casefolded, runs of whitespace as one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def name_key(file_name: str) -> str:
    """The normalised name a file stands for: its name without an image extension."""
    path = PurePath(file_name)
    stem = path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name
    return normalise(stem)


def has_image_suffix(file_name: str) -> bool:
    return PurePath(file_name).suffix.lower() in IMAGE_SUFFIXES


class MatchKind(enum.Enum):
    UNIQUE = "unique"
    AMBIGUOUS = "ambiguous"
    INELIGIBLE = "ineligible"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class MatchResult:
    kind: MatchKind
    user: User | None = None  # UNIQUE, or the (first) ineligible user
    candidates: tuple[User, ...] = ()  # every user the name matched
    via_override: bool = False
    reason: str = ""


class UserIndex:
    """Users by the normalised value of one property, plus by UPN for overrides."""

    def __init__(
        self, users: Iterable[User], match_on: str, *, include_external: bool = False
    ) -> None:
        self.match_on = match_on
        self.include_external = include_external
        self._by_key: dict[str, list[User]] = defaultdict(list)
        self._by_upn: dict[str, User] = {}
        # word -> keys containing it: keeps did-you-mean cheap in a 200,000-user tenant.
        self._keys_by_word: dict[str, set[str]] = defaultdict(set)
        for user in users:
            value = user.value_of(match_on)
            if value:
                key = normalise(value)
                self._by_key[key].append(user)
                for word in key.split(" "):
                    self._keys_by_word[word].add(key)
            if user.user_principal_name:
                self._by_upn[normalise(user.user_principal_name)] = user

    def is_eligible(self, user: User) -> bool:
        return user.is_eligible(include_external=self.include_external)

    def lookup(self, key: str) -> list[User]:
        return self._by_key.get(key, [])

    def by_upn(self, upn: str) -> User | None:
        return self._by_upn.get(normalise(upn))

    def suggestions(self, key: str, limit: int = MAX_SUGGESTIONS) -> list[str]:
        """Up to `limit` eligible users' names that look like `key` ("jon smith" -> John Smith)."""
        pool: set[str] = set()
        for word in key.split(" "):
            pool |= self._keys_by_word.get(word, set())
        if not pool:
            # No shared word: fall back to names that start alike, which catches
            # single-word typos without comparing against the whole tenant.
            pool = {k for k in self._by_key if k[:2] == key[:2]}
        close = difflib.get_close_matches(key, sorted(pool), n=limit * 2, cutoff=0.6)
        names: list[str] = []
        for candidate in close:
            for user in self._by_key[candidate]:
                shown = user.value_of(self.match_on) or candidate
                if self.is_eligible(user) and shown not in names:
                    names.append(shown)
        return names[:limit]


def match(key: str, index: UserIndex) -> MatchResult:
    """Decide who a normalised file name means, by the match_on property."""
    users = index.lookup(key)
    return classify(users, f"{index.match_on} '{key}'", include_external=index.include_external)


def match_override(upn: str, index: UserIndex) -> MatchResult:
    user = index.by_upn(upn)
    if user is None:
        return MatchResult(
            MatchKind.NONE,
            reason=f"the overrides file names {upn}, who is not in the tenant; fix the CSV line",
            via_override=True,
        )
    result = classify([user], f"override {upn}", include_external=index.include_external)
    return MatchResult(result.kind, result.user, result.candidates, True, result.reason)


def classify(users: list[User], what: str, *, include_external: bool) -> MatchResult:
    """Decide among the users that hold a name: one eligible user is a match."""
    eligible = [u for u in users if u.is_eligible(include_external=include_external)]
    if len(eligible) == 1:
        return MatchResult(MatchKind.UNIQUE, eligible[0], tuple(users), reason=f"matched {what}")
    if len(eligible) > 1:
        upns = ", ".join(u.label for u in eligible)
        return MatchResult(
            MatchKind.AMBIGUOUS,
            candidates=tuple(eligible),
            reason=f"{len(eligible)} users match {what} ({upns}); add the file to the "
            "overrides file to say which one",
        )
    if users:
        user = users[0]
        why = user.ineligibility(include_external=include_external) or "not eligible"
        return MatchResult(
            MatchKind.INELIGIBLE,
            user,
            tuple(users),
            reason=f"the only match, {user.label}, is not eligible ({why}); photos go to "
            "enabled members of this tenant only",
        )
    return MatchResult(MatchKind.NONE, reason=f"no user has {what}")


def parse_overrides(rows: Iterable[list[str]]) -> dict[str, str]:
    """CSV rows `filename,userPrincipalName` -> {name key: UPN}. An optional header is skipped.

    Raises ValueError naming the first bad line (1-based) and what it should look like.
    """
    overrides: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["filename", "userprincipalname"]:
            continue
        if len(cells) != 2 or not cells[0] or "@" not in cells[1]:
            raise ValueError(f"line {number}: expected 'filename,userPrincipalName'")
        overrides[name_key(cells[0])] = cells[1]
    return overrides


def resolve(key: str, index: UserIndex, overrides: Mapping[str, str]) -> MatchResult:
    """An override wins over the match_on property."""
    upn = overrides.get(key)
    return match_override(upn, index) if upn is not None else match(key, index)
