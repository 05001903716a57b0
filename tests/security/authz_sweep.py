"""The machinery of the authorization sweep: every route, every caller, every response.

- :func:`route_calls` turns ``app.routes`` (API routes, page routes, the OpenAPI and docs
  routes, static mounts) into concrete requests, filling path and query parameters from
  the world; a parameter it cannot fill fails the sweep, naming the route, so a new route
  is never skipped silently.
- :func:`blobs` opens a response body the way a curious participant would: zip and tar
  members, gzip streams (NIfTI files), recursively.
- :func:`found` lists the sentinels in a response; :func:`snapshot` and
  :func:`foreign_changes` compare the stored rows before and after a write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import io
import itertools
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_world import LABELLED_SLICE, PHASES, SLUG, TRACKS, Caller, World
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from starlette.routing import BaseRoute, Mount, Route

from medarena.challenges.data import DOWNLOAD_KINDS
from medarena.challenges.viewer import LAYERS
from medarena.db.models import Base

# Tables a request may legitimately write whoever sends it: the audit log (reads of
# hidden data are audited), login throttling and browser sessions.
UNCHECKED_TABLES = frozenset({"audit_events", "login_attempts", "web_sessions"})
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
# Columns refreshed by every authenticated request, and the login throttle's counters
# (a failed login counts against the account it names, whoever sends it: by design).
UNCHECKED_COLUMNS = {
    "api_tokens": frozenset({"last_used_at"}),
    "users": frozenset({"failed_logins", "locked_until"}),
}


@dataclass(frozen=True)
class Call:
    """One request of the sweep."""

    method: str
    template: str  # the route's path template
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # json / content / data / files

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        extra = f" body={sorted(self.body)}" if self.body else ""
        return f"{self.method} {self.path}{'?' + query if query else ''}{extra}"


def path_values(w: World) -> dict[str, list[Any]]:
    """Values of each path parameter name: the world's slugs, ids, keys and tokens."""
    # one case of each subset: public (scored by preliminary), hidden (final), training
    cases = [w.case_keys[subset][0] for subset in ("validation", "test", "train")]
    return {
        "slug": [SLUG],
        "phase": list(PHASES),
        "track": list(TRACKS),
        "kind": list(DOWNLOAD_KINDS),
        "submission_id": sorted(w.submissions.values()),
        "case_key": cases,
        "key": cases,
        "name": ["brain"],
        "token": sorted(w.invitation_tokens.values()),
        "token_id": sorted(c.spare_token_id for c in w.callers.values() if c.spare_token_id),
        "run_id": sorted(w.lab_runs.values()),
        "ref": list(w.lab_models),
    }


QUERY_VALUES: dict[str, list[Any]] = {
    "track": list(TRACKS),
    "phase": list(PHASES),
    "format": ["csv", "svg"],  # and the default, JSON
    "layer": list(LAYERS),
    "index": [LABELLED_SLICE],
    "axis": [2],
    "filename": ["sweep.zip"],
    "next": ["/challenges"],
}
# Optional query parameters also swept with their default (parameter left out).
DEFAULT_TOO = frozenset({"phase", "format"})
# The recipe builder's validation: a grade regressor trained on the public subset, and one
# on the hidden test subset (refused); neither answer may carry a hidden grade.
BUILDER_RECIPE = (
    "name: sweep-builder\n"
    "dataset: {{name: brain, split: challenge, train: {train}, target: grade}}\n"
    "task: {{type: regression, spatial_dims: 3}}\n"
    "network: {{block: densenet, params: {{init_features: 4}}}}\n"
    "loss: {{block: l1}}\n"
    "trainer: {{patch_size: [8, 8, 4]}}\n"
)


