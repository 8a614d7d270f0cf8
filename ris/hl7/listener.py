"""The MLLP listener: HL7 v2 messages in over TCP, each answered on its connection, in
order, only once `services.message_receive` has committed it (the durability rule).

A thread per connection reads, stores and answers (HL7 interfaces are a few long-lived
connections; a hand-off to a pool and back for every message cost more than the
framework's part of the message). Each thread uses a Django DB connection from message
to message (a connection per message would cost more than the message), and hands it
on to the next connection's thread when its connection ends (senders that connect for
each message); a connection that errored is checked and replaced. `Options.workers`
bounds how many messages are stored at once, and how many DB connections wait idle.

Stored messages are announced to the Celery workers by a thread of its own, several in
one task when they arrive together (`Announcer`): the ACK does not wait for the broker.

When a message cannot be stored (the database is down, an unexpected error) it is
answered AR in original mode (HL7 table 0008: failed "for reasons unrelated to content
or format", the sender decides to send it again) or CE in enhanced mode, with error 207
and the words "not stored, send it again"; the connection keeps serving. A dead pooled
connection (the database restarted) is replaced and the message tried once more first.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django import db
from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from ris.hl7 import ack, mllp, parse, services

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# How often the accepting thread looks whether the listener is stopping.
ACCEPT_POLL = 0.5
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
    # How many messages are stored at once (the others' threads wait for a turn).
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
    sock: socket.socket
    peer: str
    idle: bool = True
    stopped: bool = False  # its reading was shut by a stop
    messages: int = 0
    refused: int = 0
    skipped: int = 0

    def stop_reading(self) -> None:
        """Wake a thread waiting in recv (it reads end of stream), once."""
        if not self.stopped:
            self.stopped = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)


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


class _DatabaseConnections:
    """Django DB connections kept from one HL7 connection's thread to the next: a sender
    that connects for each message must not cost a PostgreSQL connection (a process
    forked, the statements prepared again) each time. A thread takes one as it starts
    and gives it back as it ends; at most `keep` wait idle, the rest are closed."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._idle: list[BaseDatabaseWrapper] = []
        self._lock = threading.Lock()

    def take(self) -> None:
        """Make a kept connection this thread's own, if one is idle."""
        with self._lock:
            wrapper = self._idle.pop() if self._idle else None
        if wrapper is not None:
            db.connections[db.DEFAULT_DB_ALIAS] = wrapper

    def give_back(self) -> None:
        """Keep this thread's connection for the next thread (closed if it erred or
        there are enough idle)."""
        wrapper = db.connections[db.DEFAULT_DB_ALIAS]
        usable = wrapper.connection is not None and not wrapper.errors_occurred
        if usable and not wrapper.in_atomic_block:
            if not wrapper.allow_thread_sharing:  # handed on, used by one thread at a time
                wrapper.inc_thread_sharing()
            with self._lock:
                if len(self._idle) < self._keep:
                    self._idle.append(wrapper)
                    return
        wrapper.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for wrapper in idle:
            wrapper.close()


