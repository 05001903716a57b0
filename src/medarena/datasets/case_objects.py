"""Attaching derived objects (a dose reference, findings) to cases that are already ingested."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from medarena.db.models import Case, CaseObject
from medarena.storage import ObjectStore


@dataclass(frozen=True)
class NewObject:
    """One object to attach: its role, bytes, media type and display name."""

    role: str
    raw: bytes
    media_type: str
    name: str


def replace_objects(
    session: Session,
    store: ObjectStore,
    case: Case,
    replaces: Callable[[str], bool],
    new: Iterable[NewObject],
) -> None:
    """Detach the case's objects whose role ``replaces`` accepts, then store and attach ``new``.

    Attaching again therefore replaces what an earlier attach left instead of adding to it.
    ``case.objects`` must be loaded; the caller owns the transaction.
    """
    for o in list(case.objects):
        if replaces(o.role):
            case.objects.remove(o)
            session.delete(o)
    session.flush()
    for n in new:
        case.objects.append(
            CaseObject(
                role=n.role,
                digest=store.put_bytes(n.raw),
                size=len(n.raw),
                media_type=n.media_type,
                name=n.name,
            )
        )