def write_bodies(w: World) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Request bodies that would succeed for an authorized caller, per (method, template).

    A write route missing here is still called, with an empty body.
    """
    yaml = {"Content-Type": "application/yaml"}
    other_spec = w.spec_yaml.replace(f"slug: {SLUG}", "slug: evil-2025")
    # what a participant would love to do: make the private board public
    opened_spec = w.spec_yaml.replace("leaderboard: private_until_close", "leaderboard: public")
    assert opened_spec != w.spec_yaml
    targets = list(w.invitation_ids.values()) + [
        c.user_id for c in w.callers.values() if c.team_id is not None
    ]
    team_forms: list[dict[str, Any]] = [
        {"data": {"action": "create", "name": "Evil team"}},
        {"data": {"action": "invite", "email": "mallory@example.org"}},
        {"data": {"action": "leave"}},
    ]
    team_forms += [
        {"data": {"action": action, "target": str(t)}}
        for action in ("revoke", "captain")
        for t in targets
    ]
    login = {"email": "nobody@example.org", "password": "not-the-password"}
    # a participant making itself (or another) organizer, or demoting the organizer
    role_forms: list[dict[str, Any]] = [
        {"data": {"action": "grant", "role": role, "user_id": str(c.user_id)}}
        for c in w.callers.values()
        if c.user_id is not None and c.name != "organizer"
        for role in ("organizer", "reviewer")
    ]
    role_forms.append(
        {
            "data": {
                "action": "revoke",
                "role": "organizer",
                "user_id": str(w.callers["organizer"].user_id),
            }
        }
    )
    # closing the final phase now would reveal its private board
    close_final = {"phase": "final", "opens": "2020-01-02T00:00:00Z", "closes": "2020-01-03T00:00Z"}
    # a lab run on the public subsets, and one validating on the hidden test subset (refused)
    lab_recipe = (
        "name: sweep-run\n"
        "dataset: {name: brain, split: challenge}\n"
        "task: {type: segmentation, spatial_dims: 3, num_classes: 2}\n"
        "network: {block: unet, params: {channels: [4, 8], strides: [2]}}\n"
        "loss: {block: dice_ce}\n"
        "trainer: {epochs: 1, batch_size: 1, patch_size: [8, 8, 4]}\n"
    )
    hidden_recipe = lab_recipe.replace("split: challenge", "split: challenge, validation: test")
    return {
        ("POST", "/api/v1/lab/runs"): [
            {"json": {"recipe": r}} for r in (lab_recipe, hidden_recipe)
        ],
        ("POST", "/lab/runs"): [
            {"data": {"recipe": r, "action": "launch"}} for r in (lab_recipe, hidden_recipe)
        ],
        # one-click submission of A's registry model (only A may; its ONNX is not valid)
        ("POST", "/api/v1/lab/models/{ref}/submit"): [
            {"json": {"challenge": SLUG, "track": "grade", "phase": "preliminary"}}
        ],
        ("POST", "/lab/models/{ref}/submit"): [{"data": {"target": f"{SLUG}/grade/preliminary"}}],
        ("POST", "/api/v1/challenges"): [{"content": other_spec, "headers": yaml}],
        ("PUT", "/api/v1/challenges/{slug}"): [{"content": opened_spec, "headers": yaml}],
        ("POST", "/api/v1/challenges/{slug}/teams"): [{"json": {"name": "Evil team"}}],
        ("POST", "/api/v1/challenges/{slug}/team/invitations"): [
            {"json": {"email": "mallory@example.org"}}
        ],
        ("POST", "/api/v1/challenges/{slug}/submissions"): [{"content": w.upload}],
        ("POST", "/api/v1/tokens"): [{"json": {"name": "sweep"}}],
        ("POST", "/api/v1/auth/login"): [{"json": login}],
        ("POST", "/challenges/{slug}/team"): team_forms,
        ("POST", "/challenges-new"): [{"data": {"spec_text": other_spec}}],
        ("POST", "/challenges/{slug}/edit"): [{"data": {"spec_text": opened_spec}}],
        ("POST", "/challenges/{slug}/submit"): [
            {
                "data": {"target": "preliminary/grade"},
                "files": {"archive": ("sweep.zip", w.upload, "application/zip")},
            }
        ],
        ("POST", "/account/tokens"): [{"data": {"name": "sweep"}}],
        ("POST", "/api/v1/lab/recipes/validate"): [
            {"json": {"recipe": BUILDER_RECIPE.format(train=t)}} for t in ("train", "test")
        ],
        ("POST", "/challenges/{slug}/organize/participants"): role_forms,
        ("POST", "/challenges/{slug}/organize/phases"): [{"data": close_final}],
        ("POST", "/challenges/{slug}/organize/rescore"): [{"data": {"phase": "preliminary"}}],
        ("POST", "/login"): [{"data": login}],
        ("POST", "/signup"): [
            {
                "data": {
                    "email": "mallory@example.org",
                    "password": "a long enough password 1",
                    "password_repeat": "a long enough password 1",
                }
            }
        ],
    }


def _query_params(dependant: Dependant) -> list[tuple[str, bool]]:
    """(name, required) of the query parameters of a route and all its dependencies."""
    out = [(p.name, p.field_info.is_required()) for p in dependant.query_params]
    for sub in dependant.dependencies:
        out += [q for q in _query_params(sub) if q not in out]
    return out


class UnfilledParameter(AssertionError):
    """The sweep does not know a value for a route's parameter: teach it (path_values)."""


