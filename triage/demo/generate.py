"""Generate the bundled sample incident that ``triage demo`` replays.

The sample is produced, not hand-written, so that it can be reviewed, changed and re-made: run
``python -m triage.demo.generate [--out DIR]`` (default ``triage/demo/sample/``). Every run writes the
same bytes: one seeded ``random.Random`` per service, a fixed start time, integer milliseconds, no clock,
locale or hash-seed dependence, and gzip with ``mtime=0`` and no file name in the header.

The story (log time, UTC, starting 2026-03-14T09:00:00Z, 30 minutes):

* 00:00-10:00 healthy traffic in four services, each in its own format: ``api-gateway`` (JSON access
  logs mixed with nginx error-log lines), ``checkout`` (Spring Boot / Logback with Java traces),
  ``orders`` (Python logging with tracebacks, plus structlog JSON from its worker) and ``inventory``
  (Go, logfmt).
* 10:00 deploy of v2.14.0 to checkout (Hikari pool shrunk to 4) and orders; 11:55 the orders migration
  drops ``customers.tier``.
* 12:00-25:00 the incident. Root causes: Hikari pool exhaustion and a NullPointerException in checkout,
  ``KeyError: 'customer_tier'`` in orders, one Go panic in inventory. Symptoms: gateway upstream
  timeouts and 5xx, inventory reservation failures and an open circuit breaker, orders HTTP 500s.
* 25:00 rollback to v2.13.4; errors stop, traffic carries on.

``incident.json`` describes what was planted, so that tests can check triage finds each root cause once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
MANIFEST_NAME = "incident.json"

SEED = 20260314
START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MINUTE = 60_000
DURATION_MS = 30 * MINUTE
DEPLOY_MS = 10 * MINUTE
MIGRATION_MS = 11 * MINUTE + 55_000
INCIDENT_START_MS = 12 * MINUTE
ROLLBACK_MS = 25 * MINUTE
INCIDENT_END_MS = 25 * MINUTE + 30_000
PANIC_MS = 18 * MINUTE + 37_412

NEW_VERSION = "v2.14.0"
OLD_VERSION = "v2.13.4"

GATEWAY = "api-gateway"
CHECKOUT = "checkout"
ORDERS = "orders"
INVENTORY = "inventory"
SERVICES = (GATEWAY, CHECKOUT, ORDERS, INVENTORY)

# Substrings that identify each planted cause: every occurrence contains it, no other line does.
MATCH_POOL = "Connection is not available"
MATCH_NPE = 'Cannot invoke "com.example.checkout.Cart.getItems()"'
MATCH_KEYERROR = "KeyError: 'customer_tier'"
MATCH_PANIC = "invalid memory address or nil pointer dereference"
MATCH_GW_TIMEOUT = "upstream timed out (110: Connection timed out)"
MATCH_GW_5XX = '"msg":"upstream error"'
MATCH_INV_FAILED = "reservation call failed"
MATCH_INV_BREAKER = "circuit breaker open"
MATCH_ORDERS_500 = 'HTTP/1.1" 500'

Rate = Callable[[int], float]


def file_name(service: str) -> str:
    """The sample file holding one service's log."""
    return f"{service}.log.gz"


# --- time and formats ----------------------------------------------------------------------------------


def _at(ms: int) -> datetime:
    return START + timedelta(milliseconds=ms)


def iso_ms(ms: int) -> str:
    """``2026-03-14T09:00:00.123Z``: the ISO form with milliseconds used by JSON and logfmt lines."""
    t = _at(ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _iso_us(ms: int) -> str:
    t = _at(ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}000Z"


def _spring_ts(ms: int) -> str:
    t = _at(ms)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d}"


def _python_ts(ms: int) -> str:
    t = _at(ms)
    return f"{t:%Y-%m-%d %H:%M:%S},{ms % 1000:03d}"


def _nginx_ts(ms: int) -> str:
    return f"{_at(ms):%Y/%m/%d %H:%M:%S}"


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\\'):
        return json.dumps(text)
    return text


def gateway_json(ms: int, level: str, msg: str, **fields: object) -> str:
    """A JSON access/app line of the gateway."""
    return _json({"time": iso_ms(ms), "level": level, "service": GATEWAY, "msg": msg, **fields})


def nginx_line(ms: int, level: str, conn: int, text: str) -> str:
    """An nginx error-log line; nginx writes whole seconds, so callers pass second-aligned times."""
    return f"{_nginx_ts(ms)} [{level}] 31#31: *{conn} {text}"


def spring_line(ms: int, level: str, thread: str, logger: str, msg: str) -> str:
    """Spring Boot's default Logback pattern: ``%5p PID --- [thread] %-40logger : msg``."""
    return f"{_spring_ts(ms)} {level:>5} 1 --- [{thread}] {logger:<40} : {msg}"


def python_line(ms: int, level: str, logger: str, msg: str) -> str:
    """Python's ``%(asctime)s %(levelname)s %(name)s: %(message)s``."""
    return f"{_python_ts(ms)} {level} {logger}: {msg}"


def structlog_line(ms: int, level: str, logger: str, event: str, **kv: object) -> str:
    """structlog's JSONRenderer output: event and bound values first, then logger, level, timestamp."""
    return _json({"event": event, **kv, "logger": logger, "level": level, "timestamp": _iso_us(ms)})


def logfmt_line(ms: int, level: str, caller: str, msg: str, **kv: object) -> str:
    """A Go logfmt line as written by go-kit/slog text handlers."""
    parts = [f"ts={iso_ms(ms)}", f"level={level}", f"caller={caller}", f"msg={_logfmt_value(msg)}"]
    parts.extend(f"{k}={_logfmt_value(v)}" for k, v in kv.items())
    return " ".join(parts)


# --- events --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LogEvent:
    """One logical event: a head line with a timestamp, then any continuation lines (a trace)."""

    ms: int
    seq: int
    level: str  # DEBUG | INFO | WARN | ERROR | CRITICAL, for the manifest's counts
    lines: list[str]
    tag: str = ""  # the planted cause or symptom this event belongs to


@dataclass(slots=True)
class ServiceLog:
    """The events of one service, kept in creation order and sorted by time when rendered."""

    service: str
    rng: random.Random
    events: list[LogEvent] = field(default_factory=list)

    def add(self, ms: int, level: str, lines: str | list[str], tag: str = "") -> None:
        body = [lines] if isinstance(lines, str) else lines
        self.events.append(LogEvent(ms, len(self.events), level, body, tag))

    def ordered(self) -> list[LogEvent]:
        return sorted(self.events, key=lambda e: (e.ms, e.seq))


