"""The MLLP listener: HL7 v2 messages in over TCP, each answered on its connection, in
order, only once `services.message_receive` has committed it (the durability rule).

asyncio accepts connections and reads; the ORM work runs in a thread pool. Each worker
thread owns a Django DB connection and keeps it from message to message (one connection
per message would cost more than the message); a connection that errored is checked and
replaced.

Stored messages are announced to the Celery workers by a thread of its own, several in
one task when they arrive together (`Announcer`): the ACK does not wait for the broker.

When a message cannot be stored (the database is down, an unexpected error) it is
answered AR in original mode (HL7 table 0008: failed "for reasons unrelated to content
or format", the sender decides to send it again) or CE in enhanced mode, with error 207
and the words "not stored, send it again"; the connection keeps serving. A dead pooled
connection (the database restarted) is replaced and the message tried once more first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django import db
from django.conf import settings

from ris.hl7 import ack, mllp, parse, services

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# How long a stop waits for connections in the middle of a message before cutting them.
SHUTDOWN_GRACE = 30.0
NOT_STORED = "Message not stored (temporary failure at the receiver): send it again."
# How long the announcer waits for more stored messages before it sends a batch: short
# for a message alone (an order reaches the workers at once), longer when others came
# meanwhile (publishing a task and a worker's taking it cost more than a message's
# applying; the workers drain what waits anyway). And the most it puts in one task.
ANNOUNCE_LINGER = 0.005
ANNOUNCE_LINGER_BUSY = 0.025
ANNOUNCE_BATCH = 50


@dataclass(frozen=True)
class Options:
    max_message_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 600.0
    max_connections: int = 64
    workers: int = 8
    # SO_REUSEPORT: several listener processes share the port and the kernel spreads
    # connections over them (past one process's GIL; each connection stays with one).
    reuse_port: bool = False

    @classmethod
    def from_settings(cls, **overrides: float | bool) -> Options:
        """HL7_* settings, and `overrides` (tests)."""
        values = {
            "max_message_bytes": settings.HL7_MAX_MESSAGE_BYTES,
            "idle_timeout": settings.HL7_IDLE_TIMEOUT,
            "max_connections": settings.HL7_MAX_CONNECTIONS,
            "workers": min(8, settings.HL7_MAX_CONNECTIONS),
        }
        return cls(**{**values, **overrides})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Answer:
    """What goes back for one frame: the framed ACK (None: nothing, as MSH-15 may ask)
    and its MSA-1 ("" when unknown)."""

    data: bytes | None
    code: str = ""


@dataclass
class _Connection:
    peer: str
    idle: bool = True
    messages: int = 0
    refused: int = 0
    skipped: int = 0


class Announcer:
    """Queues stored messages for the workers from a thread of its own, in batches.

    The ACK does not wait for the broker, and a busy interface pays for a task (its
    publishing here, its dispatch in a worker) once per batch rather than once per
    message. Ids still queued when the process dies are not lost: their rows wait as
    received, and the periodic requeue sends them.
    """

    def __init__(self, publish: Callable[[list[int]], None] | None = None) -> None:
        self._publish = publish or _publish
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hl7-announce", daemon=True)
        self._thread.start()

    def announce(self, message_id: int) -> None:
        self._queue.put(message_id)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            started = time.monotonic()
            deadline = started + ANNOUNCE_LINGER
            while len(batch) < ANNOUNCE_BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    if len(batch) > 1 and deadline < started + ANNOUNCE_LINGER_BUSY:
                        deadline = started + ANNOUNCE_LINGER_BUSY  # traffic: wait for more
                        continue
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._publish(batch)
            except Exception:
                logger.exception("HL7 messages %s not queued now: the periodic requeue will", batch)


def _publish(message_ids: list[int]) -> None:
    from ris.hl7 import tasks

    tasks.process_messages.delay(message_ids)


def _broker_in_use() -> bool:
    """Whether tasks go through a broker (else they run in the caller, as under
    `make run`'s defaults: then each message is applied before its ACK, as before)."""
    from config.celery import app

    return not app.conf.task_always_eager


@dataclass
class Listener:
    """One listening socket. `start()`, then `shutdown()`; in between it serves.
    `announcer` is made at start when tasks go through a broker."""

    host: str
    port: int
    options: Options = field(default_factory=Options.from_settings)
    announcer: Announcer | None = None
    _server: asyncio.Server | None = field(default=None, init=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False)
    _connections: dict[asyncio.Task[None], _Connection] = field(default_factory=dict, init=False)
    _closing: bool = field(default=False, init=False)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when 0 was asked)."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        if self.announcer is None and _broker_in_use():
            self.announcer = Announcer()
        self._executor = ThreadPoolExecutor(self.options.workers, thread_name_prefix="hl7-db")
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.options.reuse_port or None,
            limit=READ_SIZE,
        )
        host, port = self.address
        logger.info("HL7 listener on %s:%s", host, port)

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, close idle connections, let those in the middle of a message
        (received or half received) answer it, for up to `grace` seconds, then close the
        rest and the DB connections."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._connections.items()):
            if connection.idle:
                task.cancel()
        busy = list(self._connections)
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        if self._executor is not None:
            executor, workers = self._executor, self.options.workers
            await asyncio.get_running_loop().run_in_executor(None, _close_pool, executor, workers)
        if self.announcer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.announcer.close)
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("HL7 listener stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._closing or len(self._connections) >= self.options.max_connections:
            logger.warning(
                "HL7 connection from %s refused: %d open (HL7_MAX_CONNECTIONS)",
                peer,
                len(self._connections),
            )
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = self._connections[task] = _Connection(peer)
        _no_delay(writer)
        logger.info("HL7 connection from %s opened", peer)
        decoder = mllp.Decoder(self.options.max_message_bytes)
        why = "closed by the peer"
        try:
            why = await self._converse(reader, writer, connection, decoder)
        except asyncio.CancelledError:  # by shutdown(); not re-raised: 3.11's streams
            why = "listener stopping"  # would log a cancelled connection task as an error
        except (ConnectionError, TimeoutError) as error:
            why = f"connection lost ({error.__class__.__name__})"
        except Exception:
            logger.exception("HL7 connection from %s failed", peer)
            why = "internal error"
        finally:
            del self._connections[task]
            writer.close()
            lost = f", {decoder.pending} bytes of an unfinished message dropped"
            logger.info(
                "HL7 connection from %s closed (%s): %d messages, %d refused%s%s",
                peer,
                why,
                connection.messages,
                connection.refused,
                f", {connection.skipped} bytes outside frames" if connection.skipped else "",
                lost if decoder.pending else "",
            )

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        decoder: mllp.Decoder,
    ) -> str:
        """Read, answer each complete frame in order, until the peer closes, the idle
        timeout passes or the listener stops (a frame half received is finished first).
        Returns why it ended."""
        timeout = self.options.idle_timeout
        while not (self._closing and not decoder.pending):
            connection.idle = not decoder.pending
            try:
                async with asyncio.timeout(timeout):
                    chunk = await reader.read(READ_SIZE)
            except TimeoutError:
                return f"idle for {timeout:g} s"
            connection.idle = False
            if not chunk:
                return "closed by the peer"
            for event in decoder.feed(chunk):
                answer = await self._answer(event, connection)
                if answer.data is not None:
                    writer.write(answer.data)
            async with asyncio.timeout(timeout):  # a peer that never reads its ACKs
                await writer.drain()
        return "listener stopping"

    async def _answer(self, event: mllp.Event, connection: _Connection) -> Answer:
        if isinstance(event, bytes):
            loop = asyncio.get_running_loop()
            announce = self.announcer.announce if self.announcer is not None else None
            answer = await loop.run_in_executor(
                self._executor, receive, event, connection.peer, announce
            )
            connection.messages += 1
            if answer.code not in ("", ack.ACCEPT, ack.COMMIT_ACCEPT):
                connection.refused += 1
            return answer
        if isinstance(event, mllp.Oversize):
            connection.messages += 1
            connection.refused += 1
            logger.warning(
                "HL7 message from %s refused: %d bytes, over HL7_MAX_MESSAGE_BYTES (%d)",
                connection.peer,
                event.size,
                self.options.max_message_bytes,
            )
            return oversize_answer(event, self.options.max_message_bytes)
        if not event.blank and not connection.skipped:
            logger.warning(
                "HL7 connection from %s: %d bytes %s dropped (not MLLP framed?)",
                connection.peer,
                event.count,
                "of an unfinished frame" if event.unfinished else "outside a frame",
            )
        connection.skipped += event.count
        return Answer(None)


