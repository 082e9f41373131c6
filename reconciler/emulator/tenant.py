"""The emulated directory: users, their photos, and a change log that delta query reads.

Every mutation takes the next sequence number. A user remembers the number at which it was
created and at which each property last changed, and the log lists which user each number
touched, so "what changed since token N" costs the size of the change, not of the tenant.
A user also remembers when (by the tenant's clock) it was created, for replication lag, and
a restored user the number of its restore, so delta can choose to hide it.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

DEFAULT_PROPERTIES: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
# Returned only when asked for with $select (docs/graph-behaviour.md, "Properties").
HIDDEN_PROPERTIES: tuple[str, ...] = (
    "accountEnabled",
    "userType",
    "employeeId",
    "mailNickname",
    "department",
    "companyName",
    "city",
    "country",
    "createdDateTime",
    "employeeType",
    "otherMails",
    "proxyAddresses",
    "usageLocation",
    "onPremisesSyncEnabled",
    # Set for external (B2B) accounts only: "Invitation" and "Accepted" once redeemed.
    "creationType",
    "externalUserState",
)
# Real user properties that Graph refuses to return from a collection (501).
SINGLE_ENTITY_PROPERTIES: frozenset[str] = frozenset(
    {
        "aboutMe",
        "birthday",
        "hireDate",
        "interests",
        "mySite",
        "pastProjects",
        "preferredName",
        "responsibilities",
        "schools",
        "skills",
        "mailboxSettings",
    }
)
ALL_PROPERTIES: tuple[str, ...] = DEFAULT_PROPERTIES + HIDDEN_PROPERTIES
# Graph matches property names case-insensitively and answers with the canonical spelling.
CANONICAL: dict[str, str] = {
    name.lower(): name for name in (*ALL_PROPERTIES, *SINGLE_ENTITY_PROPERTIES)
}
_READ_ONLY = frozenset({"id", "createdDateTime"})
_LIST_PROPERTIES = frozenset({"businessPhones", "otherMails", "proxyAddresses"})

RemovedReason = Literal["changed", "deleted"]


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    data: bytes
    content_type: str  # as the client declared it
    width: int
    height: int
    uploads: int  # successful writes for this user so far, this one included
    detected_type: str  # what the bytes really are, e.g. "image/jpeg"
    # New on every write, whoever made it (Graph changes a photo's ETag on every upload,
    # even of the same bytes: docs/graph-behaviour.md, "Photo ETags").
    etag: str = ""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One immutable version of a user; an update replaces the record."""

    # Only properties that are set; a missing key reads as null (keeps 100k users small).
    props: Mapping[str, Any]
    created_seq: int
    # Properties changed after creation, with the sequence number of their last change.
    changed_seq: Mapping[str, int] = field(default_factory=dict)
    # When it was created, by the tenant's clock (epoch seconds): replication lag reads it.
    created_at: float = 0.0
    # The sequence number of its latest restore from deleted items; 0 if never restored.
    restored_seq: int = 0
    _json_cache: dict[tuple[Any, ...], bytes] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return str(self.props["id"])

    def seq_of(self, prop: str) -> int:
        if prop in self.changed_seq:
            return self.changed_seq[prop]
        return self.created_seq if prop in self.props or prop == "id" else 0

    def changed_since(
        self, select: Sequence[str], since: int, *, hide_restore: bool = False
    ) -> list[str]:
        """The selected properties changed after `since`; with `hide_restore`, those whose
        last change was the restore count as unchanged."""
        return [
            p
            for p in select
            if (seq := self.seq_of(p)) > since and not (hide_restore and seq == self.restored_seq)
        ]

    def project(self, select: Sequence[str], *, omit_null: bool = False) -> dict[str, Any]:
        if omit_null:
            return {p: self.props[p] for p in select if p in self.props}
        return {p: self.props.get(p) for p in select}

    def json_for(self, select: tuple[str, ...], *, omit_null: bool = False) -> bytes:
        """The serialised projection, cached: listing 100k users must not re-encode them."""
        key = (select, omit_null)
        cached = self._json_cache.get(key)
        if cached is None:
            cached = json.dumps(self.project(select, omit_null=omit_null)).encode()
            self._json_cache[key] = cached
        return cached