def arrivals(rng: random.Random, start: int, end: int, rate: Rate, peak: float) -> list[int]:
    """Times (ms) of a Poisson process with per-second ``rate(ms)`` <= ``peak``, by thinning."""
    out: list[int] = []
    t = float(start)
    while True:
        t += rng.expovariate(peak) * 1000.0
        if t >= end:
            return out
        ms = int(t)
        if rng.random() * peak < rate(ms):
            out.append(ms)


def every(start: int, end: int, period: int, rng: random.Random, jitter: int = 400) -> list[int]:
    """Periodic job times with a little jitter."""
    return [t + rng.randrange(jitter) for t in range(start, end, period)]


def _in_incident(ms: int) -> bool:
    return INCIDENT_START_MS <= ms < ROLLBACK_MS


def _ramp(ms: int, start: int, full: int) -> float:
    if ms < start:
        return 0.0
    if ms >= full:
        return 1.0
    return (ms - start) / (full - start)


# --- shared vocabulary ---------------------------------------------------------------------------------


class Vocab:
    """Random but plausible identifiers drawn from one service's generator."""

    FIRST = ("jane", "omar", "li", "sofia", "raj", "anna", "mateo", "yuki", "femi", "lena", "noah", "ines")
    LAST = ("doe", "haddad", "wei", "rossi", "patel", "novak", "garcia", "sato", "adeyemi", "berg")
    PROMOS = ("SPRING10", "WELCOME5", "FREESHIP", "VIP15", "BUNDLE3")
    AGENTS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
              "okhttp/4.12.0", "shop-android/5.8.1", "shop-ios/5.8.0", "python-requests/2.31.0")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def order(self) -> int:
        return self.rng.randrange(10_000, 99_999)

    def user(self) -> str:
        return f"u-{self.rng.randrange(1000, 99999)}"

    def customer(self) -> str:
        return f"c-{self.rng.randrange(1000, 99999)}"

    def cart(self) -> str:
        return f"C-{self.rng.randrange(10_000, 99_999)}"

    def sku(self) -> str:
        return f"SKU-{self.rng.randrange(1000, 9999)}"

    def client_ip(self) -> str:
        net = self.rng.choice(("203.0.113", "198.51.100", "192.0.2"))
        return f"{net}.{self.rng.randrange(1, 255)}"

    def pod_ip(self) -> str:
        return f"10.0.{self.rng.randrange(0, 8)}.{self.rng.randrange(2, 250)}"

    def port(self) -> int:
        return self.rng.randrange(32768, 60999)

    def email(self) -> str:
        return f"{self.rng.choice(self.FIRST)}.{self.rng.choice(self.LAST)}@example.com"

    def money(self, lo: float = 5.0, hi: float = 400.0) -> str:
        return f"{self.rng.uniform(lo, hi):.2f}"

    def thread(self) -> str:
        return f"http-nio-8080-exec-{self.rng.randrange(1, 201)}"


# --- api-gateway ---------------------------------------------------------------------------------------

UPSTREAMS = {CHECKOUT: "10.0.1.12:8080", ORDERS: "10.0.2.21:8000", INVENTORY: "10.0.3.31:9090",
             "catalog": "10.0.4.41:8080", "users": "10.0.5.17:8080"}


def _gateway_request(v: Vocab) -> tuple[str, str, str, int]:
    """A (method, path, upstream, status) of ordinary traffic."""
    r = v.rng.random()
    if r < 0.22:
        return "GET", f"/api/products/{v.rng.randrange(100, 9999)}", "catalog", 200
    if r < 0.34:
        return "GET", f"/api/products?page={v.rng.randrange(1, 40)}&sort=popular", "catalog", 200
    if r < 0.50:
        return "GET", f"/api/orders/{v.order()}", ORDERS, v.rng.choice((200, 200, 200, 200, 304, 404))
    if r < 0.56:
        return "GET", f"/api/orders/{v.order()}/summary", ORDERS, 200
    if r < 0.62:
        return "POST", "/api/orders", ORDERS, 201
    if r < 0.72:
        return "GET", f"/api/cart/{v.cart()}", CHECKOUT, 200
    if r < 0.77:
        return "PUT", f"/api/cart/{v.cart()}/items", CHECKOUT, 200
    if r < 0.84:
        return "POST", "/api/checkout", CHECKOUT, 200
    if r < 0.92:
        return "GET", f"/api/inventory/{v.sku()}", INVENTORY, 200
    if r < 0.97:
        return "GET", f"/api/users/{v.user()}/profile", "users", v.rng.choice((200, 200, 200, 401))
    return "DELETE", f"/api/cart/{v.cart()}/items/{v.sku()}", CHECKOUT, 204


def _gateway_access(log: ServiceLog, v: Vocab, ms: int, method: str, path: str, upstream: str,
                    status: int, duration: int) -> None:
    level = "warn" if status >= 500 else "info"
    msg = "upstream error" if status >= 500 else "request"
    line = gateway_json(ms, level, msg, method=method, path=path, status=status, duration_ms=duration,
                        bytes=0 if status in (204, 304) or status >= 500 else v.rng.randrange(120, 48_000),
                        client_ip=v.client_ip(), upstream=upstream, request_id=v.uuid(),
                        user_agent=v.rng.choice(Vocab.AGENTS))
    log.add(ms, "WARN" if status >= 500 else "INFO", line, "gateway-5xx" if status >= 500 else "")


def _nginx_upstream_timeout(log: ServiceLog, v: Vocab, ms: int, method: str, path: str, upstream: str) -> None:
    sec = ms - ms % 1000
    text = (f"{MATCH_GW_TIMEOUT} while reading response header from upstream, client: {v.client_ip()}, "
            f'server: api.example.com, request: "{method} {path} HTTP/1.1", '
            f'upstream: "http://{UPSTREAMS[upstream]}{path.removeprefix("/api")}", host: "api.example.com"')
    log.add(sec, "ERROR", nginx_line(sec, "error", v.rng.randrange(1000, 99_999), text), "gateway-upstream-timeout")