# ---- in a worker thread -----------------------------------------------------------------


def receive(raw: bytes, peer: str, announce: Callable[[int], None] | None = None) -> Answer:
    """Store one message and make its framed answer; never raises."""
    try:
        receipt = _receive(raw, peer, announce)
    except Exception as error:
        if isinstance(error, db.DatabaseError):
            logger.error("HL7 message from %s not stored: %s", peer, error)
        else:
            logger.exception("HL7 message from %s not stored", peer)
        return not_stored_answer(raw)
    if receipt.ack is None:
        return Answer(None)
    code, reason = _summary(receipt.ack)
    if code not in (ack.ACCEPT, ack.COMMIT_ACCEPT):
        logger.warning(
            "HL7 message %s from %s answered %s: %s", receipt.message_id, peer, code, reason
        )
    return Answer(encode(receipt.ack), code)


def _receive(raw: bytes, peer: str, announce: Callable[[int], None] | None) -> services.Receipt:
    """`message_receive` on the thread's own DB connection, kept open from message to
    message (a connection per message would cost more than the message; CONN_MAX_AGE is
    for requests). A connection that errored is dropped; one that died while idle is
    replaced and the message tried again, once (safe: nothing was stored, or the copy is
    recorded as a duplicate)."""
    connection = db.connections[db.DEFAULT_DB_ALIAS]
    for attempt in (1, 2):
        if connection.connection is not None and connection.errors_occurred:
            if not connection.is_usable():
                connection.close()
            connection.errors_occurred = False
        pooled = connection.connection is not None
        try:
            return services.message_receive(raw, peer=peer, announce=announce)
        except (db.OperationalError, db.InterfaceError) as error:
            connection.close()
            if attempt == 2 or not pooled:
                raise
            logger.warning("HL7 listener: DB connection lost (%s); trying again", error)
    raise AssertionError("unreachable")


