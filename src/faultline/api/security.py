"""Who may call what, and what the API refuses before any handler runs (docs/SECURITY.md).

Every route states its access with exactly one of `PUBLIC`, `reads(ctx)` (a viewer token when
reads need one: beyond loopback) or `requires(ctx, role)` (that role's token, always), as a route
dependency. `create_app` refuses to build an app with a route that states none, so a new route
cannot be added without deciding.

`Shield` wraps the whole app: a Host allow-list against DNS rebinding, writes refused from other
origins and without a JSON content type (the only bodies a cross-site form or `text/plain` fetch
cannot send), and security headers on every answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faultline.api.context import AppContext
from faultline.config import ApiSettings
from faultline.tokens import Role, TokenInfo, TokenStore

_ACCESS = "faultline_access"

# No inline script or style anywhere (the dashboard and the docs load theirs from /static), no
# framing (clickjacking), nothing loaded from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # "none": typed by the user

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `faultline token create --role ...`",
)


@dataclass(frozen=True)
class Access:
    """A route's decision: no token (role None), or a token of at least `role`."""

    role: Role | None
    always: bool  # False: only when the settings say reads need a token

    def describe(self) -> str:
        if self.role is None:
            return "public"
        return f"{self.role.label}{'' if self.always else ' (beyond loopback)'}"


def _public() -> None:
    return None


setattr(_public, _ACCESS, Access(None, always=False))
PUBLIC = Depends(_public)
"""No token: probes, the dashboard's and the docs' pages and assets."""


def _checker(tokens: TokenStore, role: Role, *, needed: bool) -> Callable[..., TokenInfo | None]:
    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> TokenInfo | None:
        if credentials is None:
            if not needed:
                return None
            raise HTTPException(
                401,
                f"this needs a {role.label} token: send 'Authorization: Bearer <token>' "
                "(tokens come from `faultline token create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = tokens.verify(credentials.credentials)
        if token is None:
            raise HTTPException(
                401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        if token.role < role:
            raise HTTPException(
                403, f"this needs the {role.label} role; token {token.name!r} is {token.role.label}"
            )
        return token

    return check


def requires(ctx: AppContext, role: Role) -> DependsParam:
    """A token of at least `role`, on loopback too: for every write and administrative route."""
    check = _checker(ctx.tokens, role, needed=True)
    setattr(check, _ACCESS, Access(role, always=True))
    return Depends(check)


def reads(ctx: AppContext) -> DependsParam:
    """A viewer token whenever reads need one (beyond loopback, or when configured)."""
    check = _checker(ctx.tokens, Role.VIEWER, needed=ctx.settings.api.read_token_required)
    setattr(check, _ACCESS, Access(Role.VIEWER, always=False))
    return Depends(check)


def mark_public(app: ASGIApp) -> ASGIApp:
    """Declare a mounted app (static files) public."""
    setattr(app, _ACCESS, Access(None, always=False))
    return app


def _decisions(route: BaseRoute) -> Iterator[Access]:
    if isinstance(route, Mount):
        access = getattr(route.app, _ACCESS, None)
        if isinstance(access, Access):
            yield access
        return
    if isinstance(route, APIRoute):
        stack = list(route.dependant.dependencies)
        while stack:
            dependency = stack.pop()
            access = getattr(dependency.call, _ACCESS, None)
            if isinstance(access, Access):
                yield access
            stack.extend(dependency.dependencies)


def _name(route: BaseRoute) -> str:
    methods = sorted(getattr(route, "methods", None) or ["*"])
    return f"{','.join(methods)} {getattr(route, 'path', route)}"


def _routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, also those of included routers (FastAPI >= 0.165 keeps them nested)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _routes(nested.routes)
        else:
            yield route


def access_table(app: FastAPI) -> dict[str, Access | None]:
    """Every route ("METHOD path") with its one decision; None when it has none or several."""
    table: dict[str, Access | None] = {}
    for route in _routes(app.routes):
        found = list(_decisions(route))
        table[_name(route)] = found[0] if len(found) == 1 else None
    return table


def check_every_route_decided(app: FastAPI) -> None:
    undecided = [name for name, access in access_table(app).items() if access is None]
    if undecided:
        raise RuntimeError(
            "routes without exactly one access decision (PUBLIC, reads(ctx) or "
            f"requires(ctx, role)): {', '.join(undecided)}"
        )


def host_name(value: str) -> str:
    """The name in a Host or Origin authority, without port or IPv6 brackets, lower case."""
    if value.startswith("["):
        return value[1 : value.find("]")].lower() if "]" in value else value.lower()
    name, colon, port = value.rpartition(":")
    return (name if colon and port.isdigit() else value).lower()


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class Shield:
    """ASGI middleware: refuses foreign hosts and cross-site writes, adds security headers."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.allowed = settings.host_allow_list

    def refusal(self, method: str, headers: Headers) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.allowed is not None and host_name(host) not in self.allowed:
            return 421, (
                f"this server does not answer for host {host!r}: add it to "
                "FAULTLINE_API__ALLOWED_HOSTS if it is a name of this server"
            )
        if method not in _WRITE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if (site is not None and site not in _SAME_SITE_FETCHES) or (
            origin is not None and origin.partition("://")[2].lower() != host.lower()
        ):
            return 403, "cross-origin writes are refused"
        if method in _BODY_METHODS and not _is_json(headers.get("content-type")):
            return 415, "send the body as JSON, with Content-Type: application/json"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refused = self.refusal(scope["method"], Headers(scope=scope))
        if refused is not None:
            status, detail = refused
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, secured)
            return
        await self.app(scope, receive, secured)