def build_gateway(log: ServiceLog) -> None:
    """Access logs all along; upstream timeouts and 5xx to checkout and orders during the incident."""
    v = Vocab(log.rng)
    rng = log.rng
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 7.0, 7.0):
        method, path, upstream, status = _gateway_request(v)
        duration = int(rng.lognormvariate(3.0, 0.7)) + 1
        if _in_incident(ms) and upstream == CHECKOUT and method in ("POST", "PUT"):
            # Pool exhaustion makes writes hang past proxy_read_timeout; the NPE turns checkouts into 500s.
            if rng.random() < 0.6 * _ramp(ms, 13 * MINUTE, 15 * MINUTE):
                _nginx_upstream_timeout(log, v, ms, method, path, upstream)
                _gateway_access(log, v, ms + 1, method, path, upstream, 504, 30_000 + rng.randrange(0, 9))
                continue
            if path == "/api/checkout" and ms >= INCIDENT_START_MS + 30_000 and rng.random() < 0.15:
                _gateway_access(log, v, ms, method, path, upstream, 500, duration)
                continue
        if (INCIDENT_START_MS <= ms < ROLLBACK_MS and path.endswith("/summary")) or (
                ROLLBACK_MS <= ms < ROLLBACK_MS + 20_000 and upstream in (CHECKOUT, ORDERS) and rng.random() < 0.15):
            _gateway_access(log, v, ms, method, path, upstream, 500 if path.endswith("/summary") else 502, duration)
            continue
        _gateway_access(log, v, ms, method, path, upstream, status, duration)
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 0.8, 0.8):
        r = rng.random()
        if r < 0.45:
            key = rng.choice(("product", "category", "session", "price"))
            log.add(ms, "DEBUG", gateway_json(ms, "debug", "cache hit", key=f"{key}:{rng.randrange(100, 9999)}",
                                              ttl_s=rng.randrange(5, 300)))
        elif r < 0.70:
            key = rng.choice(("product", "category", "price"))
            log.add(ms, "DEBUG", gateway_json(ms, "debug", "cache miss", key=f"{key}:{rng.randrange(100, 9999)}",
                                              fill_ms=rng.randrange(2, 40)))
        elif r < 0.95:
            log.add(ms, "DEBUG", gateway_json(ms, "debug", "token verified", user_id=v.user(),
                                              scopes="orders:read cart:write", kid=f"k{rng.randrange(1, 4)}"))
        else:
            log.add(ms, "WARN", gateway_json(ms, "warn", "rate limit exceeded", client_ip=v.client_ip(),
                                             limit=100, window_s=60, route=rng.choice(("/api/search", "/api/products"))))
    for name in (CHECKOUT, ORDERS, INVENTORY, "catalog", "users"):
        for ms in every(rng.randrange(0, 5000), DURATION_MS, 10_000, rng):
            log.add(ms, "DEBUG", gateway_json(ms, "debug", "upstream health check", upstream=name,
                                              address=UPSTREAMS[name], healthy=True,
                                              latency_ms=rng.randrange(1, 9)))
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 0.012, 0.012):
        sec = ms - ms % 1000
        page = rng.randrange(1, 40)
        text = (f"an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/"
                f"{rng.randrange(1, 10)}/{rng.randrange(10, 99)}/00000{rng.randrange(10_000, 99_999)} "
                f"while reading upstream, client: {v.client_ip()}, server: api.example.com, "
                f'request: "GET /api/products?page={page} HTTP/1.1", '
                f'upstream: "http://{UPSTREAMS["catalog"]}/products?page={page}", host: "api.example.com"')
        log.add(sec, "WARN", nginx_line(sec, "warn", rng.randrange(1000, 99_999), text))
    for ms in arrivals(rng, 0, DURATION_MS, lambda t: 0.0 if _in_incident(t) else 0.02, 0.02):
        log.add(ms, "WARN", gateway_json(ms, "warn", "slow request", method="GET",
                                         path=f"/api/products?page={rng.randrange(1, 40)}&sort=popular",
                                         duration_ms=rng.randrange(1000, 2600), upstream="catalog",
                                         threshold_ms=1000))
    for ms, version in ((DEPLOY_MS + 2_100, NEW_VERSION), (ROLLBACK_MS + 2_300, OLD_VERSION)):
        for i, name in enumerate((CHECKOUT, ORDERS)):
            log.add(ms + i * 5, "INFO", gateway_json(ms + i * 5, "info", "upstream pool updated", upstream=name,
                                                     version=version, endpoints=3))
        log.add(ms + 40, "INFO", gateway_json(ms + 40, "info", "config reloaded", generation=1 if
                                              version == NEW_VERSION else 2, routes=42))


# --- checkout (Spring Boot) ----------------------------------------------------------------------------

_WEB_FRAMES = (
    "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
    "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
    "org.springframework.web.method.support.InvocableHandlerMethod.invokeForRequest(InvocableHandlerMethod.java:188)",
    "org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle(ServletInvocableHandlerMethod.java:118)",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.invokeHandlerMethod(RequestMappingHandlerAdapter.java:926)",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.handleInternal(RequestMappingHandlerAdapter.java:831)",
    "org.springframework.web.servlet.mvc.method.AbstractHandlerMethodAdapter.handle(AbstractHandlerMethodAdapter.java:87)",
    "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1089)",
    "org.springframework.web.servlet.DispatcherServlet.doService(DispatcherServlet.java:979)",
    "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
    "org.springframework.web.servlet.FrameworkServlet.doPost(FrameworkServlet.java:914)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:590)",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:658)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:195)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:140)",
    "org.apache.catalina.core.StandardWrapperValve.invoke(StandardWrapperValve.java:167)",
    "org.apache.catalina.core.StandardContextValve.invoke(StandardContextValve.java:90)",
    "org.apache.catalina.core.StandardHostValve.invoke(StandardHostValve.java:115)",
    "org.apache.catalina.connector.CoyoteAdapter.service(CoyoteAdapter.java:344)",
    "org.apache.coyote.http11.Http11Processor.service(Http11Processor.java:391)",
    "org.apache.coyote.AbstractProtocol$ConnectionHandler.process(AbstractProtocol.java:896)",
    "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1736)",
    "org.apache.tomcat.util.threads.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1191)",
    "org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:63)",
    "java.base/java.lang.Thread.run(Thread.java:1583)",
)


def _at_lines(frames: Sequence[str]) -> list[str]:
    return [f"\tat {f}" for f in frames]


