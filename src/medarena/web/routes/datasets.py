"""Dataset pages and /api/v1/datasets: the catalogue in the browser and for scripts.

Labels of cases in a hidden split subset are never sent: not as values, not as files,
not as previews. The image preview of a hidden case scored by a phase that takes model
submissions only is withheld too (only admins and the challenge's reviewers see it).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from medarena.datasets.catalogue import Catalogue, case_records, dataset_stats, list_datasets
from medarena.datasets.dose import DOSE_ROLE
from medarena.datasets.findings import FINDINGS_ROLE
from medarena.db.models import Dataset, Split
from medarena.db.platform_models import User
from medarena.errors import NotFoundError
from medarena.web.deps import CatalogueDep, OptionalUser, TemplatesDep, get_principal

# Objects that hold a case's reference: label maps, a dose, detection findings.
_REFERENCE_ROLES = frozenset({"label", "seg", DOSE_ROLE, FINDINGS_ROLE})

# Resolving the principal lets the page header show who is logged in.
router = APIRouter(dependencies=[Depends(get_principal)])


def _public_record(r: dict[str, Any]) -> dict[str, Any]:
    """A case record without what a hidden split must not reveal (labels, reference files)."""
    out = dict(r)
    out["hidden"] = bool(r.get("hidden_in"))
    if out["hidden"]:
        out["labels"] = {}
        out["objects"] = [o for o in r["objects"] if o["role"] not in _REFERENCE_ROLES]
    out.pop("hidden_in", None)
    return out


def _records(cat: Catalogue, name: str) -> list[dict[str, Any]]:
    try:
        recs = case_records(cat, name)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    with cat.session() as s:
        rows = s.execute(
            select(Split.name, Split.hidden_subsets).join(Dataset).where(Dataset.name == name)
        ).all()
    hidden = {n: tuple(h) for n, h in rows}
    for r in recs:
        r["hidden_in"] = [s for s, sub in r["splits"].items() if sub in hidden.get(s, ())]
    return [_public_record(r) for r in recs]


def _images_withheld(cat: Catalogue, user: User | None, name: str, case: dict[str, Any]) -> bool:
    """A hidden case of a models-only phase (:func:`medarena.challenges.models.images_withheld`)."""
    from medarena.challenges.models import images_withheld

    with cat.session() as s:
        return images_withheld(s, user, name, case["splits"])


def _find_case(cat: Catalogue, name: str, key: str) -> dict[str, Any]:
    for r in _records(cat, name):
        if r["case_key"] == key:
            return r
    raise HTTPException(404, f"no case {key!r} in dataset {name!r}")


@router.get("/api/v1/datasets", tags=["datasets"])
def api_datasets(cat: CatalogueDep) -> list[dict[str, Any]]:
    """All datasets with case counts."""
    return [d.__dict__ for d in list_datasets(cat)]


@router.get("/api/v1/datasets/{name}", tags=["datasets"])
def api_dataset(name: str, cat: CatalogueDep) -> dict[str, Any]:
    """Statistics of one dataset."""
    try:
        return dataset_stats(cat, name)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/api/v1/datasets/{name}/cases", tags=["datasets"])
def api_cases(name: str, cat: CatalogueDep) -> list[dict[str, Any]]:
    """Case records; labels of hidden-split cases are withheld."""
    return _records(cat, name)


@router.get("/datasets", response_class=HTMLResponse, include_in_schema=False)
def datasets_page(request: Request, cat: CatalogueDep, templates: TemplatesDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "datasets.html", {"datasets": list_datasets(cat)})


@router.get("/datasets/{name}", response_class=HTMLResponse, include_in_schema=False)
def dataset_page(
    request: Request, name: str, cat: CatalogueDep, templates: TemplatesDep
) -> HTMLResponse:
    recs = _records(cat, name)
    stats = dataset_stats(cat, name)
    with cat.session() as s:
        description = s.scalar(select(Dataset.description).where(Dataset.name == name)) or ""
    return templates.TemplateResponse(
        request,
        "dataset.html",
        {"name": name, "cases": recs, "stats": stats, "description": description},
    )


@router.get("/datasets/{name}/cases/{key}", response_class=HTMLResponse, include_in_schema=False)
def case_page(
    request: Request,
    name: str,
    key: str,
    cat: CatalogueDep,
    templates: TemplatesDep,
    user: OptionalUser,
) -> HTMLResponse:
    case = _find_case(cat, name, key)
    has_image = any(o["role"] == "image" for o in case["objects"])
    has_image = has_image and not _images_withheld(cat, user, name, case)
    return templates.TemplateResponse(
        request, "case.html", {"name": name, "case": case, "has_image": has_image}
    )


@router.get("/datasets/{name}/cases/{key}/preview.png", include_in_schema=False)
def case_preview(name: str, key: str, cat: CatalogueDep, user: OptionalUser) -> Response:
    case = _find_case(cat, name, key)
    if _images_withheld(cat, user, name, case):
        raise HTTPException(
            404,
            f"the images of case {key!r} are withheld: it is a hidden case scored by a "
            "phase that takes model submissions only",
        )
    image_objs = [o for o in case["objects"] if o["role"] == "image"]
    if not image_objs:
        raise HTTPException(404, "this case has no image volume")
    return Response(_preview_png(cat, image_objs[0]["digest"]), media_type="image/png")


def _preview_png(cat: Catalogue, digest: str) -> bytes:
    """Middle slice of a stored NIfTI, windowed to its 1st-99th percentile, as PNG."""
    from PIL import Image as PILImage

    from medarena.imaging import read_image

    path = cat.store.path_of(digest)
    with cat.store.open(digest):  # verifies the digest before the file is parsed
        pass
    img = read_image(path)
    arr = np.asarray(img.array)
    if arr.ndim == img.ndim + 1 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if img.ndim == 3:
            rgb = rgb[:, :, rgb.shape[2] // 2]
        plane = np.transpose(rgb, (1, 0, 2))
    else:
        if arr.ndim > img.ndim:
            arr = arr[..., 0]
        plane = arr[:, :, arr.shape[2] // 2] if arr.ndim == 3 else arr
        plane = plane.T  # (i, j) -> rows = j, columns = i
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, [1, 99]) if plane.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((plane - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(scaled).save(buf, format="PNG")
    return buf.getvalue()
