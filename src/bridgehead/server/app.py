"""The HTTP app factory and the server entry point.

The app is stateless apart from its store handle: any number of replicas may serve one
PostgreSQL store, and any of them may die.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import bridgehead
from bridgehead.config import ServerSettings
from bridgehead.controllers.cost_watch import CostWatch
from bridgehead.controllers.rules import RuleEngine
from bridgehead.controllers.runner import WorkflowRunner
from bridgehead.controllers.scaler import Scaler
from bridgehead.controllers.scheduler import Scheduler, file_clock
from bridgehead.controllers.tally import Tally
from bridgehead.domain.costs import Price
from bridgehead.errors import (
    AuthError,
    BridgeheadError,
    Conflict,
    Forbidden,
    InvalidSpec,
    NotFound,
    StoreError,
)
from bridgehead.metrics import Metrics
from bridgehead.rules.webhook import server_egress
from bridgehead.server import (
    admin,
    agents,
    costs,
    jobs,
    rules,
    runs,
    schedules,
    ui,
    workflows,
)
from bridgehead.server.auth import Admin, TokenCache
from bridgehead.server.capacity import Capacities
from bridgehead.server.guard import BodyGuard
from bridgehead.server.limits import TokenLimit
from bridgehead.server.openapi import install as document_errors
from bridgehead.server.pools import pool_gauges
from bridgehead.server.pools import router as pools_router
from bridgehead.store import JobStore, create_store
from bridgehead.store.schedules_sql import ScheduleStore

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[BridgeheadError], int]] = [
    (InvalidSpec, 400), (Forbidden, 403), (AuthError, 401), (NotFound, 404),
    (Conflict, 409), (StoreError, 503),
]


def _status_of(exc: BridgeheadError) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


class RequestMetrics:
    """Observe each request's latency by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, status).observe(
                time.perf_counter() - start
            )


def create_app(settings: ServerSettings | None = None, store: JobStore | None = None) -> FastAPI:
    settings = settings or ServerSettings.load()
    store = store or create_store(settings.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        logger.info("store open", extra={"store": settings.dsn.kind})
        stop = asyncio.Event()
        consumers = [asyncio.create_task(c.run(stop), name=c.name)
                     for c in app.state.consumers]
        try:
            yield
        finally:
            stop.set()
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            await store.close()

    app = FastAPI(
        title="Bridgehead",
        version=bridgehead.__version__,
        description="Compute broker: orchestrators submit jobs, cluster agents pull and run them.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.tokens = TokenCache()
    app.state.metrics = Metrics()
    app.state.capacities = Capacities()
    app.state.runner = WorkflowRunner(store, cluster_ttl_s=settings.cluster_ttl_s,
                                      metrics=app.state.metrics)
    app.state.rules = RuleEngine(store, cluster_ttl_s=settings.cluster_ttl_s,
                                 metrics=app.state.metrics, egress=server_egress(
                                     settings.webhook_allow, settings.host, settings.port))
    app.state.cost_watch = CostWatch(
        store, {name: Price(**table.model_dump()) for name, table in settings.prices.items()},
        window_s=settings.cost_anomaly_window_s, metrics=app.state.metrics)
    app.state.clock = file_clock(settings.schedule_clock_file) \
        if settings.schedule_clock_file is not None else time.time
    app.state.scheduler = Scheduler(cast(ScheduleStore, store), folder=settings.workflows_dir,
                                    clock=app.state.clock, pass_s=settings.schedule_pass_s,
                                    metrics=app.state.metrics)
    app.state.tally = Tally(store, metrics=app.state.metrics)
    app.state.consumers = [app.state.runner, app.state.rules, app.state.cost_watch,
                           app.state.scheduler, app.state.tally]
    app.state.pools = settings.pool_list()
    app.state.scaler = Scaler(store, app.state.pools, interval_s=settings.scale_interval_s,
                              metrics=app.state.metrics)
    app.state.consumers.append(app.state.scaler)
    _install_handlers(app)
    app.include_router(jobs.router)
    app.include_router(agents.router)
    app.include_router(admin.router)
    app.include_router(runs.router)
    app.include_router(rules.router)
    app.include_router(workflows.router)
    app.include_router(schedules.router)
    app.include_router(costs.router)
    app.include_router(pools_router)

    @app.get("/health", tags=["ops"], responses={503: {
        "description": "The store cannot be reached: status 'degraded', store the reason."}})
    async def health() -> dict[str, Any]:
        """Liveness and store reachability; needs no token."""
        try:
            await store.counts()
        except StoreError as exc:
            return JSONResponse({"status": "degraded", "store": str(exc)}, 503)  # type: ignore[return-value]
        return {"status": "ok", "version": bridgehead.__version__, "store": settings.dsn.kind}

    @app.get("/metrics", tags=["ops"], response_class=Response, responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def metrics(_p: Admin) -> Response:
        """Prometheus exposition, for admin tokens only: it names clusters, rules and
        consumers across tenants (send the bearer token in the scrape config)."""
        now = time.time()
        online = {s.cluster.name: s.cluster.online(now, settings.cluster_ttl_s)
                  for s in await store.clusters()}
        last = await store.last_event_seq()
        for consumer in app.state.consumers:
            app.state.metrics.consumer(consumer.name, leading=consumer.leading,
                                       lag=max(0, last - consumer.cursor))
        await pool_gauges(app.state)
        body = app.state.metrics.render(await store.counts(), online, store.hub.waiting)
        return Response(body, media_type="text/plain; version=0.0.4")

    document_errors(app)
    ui.install(app)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.add_middleware(BodyGuard, limit=settings.max_body_bytes)
    app.add_middleware(TokenLimit, limit=settings.max_requests_per_token,  # outermost: cheap
                       metrics=app.state.metrics)
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(BridgeheadError)
    async def domain_error(request: Request, exc: BridgeheadError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            logger.error("request failed: %s", exc, extra={"path": request.url.path})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": exc.message}, status, headers=headers)

    @app.exception_handler(405)
    async def not_allowed(request: Request, _exc: Exception) -> JSONResponse:
        """405 with every method of the path in Allow (Starlette names only the first
        route's, and GET and POST of one path are two routes): the methods of the routes
        with the template the path matched first (/v1/jobs/batch, not /v1/jobs/{job_id})."""
        routes = [r for r in request.app.routes if isinstance(r, Route) and r.methods]
        path = next(r.path for r in routes if r.matches(request.scope)[0] is not Match.NONE)
        methods = {m for r in routes if r.path == path for m in r.methods or ()}
        return JSONResponse({"detail": f"method {request.method} not allowed here"}, 405,
                            headers={"Allow": ", ".join(sorted(methods))})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"detail": f"{where}: {first.get('msg')}", "errors": len(exc.errors())}, 422
        )