def pool_exhaustion_trace(elapsed_ms: int) -> list[str]:
    """Spring's CannotCreateTransactionException caused by Hibernate's, caused by Hikari's timeout."""
    hikari = f"HikariPool-1 - {MATCH_POOL}, request timed out after {elapsed_ms}ms."
    outer = [
        "org.springframework.transaction.interceptor.TransactionAspectSupport.invokeWithinTransaction(TransactionAspectSupport.java:373)",
        "org.springframework.transaction.interceptor.TransactionInterceptor.invoke(TransactionInterceptor.java:119)",
        "org.springframework.aop.framework.ReflectiveMethodInvocation.proceed(ReflectiveMethodInvocation.java:184)",
        "org.springframework.aop.framework.CglibAopProxy$DynamicAdvisedInterceptor.intercept(CglibAopProxy.java:765)",
        "com.example.checkout.PaymentService$$SpringCGLIB$$0.capture(<generated>)",
        "com.example.checkout.CheckoutController.checkout(CheckoutController.java:57)",
        *_WEB_FRAMES,
    ]
    return [
        "org.springframework.transaction.CannotCreateTransactionException: Could not open JPA EntityManager for transaction",
        *_at_lines((
            "org.springframework.orm.jpa.JpaTransactionManager.doBegin(JpaTransactionManager.java:466)",
            "org.springframework.transaction.support.AbstractPlatformTransactionManager.startTransaction(AbstractPlatformTransactionManager.java:531)",
            "org.springframework.transaction.support.AbstractPlatformTransactionManager.getTransaction(AbstractPlatformTransactionManager.java:405)",
            "org.springframework.transaction.interceptor.TransactionAspectSupport.createTransactionIfNecessary(TransactionAspectSupport.java:610)",
            *outer,
        )),
        f"Caused by: org.hibernate.exception.JDBCConnectionException: Unable to acquire JDBC Connection [{hikari}] [n/a]",
        *_at_lines((
            "org.hibernate.exception.internal.SQLStateConversionDelegate.convert(SQLStateConversionDelegate.java:100)",
            "org.hibernate.exception.internal.StandardSQLExceptionConverter.convert(StandardSQLExceptionConverter.java:58)",
            "org.hibernate.engine.jdbc.spi.SqlExceptionHelper.convert(SqlExceptionHelper.java:108)",
            "org.hibernate.resource.jdbc.internal.LogicalConnectionManagedImpl.acquireConnectionIfNeeded(LogicalConnectionManagedImpl.java:116)",
            "org.hibernate.resource.jdbc.internal.LogicalConnectionManagedImpl.getPhysicalConnection(LogicalConnectionManagedImpl.java:143)",
            "org.hibernate.engine.transaction.internal.jdbc.JdbcResourceLocalTransactionCoordinatorImpl$TransactionDriverControlImpl.begin(JdbcResourceLocalTransactionCoordinatorImpl.java:232)",
            "org.springframework.orm.jpa.JpaTransactionManager.doBegin(JpaTransactionManager.java:420)",
        )),
        f"\t... {len(outer) + 3} more",
        f"Caused by: java.sql.SQLTransientConnectionException: {hikari}",
        *_at_lines((
            "com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
            "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
            "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:146)",
            "com.zaxxer.hikari.HikariDataSource.getConnection(HikariDataSource.java:100)",
            "org.hibernate.engine.jdbc.connections.internal.DatasourceConnectionProviderImpl.getConnection(DatasourceConnectionProviderImpl.java:122)",
            "org.hibernate.internal.NonContextualJdbcConnectionAccess.obtainConnection(NonContextualJdbcConnectionAccess.java:46)",
            "org.hibernate.resource.jdbc.internal.LogicalConnectionManagedImpl.acquireConnectionIfNeeded(LogicalConnectionManagedImpl.java:113)",
        )),
        f"\t... {len(outer) + 9} more",
    ]


NPE_MESSAGE = f'{MATCH_NPE} because "cart" is null'


def npe_trace() -> list[str]:
    """The root cause as Spring's dispatcher servlet logs it: the same frames every time."""
    return [
        f"java.lang.NullPointerException: {NPE_MESSAGE}",
        *_at_lines((
            "com.example.checkout.CartService.total(CartService.java:88)",
            "com.example.checkout.CheckoutService.prepare(CheckoutService.java:142)",
            "com.example.checkout.CheckoutController.checkout(CheckoutController.java:49)",
            *_WEB_FRAMES,
        )),
    ]


def socket_timeout_trace() -> list[str]:
    """A benign, retried provider timeout: background noise with a trace, outside any cause."""
    return [
        "java.net.SocketTimeoutException: Read timed out",
        *_at_lines((
            "java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:278)",
            "java.base/sun.nio.ch.NioSocketImpl.implRead(NioSocketImpl.java:304)",
            "java.base/sun.nio.ch.NioSocketImpl.read(NioSocketImpl.java:346)",
            "java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)",
            "okhttp3.internal.http1.Http1ExchangeCodec.readResponseHeaders(Http1ExchangeCodec.kt:178)",
            "okhttp3.internal.connection.Exchange.readResponseHeaders(Exchange.kt:106)",
            "com.example.checkout.payments.StripeClient.capture(StripeClient.java:74)",
            "com.example.checkout.PaymentService.capture(PaymentService.java:63)",
        )),
        "\t... 58 more",
    ]


def _checkout_startup(log: ServiceLog, ms: int, version: str, pool_size: int, was: int) -> None:
    main = "main"
    steps: list[tuple[int, str, str]] = [
        (0, "c.e.checkout.CheckoutApplication", f"Starting CheckoutApplication {version} using Java 21.0.2 with PID 1 (/app/checkout.jar started by app in /app)"),
        (35, "c.e.checkout.CheckoutApplication", 'The following 1 profile is active: "prod"'),
        (1810, "o.s.b.w.embedded.tomcat.TomcatWebServer", "Tomcat initialized with port 8080 (http)"),
        (2950, "c.e.checkout.config.DataSourceConfig", f"Configuration reloaded: spring.datasource.hikari.maximum-pool-size={pool_size} (was {was})"),
        (3020, "com.zaxxer.hikari.HikariDataSource", "HikariPool-1 - Starting..."),
        (3288, "com.zaxxer.hikari.pool.HikariPool", "HikariPool-1 - Added connection org.postgresql.jdbc.PgConnection@5c7a1e2d"),
        (3291, "com.zaxxer.hikari.HikariDataSource", "HikariPool-1 - Start completed."),
        (6710, "o.s.b.w.embedded.tomcat.TomcatWebServer", "Tomcat started on port 8080 (http) with context path '/'"),
        (6742, "c.e.checkout.CheckoutApplication", "Started CheckoutApplication in 7.412 seconds (process running for 8.093)"),
    ]
    for offset, logger, msg in steps:
        log.add(ms + offset, "INFO", spring_line(ms + offset, "INFO", main, logger, msg))