def _close_pool(executor: ThreadPoolExecutor, workers: int) -> None:
    """Close each worker thread's DB connection (a connection is closed only by its own
    thread), then the pool. The barrier puts one job on each thread."""
    barrier = threading.Barrier(workers)

    def close() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)
        db.connections.close_all()

    for _ in range(workers):
        executor.submit(close)
    executor.shutdown(wait=True)


# ---- answers ----------------------------------------------------------------------------


def not_stored_answer(raw: bytes) -> Answer:
    """AR (original mode) or CE (enhanced mode: CR is for type/version/processing id) for
    a message we could not store, naming its MSH-10 if its header can be read."""
    header = _header(raw)
    enhanced = header is not None and header.enhanced_mode
    code = ack.ERROR if enhanced else ack.REJECT
    if header is not None and not ack.wanted(header, code):
        return Answer(None)
    text = ack.build(header, code, reason=NOT_STORED, error_code=parse.APPLICATION_INTERNAL_ERROR)
    return Answer(encode(text), ack.COMMIT_ERROR if enhanced else ack.REJECT)


def oversize_answer(event: mllp.Oversize, limit: int) -> Answer:
    """AR for a frame too big to take (nothing of it stored)."""
    header = _header(event.head.replace(b"\n", b"\r").split(b"\r", 1)[0])
    if header is not None and not ack.wanted(header, ack.REJECT):
        return Answer(None)
    reason = f"Message of {event.size} bytes refused: the most we take is {limit} bytes."
    text = ack.build(header, ack.REJECT, reason=reason, error_code=parse.APPLICATION_INTERNAL_ERROR)
    code = ack.COMMIT_REJECT if header is not None and header.enhanced_mode else ack.REJECT
    return Answer(encode(text), code)


def _header(raw: bytes) -> parse.Header | None:
    try:
        return parse.parse(raw).header
    except Exception:  # the answer then goes without a header: MSA-2 stays empty
        return None


def encode(text: str) -> bytes:
    """An ACK as an MLLP frame, in the character set its MSH-18 names (the message's).
    SB and EB (e.g. a \\X1C\\ escape in MSH-10, echoed decoded) are escaped again."""
    msh = text.split("\r", 1)[0]
    fields = msh.split(msh[3:4] or "|")
    charset = fields[17].split("~")[0] if len(fields) > 17 else ""
    data = text.encode(parse.CHARSETS.get(charset.upper(), "utf-8"), errors="replace")
    if mllp.START_BLOCK in data or mllp.END_BLOCK in data:
        escape = (msh[6:7] or "\\").encode("ascii", errors="replace")
        for byte in (mllp.START_BLOCK, mllp.END_BLOCK):
            data = data.replace(byte, escape + b"X" + byte.hex().upper().encode() + escape)
    return mllp.frame(data)


def _summary(text: str) -> tuple[str, str]:
    """MSA-1 and the error text (ERR-8, or MSA-3 before v2.4) of an ACK, for the log."""
    code = reason = ""
    for segment in text.split("\r"):
        fields = segment.split(segment[3:4] or "|")
        if fields[0] == "MSA":
            code = fields[1] if len(fields) > 1 else ""
            reason = reason or (fields[3] if len(fields) > 3 else "")
        elif fields[0] == "ERR" and len(fields) > 8 and fields[8]:
            reason = fields[8]
    return code, reason


# ---- connections ------------------------------------------------------------------------


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "?")


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Nagle off: an ACK goes out at once, not ~40 ms later (docs NOTES, DICOM)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---- running it -------------------------------------------------------------------------


def serve(
    host: str,
    port: int,
    *,
    options: Options | None = None,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    """Listen until SIGTERM or SIGINT, then stop gracefully (main thread only).
    `ready(host, port)` is called once listening."""

    async def main() -> None:
        listener = Listener(host, port, options or Options.from_settings())
        await listener.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready(*listener.address)
        await stop.wait()
        logger.info("HL7 listener stopping: finishing messages in flight")
        await listener.shutdown()

    asyncio.run(main())


class Background:
    """A listener on an event loop of its own thread (tests, embedding)."""

    def __init__(
        self,
        host: str,
        port: int,
        options: Options | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self.listener = Listener(host, port, options or Options.from_settings(), announcer)
        self._loop = asyncio.new_event_loop()
        # Bound here, so that a port in use raises here; served from the thread.
        self._loop.run_until_complete(self.listener.start())
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hl7-listener", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Shut down gracefully (see `Listener.shutdown`) and end the thread."""
        stopping = asyncio.run_coroutine_threadsafe(self.listener.shutdown(grace), self._loop)
        try:
            stopping.result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