def _static_calls(mount: Mount) -> Iterator[Call]:
    directory = Path(getattr(mount.app, "directory", "") or "")
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        path = f"{mount.path}/{f.relative_to(directory).as_posix()}"
        yield Call("GET", mount.path + "/{path}", path)


@dataclass(frozen=True)
class RouteInfo:
    """One route of the app as the sweep sees it (routers included lazily are expanded)."""

    path: str
    methods: frozenset[str]
    route: BaseRoute
    in_schema: bool


def app_routes(app: FastAPI) -> list[RouteInfo]:
    """Every route of ``app``: ``app.routes`` with included routers expanded, in order."""
    out = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        path = str(ctx.path or getattr(route, "path", ""))
        methods = frozenset(ctx.methods or ())
        out.append(RouteInfo(path, methods, route, getattr(route, "include_in_schema", True)))
    return out


def route_calls(app: FastAPI, w: World) -> list[Call]:
    """Every request of the sweep: each route and method with each filling of its parameters."""
    values = path_values(w)
    bodies = write_bodies(w)
    calls: list[Call] = []
    for info in app_routes(app):
        route = info.route
        if isinstance(route, Mount):
            calls.extend(_static_calls(route))
            continue
        if not isinstance(route, Route | APIRoute):
            raise UnfilledParameter(f"the sweep does not know routes of type {type(route)}")
        path_names = [m.group(1) for m in _PARAM.finditer(info.path)]
        query: list[tuple[str, bool]] = []
        if isinstance(route, APIRoute):
            query = _query_params(route.dependant)
        for name in path_names:
            if name not in values:
                raise UnfilledParameter(f"{info.path}: no values for path parameter {name!r}")
        choices: list[list[tuple[str, Any]]] = []
        for name, required in query:
            if name not in QUERY_VALUES:
                if required:
                    raise UnfilledParameter(f"{info.path}: no values for query parameter {name!r}")
                continue
            opts = [(name, v) for v in QUERY_VALUES[name]]
            choices.append([(name, None), *opts] if name in DEFAULT_TOO else opts)
        for method in sorted(info.methods):
            variants = bodies.get((method, info.path), [{}])
            for fill in itertools.product(*(values[n] for n in path_names)):
                filled = dict(zip(path_names, fill, strict=True))
                path = _PARAM.sub(lambda m, f=filled: str(f[m.group(1)]), info.path)  # type: ignore[misc]
                for combo in itertools.product(*choices):
                    params = {k: v for k, v in combo if v is not None}
                    for body in variants if method not in ("GET", "HEAD") else [{}]:
                        calls.append(Call(method, info.path, path, params, body))
    return calls


def send(w: World, caller: Caller, call: Call) -> Any:
    """Send ``call`` as ``caller``, following no redirect."""
    body = dict(call.body)
    headers = {**body.pop("headers", {}), **caller.headers}
    w.client.cookies.clear()  # no cookie set by an earlier answer (a signup's session)
    for name, value in caller.cookies.items():
        w.client.cookies.set(name, value)
    return w.client.request(
        call.method,
        call.path,
        params=call.params,
        headers=headers,
        follow_redirects=False,
        **body,
    )


# ---------------------------------------------------------------------------- bodies

_MAX_DEPTH = 4


_DATA_URI = re.compile(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)")