def build_checkout(log: ServiceLog) -> None:
    """Steady Spring traffic; pool exhaustion and a NullPointerException from v2.14.0 until rollback."""
    v = Vocab(log.rng)
    rng = log.rng
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 3.2, 3.2):
        r = rng.random()
        level = "INFO"
        if r < 0.20:
            logger = "c.e.checkout.CheckoutController"
            msg = f"Checkout started cart={v.cart()} user={v.user()} items={rng.randrange(1, 9)}"
        elif r < 0.36:
            logger = "c.e.checkout.PaymentService"
            msg = (f"Payment authorized order={v.order()} provider={rng.choice(('stripe', 'adyen'))} "
                   f"amount={v.money()} EUR in {rng.randrange(80, 700)} ms")
        elif r < 0.50:
            level, logger = "DEBUG", "c.e.checkout.PricingService"
            msg = f"Applied promotion {rng.choice(Vocab.PROMOS)} to cart {v.cart()} discount={v.money(1, 30)} EUR"
        elif r < 0.68:
            logger = "c.e.checkout.CartService"
            msg = f"Cart {v.cart()} updated: {rng.randrange(1, 12)} items, subtotal={v.money()} EUR"
        elif r < 0.84:
            logger = "c.e.checkout.InventoryClient"
            msg = f"Reserved {rng.randrange(1, 5)} x {v.sku()} for order {v.order()} in {rng.randrange(3, 60)} ms"
        elif r < 0.995:
            level, logger = "DEBUG", "o.s.web.servlet.DispatcherServlet"
            msg = f"Completed {rng.choice(('200 OK', '200 OK', '200 OK', '201 CREATED', '404 NOT_FOUND'))}"
        else:
            level, logger = "WARN", "c.e.checkout.PaymentService"
            msg = (f"Payment provider responded slowly ({rng.randrange(1500, 4000)} ms) for order {v.order()}, "
                   "retrying (attempt 2/3)")
        log.add(ms, level, spring_line(ms, level, v.thread(), logger, msg))
    for ms in every(rng.randrange(0, 3000), DURATION_MS, 5_000, rng, 1200):
        log.add(ms, "INFO", spring_line(ms, "INFO", "scheduling-1", "c.e.checkout.OutboxRelay",
                                        f"Relayed {rng.randrange(0, 40)} outbox events in {rng.randrange(2, 90)} ms"))
    for ms in every(rng.randrange(0, 30_000), DURATION_MS, 30_000, rng):
        if _in_incident(ms) and ms >= 13 * MINUTE:
            total, active, idle, waiting = 4, 4, 0, rng.randrange(20, 140)
        elif DEPLOY_MS <= ms < ROLLBACK_MS:
            total = 4
            active = rng.randrange(1, 4)
            idle, waiting = total - active, 0
        else:
            total = 20
            active = rng.randrange(1, 6)
            idle, waiting = total - active, 0
        log.add(ms, "DEBUG", spring_line(ms, "DEBUG", "HikariPool-1 housekeeper", "com.zaxxer.hikari.pool.HikariPool",
                                         f"HikariPool-1 - Pool stats (total={total}, active={active}, "
                                         f"idle={idle}, waiting={waiting})"))
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 0.004, 0.004):
        head = spring_line(ms, "WARN", v.thread(), "c.e.checkout.PaymentService",
                           f"Payment provider call failed for order {v.order()}, will retry")
        log.add(ms, "WARN", [head, *socket_timeout_trace()])

    # Deploy and rollback: shutdown, then the Spring Boot start-up sequence.
    for ms, version, size, was in ((DEPLOY_MS + 800, NEW_VERSION, 4, 20), (ROLLBACK_MS + 900, OLD_VERSION, 20, 4)):
        log.add(ms - 700, "INFO", spring_line(ms - 700, "INFO", "SpringApplicationShutdownHook",
                                              "o.s.b.w.e.tomcat.GracefulShutdown",
                                              "Commencing graceful shutdown. Waiting for active requests to complete"))
        log.add(ms - 300, "INFO", spring_line(ms - 300, "INFO", "SpringApplicationShutdownHook",
                                              "com.zaxxer.hikari.HikariDataSource", "HikariPool-1 - Shutdown completed."))
        _checkout_startup(log, ms, version, size, was)

    # Root cause 1: the shrunken pool runs dry once traffic peaks.
    def pool_rate(t: int) -> float:
        return 0.24 * _ramp(t, 13 * MINUTE, 15 * MINUTE) if _in_incident(t) else 0.0

    for ms in arrivals(rng, INCIDENT_START_MS, ROLLBACK_MS, pool_rate, 0.24):
        elapsed = 30_000 + rng.randrange(0, 16)
        head = spring_line(ms, "ERROR", v.thread(), "c.e.checkout.PaymentService",
                           f"Payment capture failed for order {v.order()}: HikariPool-1 - {MATCH_POOL}, "
                           f"request timed out after {elapsed}ms.")
        log.add(ms, "ERROR", [head, *pool_exhaustion_trace(elapsed)], "db-pool-exhaustion")

    # Root cause 2: guest carts reach CartService.total with no cart.
    for ms in arrivals(rng, INCIDENT_START_MS + 30_000, ROLLBACK_MS, lambda _t: 0.1, 0.1):
        head = spring_line(ms, "ERROR", v.thread(), "o.a.c.c.C.[.[.[/].[dispatcherServlet]",
                           "Servlet.service() for servlet [dispatcherServlet] in context with path [] threw exception "
                           f"[Request processing failed: java.lang.NullPointerException: {NPE_MESSAGE}] "
                           "with root cause")
        log.add(ms, "ERROR", [head, *npe_trace()], "checkout-npe")


# --- orders (Python) -----------------------------------------------------------------------------------


def keyerror_trace() -> list[str]:
    """A Python 3.12 traceback with caret lines, as ``logger.exception`` writes it."""
    return [
        "Traceback (most recent call last):",
        '  File "/app/orders/api.py", line 142, in get_order_summary',
        "    summary = build_summary(order, customer)",
        "              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        '  File "/app/orders/summary.py", line 57, in build_summary',
        "    discount = _tier_discount(customer)",
        "               ^^^^^^^^^^^^^^^^^^^^^^^^",
        '  File "/app/orders/summary.py", line 31, in _tier_discount',
        '    tier = customer["customer_tier"]',
        "           ~~~~~~~~^^^^^^^^^^^^^^^^^",
        MATCH_KEYERROR,
    ]