@dataclass(frozen=True, slots=True)
class Tombstone:
    id: str
    seq: int
    reason: RemovedReason


Change = UserRecord | Tombstone


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uuid4s(count: int) -> list[str]:
    """Random version-4 UUID strings, made in bulk: uuid.uuid4() one by one is the slow part
    of creating 100k users."""
    raw = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, len(raw), 32):
        h = raw[start : start + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", ".", ascii_text.lower()).strip(".") or "user"


def external_upn(mail: str | None, display_name: str | None, domain: str) -> str:
    """The UPN Entra gives an invited account: its own address with `@` as `_`, then
    `#EXT#@` and the inviting tenant's domain (jane@fabrikam.com -> jane_fabrikam.com#EXT#@...)."""
    local = mail.replace("@", "_") if mail else slug(display_name or "guest")
    return f"{local}#EXT#@{domain}"


class Tenant:
    """Thread-safe store of users and photos. Methods take and return Graph property names."""

    def __init__(self, domain: str = "contoso.com", clock: Callable[[], float] = time.time) -> None:
        self.domain = domain
        self._clock = clock
        self._lock = threading.RLock()
        self._seq = 0
        self._users: dict[str, UserRecord] = {}
        self._by_upn: dict[str, str] = {}
        self._tombstones: dict[str, Tombstone] = {}
        # Soft-deleted users as they were when deleted, so they can be restored.
        self._deleted: dict[str, UserRecord] = {}
        self._log_seqs: list[int] = []
        self._log_ids: list[str] = []
        self._photos: dict[str, StoredPhoto] = {}
        self._photo_writes: dict[str, int] = {}
        self._etag_seq = 0
        self._bulk_counter = 0
        self._records_cache: list[UserRecord] | None = None

    # -- mutations ------------------------------------------------------------------------

    def add_user(
        self,
        display_name: str | None,
        *,
        user_principal_name: str | None = None,
        mail: str | None = None,
        mail_nickname: str | None = None,
        employee_id: str | None = None,
        account_enabled: bool = True,
        user_type: str = "Member",
        id: str | None = None,
        external: bool = False,
    ) -> str:
        """One user. `external=True` makes a B2B account as cross-tenant synchronisation
        does: a guest-style UPN (from `mail`, else the name), userType as given (Member by
        default), creationType "Invitation", externalUserState "Accepted"."""
        with self._lock:
            if user_principal_name is not None:
                upn = user_principal_name
            elif external:
                upn = external_upn(mail, display_name, self.domain)
            else:
                upn = self._free_upn(slug(display_name or "user"))
            props = {
                "id": id or str(uuid.uuid4()),
                "displayName": display_name,
                "userPrincipalName": upn,
                "mail": mail,
                "mailNickname": mail_nickname or upn.split("@", 1)[0],
                "employeeId": employee_id,
                "accountEnabled": account_enabled,
                "userType": user_type,
                "creationType": "Invitation" if external else None,
                "externalUserState": "Accepted" if external else None,
            }
            return self._insert(props)

    def add_users(self, count: int, *, prefix: str = "User") -> list[str]:
        """Bulk creation for benchmarks: `prefix n`, prefix.n@domain, mail set, enabled members."""
        base = slug(prefix)
        ids: list[str] = []
        created = _now_iso()
        created_at = self._clock()
        fresh_ids = iter(_uuid4s(count))
        with self._lock:
            while len(ids) < count:
                self._bulk_counter += 1
                n = self._bulk_counter
                upn = f"{base}{n}@{self.domain}"
                if upn in self._by_upn:
                    continue
                props = {
                    "id": next(fresh_ids),
                    "displayName": f"{prefix} {n}",
                    "userPrincipalName": upn,
                    "mail": upn,
                    "mailNickname": f"{base}{n}",
                    "accountEnabled": True,
                    "userType": "Member",
                    "businessPhones": [],
                    "createdDateTime": created,
                }
                ids.append(self._insert(props, created_at))
        return ids

    def update_user(self, user_id: str, **graph_props: Any) -> None:
        """Change properties by their Graph names; a property set to its current value is no
        change (delta would not report it)."""
        with self._lock:
            record = self._require(user_id)
            unknown = [p for p in graph_props if p not in ALL_PROPERTIES or p in _READ_ONLY]
            if unknown:
                raise ValueError(f"not an updatable user property: {', '.join(unknown)}")
            changed = {p: v for p, v in graph_props.items() if record.props.get(p) != v}
            if not changed:
                return
            new_upn = changed.get("userPrincipalName")
            if new_upn is not None:
                self._check_upn_free(str(new_upn), record.id)
            seq = self._next_seq(record.id)
            props = {k: v for k, v in {**record.props, **changed}.items() if v is not None}
            changed_seq = {**record.changed_seq, **dict.fromkeys(changed, seq)}
            self._users[record.id] = replace(
                record, props=props, changed_seq=changed_seq, _json_cache={}
            )
            self._records_cache = None
            if new_upn is not None:
                del self._by_upn[str(record.props["userPrincipalName"]).lower()]
                self._by_upn[str(new_upn).lower()] = record.id

    def delete_user(self, user_id: str, *, permanent: bool = False) -> None:
        """Soft delete (delta reason "changed") or permanent ("deleted"); a soft-deleted user
        may later be deleted permanently."""
        with self._lock:
            record = self._users.pop(user_id, None)
            if record is None and user_id not in self._tombstones:
                raise KeyError(user_id)
            if record is not None:
                del self._by_upn[str(record.props["userPrincipalName"]).lower()]
                self._records_cache = None
            if permanent:
                self._deleted.pop(user_id, None)
            elif record is not None:
                self._deleted[user_id] = record
            reason: RemovedReason = "deleted" if permanent else "changed"
            self._tombstones[user_id] = Tombstone(user_id, self._next_seq(user_id), reason)

    def restore_user(self, user_id: str) -> None:
        """Bring a soft-deleted user back from deleted items: same id, same properties as when
        it was deleted. KeyError if it is not soft-deleted; ValueError if another user has
        taken its userPrincipalName meanwhile (Entra refuses such a restore too)."""
        with self._lock:
            record = self._deleted.get(user_id)
            if record is None:
                raise KeyError(user_id)
            upn = str(record.props["userPrincipalName"])
            self._check_upn_free(upn, user_id)
            del self._deleted[user_id]
            del self._tombstones[user_id]
            seq = self._next_seq(user_id)
            # Every property it has is news to a client that saw it removed.
            changed_seq = {**record.changed_seq, **dict.fromkeys(record.props, seq)}
            self._users[user_id] = replace(
                record, changed_seq=changed_seq, restored_seq=seq, _json_cache={}
            )
            self._by_upn[upn.lower()] = user_id
            self._records_cache = None

    def store_photo(
        self, user_id: str, data: bytes, content_type: str, size: tuple[int, int], detected: str
    ) -> StoredPhoto:
        with self._lock:
            uploads = self._photo_writes.get(user_id, 0) + 1
            self._photo_writes[user_id] = uploads
            photo = StoredPhoto(
                data, content_type, size[0], size[1], uploads, detected, self._new_etag()
            )
            self._photos[user_id] = photo
            return photo

    def change_photo_from_outside(
        self, user_id: str, data: bytes | None, size: tuple[int, int] = (0, 0)
    ) -> None:
        """Someone other than photosync (the user, Teams, the admin centre) sets the photo
        to `data` (None removes it): a new ETag, not counted in photo_writes."""
        with self._lock:
            if data is None:
                self._photos.pop(user_id, None)
                return
            photo = StoredPhoto(
                data,
                "image/jpeg",
                size[0],
                size[1],
                self._photo_writes.get(user_id, 0),
                "image/jpeg",
                self._new_etag(),
            )
            self._photos[user_id] = photo

    def _new_etag(self) -> str:
        self._etag_seq += 1
        return f'"{uuid.uuid4().hex[:8].upper()}{self._etag_seq:06d}"'

    def delete_photo(self, user_id: str) -> bool:
        with self._lock:
            return self._photos.pop(user_id, None) is not None

    # -- reads ----------------------------------------------------------------------------

    def user(self, user_id: str) -> dict[str, Any] | None:
        """The full Graph representation, unset properties as null."""
        record = self._users.get(user_id)
        if record is None:
            return None
        full: dict[str, Any] = json.loads(record.json_for(ALL_PROPERTIES))
        return full

    def photo(self, user_id: str) -> StoredPhoto | None:
        return self._photos.get(user_id)

    def photo_writes(self, user_id: str) -> int:
        """How many uploads for this user succeeded (failed or throttled ones do not count)."""
        return self._photo_writes.get(user_id, 0)

    def record(self, user_id: str) -> UserRecord | None:
        """The current version of one user, or None if it does not exist (now)."""
        return self._users.get(user_id)

    def resolve(self, key: str) -> UserRecord | None:
        """Find a user by id or userPrincipalName, as Graph's /users/{key} does."""
        with self._lock:
            record = self._users.get(key)
            if record is None and "@" in key:
                user_id = self._by_upn.get(key.lower())
                record = self._users.get(user_id) if user_id else None
            return record

    def records(self) -> list[UserRecord]:
        """Every user, as a list the caller must not modify (shared until the next change)."""
        with self._lock:
            if self._records_cache is None:
                self._records_cache = list(self._users.values())
            return self._records_cache

    @property
    def seq(self) -> int:
        return self._seq

    def initial_round(self) -> tuple[list[Change], int]:
        """Every user, plus the soft-deleted ones (Graph reports those in a first round too)."""
        with self._lock:
            soft = [t for t in self._tombstones.values() if t.reason == "changed"]
            return [*self._users.values(), *soft], self._seq

    def changes_since(self, seq: int) -> tuple[list[Change], int]:
        """The current state of everything touched after `seq`, each once, oldest first."""
        with self._lock:
            start = bisect.bisect_right(self._log_seqs, seq)
            touched = dict.fromkeys(reversed(self._log_ids[start:]))
            changes: list[Change] = []
            for user_id in reversed(touched):
                record = self._users.get(user_id)
                changes.append(record if record is not None else self._tombstones[user_id])
            return changes, self._seq

    # -- internals ------------------------------------------------------------------------

    def _insert(self, props: dict[str, Any], created_at: float | None = None) -> str:
        user_id = str(props["id"])
        if user_id in self._users:
            raise ValueError(f"a user with id {user_id} already exists")
        upn = str(props["userPrincipalName"])
        self._check_upn_free(upn, user_id)
        props.setdefault("businessPhones", [])
        props.setdefault("createdDateTime", _now_iso())
        clean = {k: v for k, v in props.items() if v is not None}
        at = self._clock() if created_at is None else created_at
        self._users[user_id] = UserRecord(clean, self._next_seq(user_id), created_at=at)
        self._records_cache = None
        self._tombstones.pop(user_id, None)
        self._deleted.pop(user_id, None)
        self._by_upn[upn.lower()] = user_id
        return user_id

    def _next_seq(self, user_id: str) -> int:
        self._seq += 1
        self._log_seqs.append(self._seq)
        self._log_ids.append(user_id)
        return self._seq

    def _require(self, user_id: str) -> UserRecord:
        record = self._users.get(user_id)
        if record is None:
            raise KeyError(user_id)
        return record

    def _check_upn_free(self, upn: str, owner: str) -> None:
        holder = self._by_upn.get(upn.lower())
        if holder is not None and holder != owner:
            raise ValueError(f"userPrincipalName {upn} is already used by user {holder}")

    def _free_upn(self, local: str) -> str:
        candidate, n = f"{local}@{self.domain}", 1
        while candidate.lower() in self._by_upn:
            n += 1
            candidate = f"{local}{n}@{self.domain}"
        return candidate