def blobs(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """``data`` and, recursively, the members of the archives and gzip streams it is and
    the base64 ``data:`` URIs it holds (an inline image on a page)."""
    yield data
    if depth >= _MAX_DEPTH:
        return
    for m in _DATA_URI.finditer(data):
        with contextlib.suppress(binascii.Error):
            yield from blobs(base64.b64decode(m.group(1)), depth + 1)
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                yield from blobs(zf.read(info), depth + 1)
    elif data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            return
        yield from blobs(inner, depth + 1)
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for member in tf.getmembers():
                fh = tf.extractfile(member)
                if fh is not None:
                    yield from blobs(fh.read(), depth + 1)


_NUMBER = re.compile(rb"-?\d+(\.\d+)?(e[-+]?\d+)?")


def _occurs(sentinel: bytes, blob: bytes) -> bool:
    """Whether ``sentinel`` is in ``blob``; a number only as a whole number, not as the
    digits of a longer one (a 4-digit rendering such as 12.34 is inside 12.3456)."""
    if sentinel not in blob:
        return False
    if not _NUMBER.fullmatch(sentinel):
        return True
    pattern = rb"(?<![\d.])" + re.escape(sentinel) + rb"(?![\d])"
    return re.search(pattern, blob) is not None


def found(w: World, response: Any) -> set[str]:
    """Labels of every sentinel in the response's headers, body and nested archives."""
    sentinels = {**w.hidden.items, **w.private["A"].items, **w.private["B"].items}
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
    hits = {label for s, label in sentinels.items() if _occurs(s, head)}
    for blob in blobs(response.content):
        hits.update(label for s, label in sentinels.items() if _occurs(s, blob))
        if blob in w.hidden_pngs:
            hits.add(w.hidden_pngs[blob])
    return hits


def hidden_labels(w: World) -> set[str]:
    return set(w.hidden.items.values()) | set(w.hidden_pngs.values())


# ---------------------------------------------------------------------------- stored rows

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def snapshot(w: World) -> Snapshot:
    """Every checked row of every table, by primary key."""
    out: Snapshot = {}
    with w.catalogue.sessions() as s:
        for table in Base.metadata.sorted_tables:
            if table.name in UNCHECKED_TABLES:
                continue
            skip = UNCHECKED_COLUMNS.get(table.name, frozenset())
            pk = [c.name for c in table.primary_key.columns]
            rows: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in s.execute(select(table)).mappings():
                rows[tuple(row[k] for k in pk)] = {k: v for k, v in row.items() if k not in skip}
            out[table.name] = rows
    return out


@dataclass(frozen=True)
class _Owner:
    """What a caller owns across two snapshots: its account, teams and submissions."""

    user_id: int | None
    team_ids: frozenset[int]
    submission_ids: frozenset[int]
    lab_run_ids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, caller: Caller, *snaps: Snapshot) -> _Owner:
        teams = {caller.team_id} - {None}
        for snap in snaps:  # a team the caller is in before or after (created, left)
            teams |= {
                r["team_id"]
                for r in snap["team_members"].values()
                if r["user_id"] == caller.user_id
            }
        subs = {
            r["id"] for snap in snaps for r in snap["submissions"].values() if r["team_id"] in teams
        }
        runs = {
            r["id"]
            for snap in snaps
            for r in snap["lab_runs"].values()
            if r["owner_id"] == caller.user_id
        }
        return cls(
            caller.user_id,
            frozenset(t for t in teams if t is not None),
            frozenset(subs),
            frozenset(runs),
        )

    def owns(self, table: str, row: dict[str, Any]) -> bool:
        if self.user_id is None:
            return False
        if table == "users":
            return row.get("id") == self.user_id
        if table == "challenge_roles":  # joining makes one a participant; other roles
            return row.get("role") == "participant" and row.get("user_id") == self.user_id
        if row.get("user_id") == self.user_id:
            return True
        if table == "teams":
            return row.get("id") in self.team_ids
        if row.get("team_id") in self.team_ids:
            return True
        if table == "lab_runs":
            return row.get("owner_id") == self.user_id
        if table == "jobs":
            payload = row.get("payload") or {}
            if "run_id" in payload:
                return payload["run_id"] in self.lab_run_ids
            return payload.get("submission_id") in self.submission_ids
        return False


def foreign_changes(caller: Caller, before: Snapshot, after: Snapshot) -> list[str]:
    """Rows added, removed or changed between two snapshots that the caller does not own."""
    owner = _Owner.of(caller, before, after)
    out = []
    for table in after:
        old, new = before.get(table, {}), after[table]
        for key in old.keys() | new.keys():
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            if table == "users" and a is None:
                continue  # signing up is open to anyone
            changed = [k for k in (a or b or {}) if (a or {}).get(k) != (b or {}).get(k)]
            if all(owner.owns(table, r) for r in (a, b) if r is not None):
                continue
            kind = "added" if a is None else "removed" if b is None else f"changed {changed}"
            out.append(f"{table} {key} {kind}")
    return out