def build_orders(log: ServiceLog) -> None:
    """A FastAPI service: access lines, app lines, structlog JSON from its worker, the KeyError."""
    v = Vocab(log.rng)
    rng = log.rng
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 3.6, 3.6):
        r = rng.random()
        order = v.order()
        if r < 0.30:
            path = rng.choice((f"/orders/{order}", f"/orders/{order}", "/orders", f"/orders?customer={v.customer()}"))
            method = "POST" if path == "/orders" else "GET"
            status = 201 if method == "POST" else rng.choice((200, 200, 200, 200, 404))
            log.add(ms, "INFO", python_line(ms, "INFO", "uvicorn.access",
                                            f'{v.pod_ip()}:{v.port()} - "{method} {path} HTTP/1.1" {status}'))
        elif r < 0.40:
            if _in_incident(ms):
                _orders_keyerror(log, v, ms, order)
            else:
                log.add(ms, "INFO", python_line(ms, "INFO", "orders.api",
                                                f"Built order summary for order {order} in {rng.uniform(1, 30):.1f}ms"))
                log.add(ms + 1, "INFO", python_line(ms + 1, "INFO", "uvicorn.access",
                                                    f'{v.pod_ip()}:{v.port()} - "GET /orders/{order}/summary HTTP/1.1" 200'))
        elif r < 0.52:
            log.add(ms, "INFO", python_line(ms, "INFO", "orders.api",
                                            f"Order {order} created for customer {v.customer()} "
                                            f"({rng.randrange(1, 9)} items, total={v.money()} EUR)"))
        elif r < 0.64:
            log.add(ms, "DEBUG", python_line(ms, "DEBUG", "orders.repo",
                                             f"Fetched customer {v.customer()} in {rng.uniform(0.5, 12):.1f}ms"))
        elif r < 0.74:
            hit = rng.random() < 0.8
            log.add(ms, "DEBUG", python_line(ms, "DEBUG", "orders.cache",
                                             f"cache {'hit' if hit else 'miss'} key=order:{order}"))
        elif r < 0.90:
            log.add(ms, "INFO", structlog_line(ms, "info", "orders.worker", "order event processed",
                                               order_id=order, topic=rng.choice(("orders.created", "orders.paid")),
                                               partition=rng.randrange(0, 12), offset=rng.randrange(10**6, 10**7),
                                               lag=rng.randrange(0, 4)))
        elif r < 0.995:
            log.add(ms, "INFO", python_line(ms, "INFO", "orders.notify",
                                            f"Confirmation email queued for {v.email()} order={order}"))
        else:
            log.add(ms, "WARN", python_line(ms, "WARNING", "orders.clients.inventory",
                                            f"Inventory reservation slow ({rng.randrange(500, 2000)} ms) for order "
                                            f"{order}, retrying (attempt 2/3)"))
    for ms in every(rng.randrange(0, 10_000), DURATION_MS, 10_000, rng, 900):
        log.add(ms, "INFO", structlog_line(ms, "info", "orders.worker", "outbox flushed",
                                           count=rng.randrange(0, 30), duration_ms=round(rng.uniform(1, 25), 1)))
    for ms in every(rng.randrange(0, 60_000), DURATION_MS, 60_000, rng, 2000):
        log.add(ms, "DEBUG", structlog_line(ms, "debug", "orders.worker", "consumer group rebalanced",
                                            group="orders-worker", assigned=12, generation=rng.randrange(40, 60)))

    for ms, version, reason in ((DEPLOY_MS + 400, NEW_VERSION, "ci pipeline 1187"),
                                (ROLLBACK_MS + 500, OLD_VERSION, "rollback requested by on-call")):
        verb = "Deploying version" if version == NEW_VERSION else "Rolling back to"
        steps = [
            (-900, "orders.main", "Received SIGTERM, draining 3 in-flight requests"),
            (-200, "uvicorn.error", "Shutting down"),
            (0, "orders.main", f"{verb} {version} ({reason})"),
            (650, "orders.main", f"Starting orders {version} (python 3.12.2, uvicorn 0.29.0, workers=4)"),
            (1400, "orders.db", "Connected to postgres orders-db:5432/orders (pool size 10)"),
            (1900, "uvicorn.error", "Application startup complete."),
        ]
        for offset, logger, msg in steps:
            log.add(ms + offset, "INFO", python_line(ms + offset, "INFO", logger, msg))
    migrations = ((MIGRATION_MS, "upgrade 0041_add_order_notes -> 0042_drop_customer_tier",
                   "ALTER TABLE customers DROP COLUMN tier CASCADE"),
                  (ROLLBACK_MS + 2_800, "downgrade 0042_drop_customer_tier -> 0041_add_order_notes",
                   "ALTER TABLE customers ADD COLUMN tier varchar(16) NOT NULL DEFAULT 'standard'"))
    for ms, step, sql in migrations:
        log.add(ms, "INFO", python_line(ms, "INFO", "alembic.runtime.migration",
                                        "Context impl PostgresqlImpl."))
        log.add(ms + 3, "INFO", python_line(ms + 3, "INFO", "alembic.runtime.migration", f"Running {step}"))
        log.add(ms + 180, "INFO", python_line(ms + 180, "INFO", "orders.db", f"Migration applied: {sql}"))


def _orders_keyerror(log: ServiceLog, v: Vocab, ms: int, order: int) -> None:
    head = python_line(ms, "ERROR", "orders.api", f"Failed to build order summary for order {order}")
    log.add(ms, "ERROR", [head, *keyerror_trace()], "orders-keyerror")
    log.add(ms + 2, "INFO", python_line(ms + 2, "INFO", "uvicorn.access",
                                        f'{v.pod_ip()}:{v.port()} - "GET /orders/{order}/summary HTTP/1.1" 500'),
            "orders-http-500")


# --- inventory (Go) ------------------------------------------------------------------------------------