@dataclass
class Listener:
    """One listening socket. `start()`, then `shutdown()`; in between it serves.
    `announcer` is made at start when tasks go through a broker."""

    host: str
    port: int
    options: Options = field(default_factory=Options.from_settings)
    announcer: Announcer | None = None
    _socket: socket.socket | None = field(default=None, init=False)
    _connections: dict[threading.Thread, _Connection] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _storing: threading.BoundedSemaphore | None = field(default=None, init=False)
    _accepting: threading.Thread | None = field(default=None, init=False)
    _databases: _DatabaseConnections | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when 0 was asked)."""
        assert self._socket is not None, "not started"
        host, port = self._socket.getsockname()[:2]
        return host, port

    def start(self) -> None:
        if self.announcer is None and _broker_in_use():
            self.announcer = Announcer()
        self._storing = threading.BoundedSemaphore(max(1, self.options.workers))
        self._databases = _DatabaseConnections(keep=max(1, self.options.workers))
        self._socket = socket.create_server(
            (self.host, self.port),
            family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
            backlog=128,
            reuse_port=self.options.reuse_port,
        )
        # accept() wakes twice a second to see a stop (closing a socket does not wake it).
        self._socket.settimeout(ACCEPT_POLL)
        self._accepting = threading.Thread(target=self._accept, name="hl7-accept", daemon=True)
        self._accepting.start()
        host, port = self.address
        logger.info("HL7 listener on %s:%s", host, port)

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, close idle connections, let those in the middle of a message
        (received or half received) answer it, for up to `grace` seconds, then close the
        rest, and the DB connections kept idle."""
        self._closing = True
        if self._accepting is not None:
            self._accepting.join()
        if self._socket is not None:
            self._socket.close()
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                serving = list(self._connections.items())
            for _thread, connection in serving:
                if connection.idle:
                    connection.stop_reading()
            if not serving or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        for thread, connection in serving:  # past the grace: cut them
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
            thread.join(5)
        if self._databases is not None:
            self._databases.close()
        if self.announcer is not None:
            self.announcer.close()
        logger.info("HL7 listener stopped")

    def _accept(self) -> None:
        assert self._socket is not None
        while not self._closing:
            try:
                sock, address = self._socket.accept()
            except TimeoutError:
                continue
            except OSError as error:  # e.g. out of file descriptors: try again shortly
                logger.warning("HL7 listener: accept failed (%s)", error)
                time.sleep(ACCEPT_POLL)
                continue
            peer = _peer(address)
            with self._lock:
                refused = self._closing or len(self._connections) >= self.options.max_connections
                if not refused:
                    connection = _Connection(sock, peer)
                    thread = threading.Thread(
                        target=self._serve, args=(connection,), name=f"hl7 {peer}", daemon=True
                    )
                    self._connections[thread] = connection
            if refused:
                logger.warning(
                    "HL7 connection from %s refused: %d open (HL7_MAX_CONNECTIONS)",
                    peer,
                    len(self._connections),
                )
                sock.close()
                continue
            thread.start()

    def _serve(self, connection: _Connection) -> None:
        sock, peer = connection.sock, connection.peer
        assert self._databases is not None
        self._databases.take()
        _no_delay(sock)
        logger.info("HL7 connection from %s opened", peer)
        decoder = mllp.Decoder(self.options.max_message_bytes)
        why = "closed by the peer"
        try:
            why = self._converse(connection, decoder)
        except (ConnectionError, TimeoutError) as error:
            why = f"connection lost ({error.__class__.__name__})"
        except OSError as error:
            why = "listener stopping" if self._closing else f"connection lost ({error})"
        except Exception:
            logger.exception("HL7 connection from %s failed", peer)
            why = "internal error"
        finally:
            with self._lock:
                del self._connections[threading.current_thread()]
            sock.close()
            self._databases.give_back()
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

    def _converse(self, connection: _Connection, decoder: mllp.Decoder) -> str:
        """Read, answer each complete frame in order, until the peer closes, the idle
        timeout passes or the listener stops (a frame half received is finished first).
        Returns why it ended."""
        sock = connection.sock
        timeout = self.options.idle_timeout
        sock.settimeout(timeout)  # also bounds sending to a peer that never reads its ACKs
        while True:
            connection.idle = not decoder.pending
            if self._closing and connection.idle:  # after `idle`: see shutdown()
                return "listener stopping"
            try:
                chunk = sock.recv(READ_SIZE)
            except TimeoutError:
                return f"idle for {timeout:g} s"
            connection.idle = False
            if not chunk:
                return "listener stopping" if connection.stopped else "closed by the peer"
            for event in decoder.feed(chunk):
                answer = self._answer(event, connection)
                if answer.data is not None:
                    sock.sendall(answer.data)

    def _answer(self, event: mllp.Event, connection: _Connection) -> Answer:
        if isinstance(event, bytes):
            announce = self.announcer.announce if self.announcer is not None else None
            assert self._storing is not None
            with self._storing:
                answer = receive(event, connection.peer, announce)
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


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "?")


def _no_delay(sock: socket.socket) -> None:
    """Nagle off: an ACK goes out at once, not ~40 ms later (docs NOTES, DICOM)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
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
    listener = Listener(host, port, options or Options.from_settings())
    listener.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    if ready is not None:
        ready(*listener.address)
    while not stop.wait(0.5):  # a timed wait lets the signal handlers run
        pass
    logger.info("HL7 listener stopping: finishing messages in flight")
    listener.shutdown()


class Background:
    """A listener serving from its own threads (tests, embedding)."""

    def __init__(
        self,
        host: str,
        port: int,
        options: Options | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self.listener = Listener(host, port, options or Options.from_settings(), announcer)
        self.listener.start()  # bound here, so that a port in use raises here

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Shut down gracefully (see `Listener.shutdown`)."""
        self.listener.shutdown(grace)