def go_panic() -> list[str]:
    """A Go runtime panic as printed to stderr with GOTRACEBACK=single (no timestamps)."""
    return [
        f"panic: runtime error: {MATCH_PANIC}",
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x28 pc=0x7c1a2f]",
        "",
        "goroutine 48213 [running]:",
        "github.com/example/inventory/internal/reserve.(*Confirmer).handleResponse(0xc0001a6000, 0x0)",
        "\t/src/internal/reserve/confirm.go:112 +0x4f",
        "github.com/example/inventory/internal/reserve.(*Confirmer).Confirm(0xc0001a6000, {0xa41b20, 0xc0004e2a80}, {0xc000312090, 0x5})",
        "\t/src/internal/reserve/confirm.go:81 +0x1d4",
        "github.com/example/inventory/internal/http.(*Server).confirmReservation(0xc000188240, {0xa45f40, 0xc0002f21c0}, 0xc000496900)",
        "\t/src/internal/http/reserve.go:57 +0x17a",
        "net/http.HandlerFunc.ServeHTTP(0x0?, {0xa45f40?, 0xc0002f21c0?}, 0x0?)",
        "\t/usr/local/go/src/net/http/server.go:2166 +0x29",
        "net/http.(*ServeMux).ServeHTTP(0xc0000b2060?, {0xa45f40, 0xc0002f21c0}, 0xc000496900)",
        "\t/usr/local/go/src/net/http/server.go:2683 +0x1ad",
        "net/http.serverHandler.ServeHTTP({0xc0001c2000?}, {0xa45f40?, 0xc0002f21c0?}, 0x6?)",
        "\t/usr/local/go/src/net/http/server.go:3137 +0x8e",
        "net/http.(*conn).serve(0xc0002d4000, {0xa46b78, 0xc0001b4f30})",
        "\t/usr/local/go/src/net/http/server.go:2039 +0x5e8",
        "created by net/http.(*Server).Serve in goroutine 1",
        "\t/usr/local/go/src/net/http/server.go:3285 +0x4b4",
    ]


def _inventory_startup(log: ServiceLog, ms: int) -> None:
    log.add(ms, "INFO", logfmt_line(ms, "info", "cmd/inventory/main.go:41", "starting inventory",
                                    version="v1.8.3", go="go1.22.1", addr=":9090"))
    log.add(ms + 95, "INFO", logfmt_line(ms + 95, "info", "db/pool.go:42", "database pool ready",
                                         max_open=10, dsn_host="inventory-db:5432"))
    log.add(ms + 140, "INFO", logfmt_line(ms + 140, "info", "cmd/inventory/main.go:77", "http server listening",
                                          addr=":9090"))


def build_inventory(log: ServiceLog) -> None:
    """A Go service in logfmt; its calls to checkout time out during the incident, and it panics once."""
    v = Vocab(log.rng)
    rng = log.rng
    for ms in arrivals(rng, 0, DURATION_MS, lambda _t: 3.0, 3.0):
        r = rng.random()
        if r < 0.36:
            line = logfmt_line(ms, "info", "http/server.go:74", "http request", method="GET",
                               path=f"/v1/stock/{v.sku()}", status=rng.choice((200, 200, 200, 200, 404)),
                               duration=f"{rng.uniform(0.3, 9):.1f}ms", remote=f"{v.pod_ip()}:{v.port()}")
            log.add(ms, "INFO", line)
        elif r < 0.52:
            line = logfmt_line(ms, "info", "reserve/handler.go:61", "reservation created",
                               reservation_id=v.uuid(), order_id=v.order(), sku=v.sku(), qty=rng.randrange(1, 5))
            log.add(ms, "INFO", line)
        elif r < 0.72:
            line = logfmt_line(ms, "debug", "cache/lru.go:40", "stock cache hit", sku=v.sku(),
                               age=f"{rng.randrange(1, 120)}s")
            log.add(ms, "DEBUG", line)
        elif r < 0.995:
            if _in_incident(ms) and ms >= 13 * MINUTE and rng.random() < 0.6:
                line = logfmt_line(ms, "error", "reserve/confirm.go:77", MATCH_INV_FAILED,
                                   err="context deadline exceeded", order_id=v.order(), upstream="checkout",
                                   attempt=3, timeout="5s")
                log.add(ms, "ERROR", line, "inventory-reservation-failed")
            else:
                line = logfmt_line(ms, "info", "reserve/confirm.go:93", "reservation confirmed",
                                   order_id=v.order(), duration=f"{rng.uniform(2, 40):.1f}ms")
                log.add(ms, "INFO", line)
        else:
            line = logfmt_line(ms, "warn", "db/query.go:112", "slow query", table="stock",
                               duration=f"{rng.randrange(500, 1500)}ms", rows=rng.randrange(1, 400))
            log.add(ms, "WARN", line)
    for ms in every(rng.randrange(0, 15_000), DURATION_MS, 15_000, rng):
        in_use = rng.randrange(1, 5)
        log.add(ms, "DEBUG", logfmt_line(ms, "debug", "db/pool.go:88", "pool stats", open=10, in_use=in_use,
                                         idle=10 - in_use, wait_count=0))
    for ms in every(rng.randrange(0, 60_000), DURATION_MS, 60_000, rng, 3000):
        log.add(ms, "INFO", logfmt_line(ms, "info", "jobs/sync.go:55", "stock sync completed",
                                        job="stock-sync", updated=rng.randrange(0, 80),
                                        duration=f"{rng.uniform(0.4, 2.5):.2f}s"))
    # The breaker trips every cooldown while checkout is down, then recovers after the rollback.
    t = 13 * MINUTE + 20_000
    while t < ROLLBACK_MS:
        ms = t + rng.randrange(0, 2000)
        log.add(ms, "WARN", logfmt_line(ms, "warn", "breaker/breaker.go:52", MATCH_INV_BREAKER, breaker="checkout-confirm",
                                        failures=rng.randrange(20, 60), cooldown="30s"), "inventory-circuit-open")
        log.add(ms + 30_000, "INFO", logfmt_line(ms + 30_000, "info", "breaker/breaker.go:71",
                                                 "circuit breaker half-open", breaker="checkout-confirm"))
        t = ms + 31_000 + rng.randrange(0, 3000)
    ms = ROLLBACK_MS + 35_000
    log.add(ms, "INFO", logfmt_line(ms, "info", "breaker/breaker.go:71", "circuit breaker half-open",
                                    breaker="checkout-confirm"))
    log.add(ms + 800, "INFO", logfmt_line(ms + 800, "info", "breaker/breaker.go:80", "circuit breaker closed",
                                          breaker="checkout-confirm", successes=5))
    # Root cause 4: a nil response after a timeout is dereferenced once; the process restarts.
    log.events = [e for e in log.events if not PANIC_MS <= e.ms < PANIC_MS + 1_900]
    log.add(PANIC_MS, "CRITICAL", go_panic(), "inventory-panic")
    _inventory_startup(log, PANIC_MS + 1_900)


# --- manifest and output -------------------------------------------------------------------------------

ROOT_CAUSES: tuple[dict[str, Any], ...] = (
    {"name": "db-pool-exhaustion", "service": CHECKOUT, "match": MATCH_POOL,
     "exception_type": "java.sql.SQLTransientConnectionException",
     "exception_chain": ["org.springframework.transaction.CannotCreateTransactionException",
                         "org.hibernate.exception.JDBCConnectionException",
                         "java.sql.SQLTransientConnectionException"],
     "description": "v2.14.0 shrank the Hikari pool from 20 to 4; under peak traffic requests wait 30 s for a "
                    "connection and fail"},
    {"name": "checkout-npe", "service": CHECKOUT, "match": MATCH_NPE,
     "exception_type": "java.lang.NullPointerException",
     "exception_chain": ["java.lang.NullPointerException"],
     "description": "v2.14.0 CartService.total() dereferences a null cart for guest checkouts"},
    {"name": "orders-keyerror", "service": ORDERS, "match": MATCH_KEYERROR, "exception_type": "KeyError",
     "exception_chain": ["KeyError"],
     "description": "migration 0042 dropped customers.tier but build_summary still reads customer['customer_tier']"},
    {"name": "inventory-panic", "service": INVENTORY, "match": MATCH_PANIC, "exception_type": "panic",
     "exception_chain": ["panic"],
     "description": "a nil HTTP response after a checkout timeout is dereferenced in Confirmer.handleResponse"},
)

SYMPTOMS: tuple[dict[str, Any], ...] = (
    {"name": "gateway-upstream-timeout", "service": GATEWAY, "match": MATCH_GW_TIMEOUT},
    {"name": "gateway-5xx", "service": GATEWAY, "match": MATCH_GW_5XX},
    {"name": "orders-http-500", "service": ORDERS, "match": MATCH_ORDERS_500},
    {"name": "inventory-reservation-failed", "service": INVENTORY, "match": MATCH_INV_FAILED},
    {"name": "inventory-circuit-open", "service": INVENTORY, "match": MATCH_INV_BREAKER},
)

_BUILDERS: dict[str, Callable[[ServiceLog], None]] = {
    GATEWAY: build_gateway, CHECKOUT: build_checkout, ORDERS: build_orders, INVENTORY: build_inventory,
}


@dataclass(slots=True)
class Sample:
    """The rendered sample: the text of each file (by file name) and the manifest."""

    texts: dict[str, str]
    manifest: dict[str, Any]


def _entry(spec: dict[str, Any], events: list[LogEvent]) -> dict[str, Any]:
    mine = [e for e in events if e.tag == spec["name"]]
    out = dict(spec)
    out["events"] = len(mine)
    out["first"] = iso_ms(min(e.ms for e in mine))
    out["last"] = iso_ms(max(e.ms for e in mine))
    return out


def render() -> Sample:
    """Build every service's log and the manifest in memory; pure and deterministic."""
    texts: dict[str, str] = {}
    tagged: list[LogEvent] = []
    lines: dict[str, int] = {}
    events: dict[str, int] = {}
    levels: dict[str, int] = {"DEBUG": 0, "INFO": 0, "WARN": 0, "ERROR": 0, "CRITICAL": 0}
    for index, service in enumerate(SERVICES):
        log = ServiceLog(service, random.Random(SEED + index))
        _BUILDERS[service](log)
        ordered = [e for e in log.ordered() if 0 <= e.ms < DURATION_MS]
        body = [line for e in ordered for line in e.lines]
        name = file_name(service)
        texts[name] = "\n".join(body) + "\n"
        lines[name] = len(body)
        events[name] = len(ordered)
        for e in ordered:
            levels[e.level] += 1
        tagged.extend(e for e in ordered if e.tag)
    manifest: dict[str, Any] = {
        "description": "Bundled sample incident for `triage demo`; generated by triage/demo/generate.py",
        "generator": {"module": "triage.demo.generate", "seed": SEED},
        "log_start": iso_ms(0),
        "log_end": iso_ms(DURATION_MS),
        "start": iso_ms(INCIDENT_START_MS),
        "end": iso_ms(INCIDENT_END_MS),
        "files": {file_name(s): {"service": s, "format": f} for s, f in (
            (GATEWAY, "json access log mixed with nginx error-log lines"),
            (CHECKOUT, "spring boot logback pattern with java stack traces"),
            (ORDERS, "python logging with tracebacks, structlog json lines"),
            (INVENTORY, "go logfmt with one runtime panic"),
        )},
        "lines": lines,
        "total_lines": sum(lines.values()),
        "events": events,
        "levels": levels,
        "root_causes": [_entry(spec, tagged) for spec in ROOT_CAUSES],
        "symptoms": [_entry(spec, tagged) for spec in SYMPTOMS],
        "deploy": {
            "version": NEW_VERSION, "previous_version": OLD_VERSION, "at": iso_ms(DEPLOY_MS),
            "services": [CHECKOUT, ORDERS], "match": f"Deploying version {NEW_VERSION}",
            "migration": {"at": iso_ms(MIGRATION_MS), "service": ORDERS,
                          "match": "ALTER TABLE customers DROP COLUMN tier"},
            "rollback": {"at": iso_ms(ROLLBACK_MS), "version": OLD_VERSION,
                         "match": f"Rolling back to {OLD_VERSION}"},
        },
    }
    return Sample(texts, manifest)


def gzip_bytes(text: str) -> bytes:
    """Reproducible gzip: no name, ``mtime=0``, fixed level."""
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: indented JSON with a trailing newline."""
    return (json.dumps(manifest, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def generate(out: Path = SAMPLE_DIR) -> dict[str, Any]:
    """Write ``<service>.log.gz`` for every service and ``incident.json`` under ``out``; return the manifest."""
    sample = render()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sample.texts.items():
        (out / name).write_bytes(gzip_bytes(text))
    (out / MANIFEST_NAME).write_bytes(manifest_bytes(sample.manifest))
    return sample.manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m triage.demo.generate [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m triage.demo.generate", description=__doc__.splitlines()[0]
                                     if __doc__ else None)
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="directory to write (default: %(default)s)")
    args = parser.parse_args(argv)
    manifest = generate(args.out)
    print(f"wrote {len(manifest['lines'])} logs, {manifest['total_lines']} lines, and {MANIFEST_NAME} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
