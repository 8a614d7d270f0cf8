"""Event-driven reactor loops for pynetdicom's association threads.

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps 1 ms
whenever it has nothing to do, and the association thread sleeps 1 ms before each
look at its DIMSE queue (pynetdicom issues #120, #650; its own TODO says "make this
event based"). Every C-STORE therefore waits on both sleeps, and each idle
association wakes 2,000 times a second. Here the DUL thread waits in `select` on its
socket and on an eventfd that the association rings when it queues a PDU to send,
and the association thread waits on its DIMSE queue's condition. Same state machine,
same checks, in the same order; only the waiting changes.

`install()` replaces the two methods (and wraps the queues they wait on) for the
pinned pynetdicom version only; any other version keeps its own loops.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
from typing import Any

import pynetdicom
from pynetdicom import association, dul, evt
from pynetdicom.pdu import A_ABORT_RQ

PATCHED_VERSION = "3.0.4"
# Longest wait without an event: bounds how late timers (ARTIM, idle) and events
# queued from other threads (a closed socket) are seen.
MAX_WAIT = 0.01


class Wakeup:
    """A Linux eventfd: rung from any thread, waited on with select()."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def ring(self) -> None:
        with contextlib.suppress(OSError):  # closed: nobody waits any more
            os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.eventfd_read(self.fd)

    def __del__(self) -> None:  # closed when neither the DUL nor its queue needs it
        with contextlib.suppress(OSError):
            os.close(self.fd)


class RingingQueue(queue.Queue):
    """The DUL's to-provider queue: putting a primitive wakes the DUL thread."""

    def __init__(self, wakeup: Wakeup) -> None:
        super().__init__()
        self.wakeup = wakeup

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wakeup.ring()


class Checkpoint:
    """The association reactor's checkpoint (pynetdicom's `_reactor_checkpoint`).

    A send_*() on the association clears it so that the reactor does not take the
    reply off the DIMSE queue, then waits for `_is_paused`. pynetdicom's flag can be
    stale (set before the reactor ran again), which only its 1 ms sleeps kept
    harmless. Here `clear()` itself returns only once the reactor cannot be inside
    its queue read, and wakes the reactor so it stops at the checkpoint at once.
    """

    def __init__(self, messages: queue.Queue) -> None:
        self.messages = messages
        self._condition = threading.Condition()
        self._open = True
        self._reading = False  # the reactor is taking a message off the queue
        self.reactor_thread: threading.Thread | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._condition:
            self._open = True
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._open = False
        with self.messages.not_empty:  # an idle reactor: look at the checkpoint now
            self.messages.not_empty.notify_all()
        if threading.current_thread() is self.reactor_thread:
            return  # a handler sending on its own association: the reactor is not reading
        with self._condition:
            self._condition.wait_for(lambda: not self._reading)

    def wait(self, timeout: float | None = None) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._open, timeout)

    def take(self, dimse: Any) -> tuple[Any, Any]:
        """The reactor's read of the DIMSE queue, once the checkpoint is open."""
        with self._condition:
            self._condition.wait_for(lambda: self._open)
            self._reading = True
        try:
            return dimse.get_msg(block=False)
        finally:
            with self._condition:
                self._reading = False
                self._condition.notify_all()


_original_dul_init = dul.DULServiceProvider.__init__
_original_association_init = association.Association.__init__
# pynetdicom's own methods, as found before install() (a test compares both).
ORIGINALS = {
    (dul.DULServiceProvider, "__init__"): dul.DULServiceProvider.__init__,
    (dul.DULServiceProvider, "run_reactor"): dul.DULServiceProvider.run_reactor,
    (association.Association, "__init__"): association.Association.__init__,
    (association.Association, "_run_reactor"): association.Association._run_reactor,
}


def _dul_init(self: dul.DULServiceProvider, assoc: association.Association) -> None:
    _original_dul_init(self, assoc)
    self._wakeup = Wakeup()
    self.to_provider_queue = RingingQueue(self._wakeup)


def _association_init(self: association.Association, *args: Any, **kwargs: Any) -> None:
    _original_association_init(self, *args, **kwargs)
    checkpoint = Checkpoint(self.dimse.msg_queue)
    if not self._reactor_checkpoint.is_set():
        checkpoint.clear()
    self._reactor_checkpoint = checkpoint


def _dul_wait(self: dul.DULServiceProvider) -> None:
    """Until the socket has data, a primitive is queued to send, or MAX_WAIT."""
    watched: list[Any] = [self._wakeup.fd]
    transport = self.socket
    if transport is not None and transport.socket is not None and transport._is_connected:
        watched.append(transport.socket)
    try:
        ready, _, _ = select.select(watched, [], [], MAX_WAIT)
    except (OSError, ValueError):  # the socket closed meanwhile: the next check sees it
        return
    if self._wakeup.fd in ready:
        self._wakeup.drain()


def dul_run_reactor(self: dul.DULServiceProvider) -> None:
    """pynetdicom's DULServiceProvider.run_reactor, waiting in select() when idle."""
    self._idle_timer.start()
    idle = False
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
            idle = True
        if idle:
            _dul_wait(self)
        if self._kill_thread:
            break
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        try:
            if self._process_recv_primitive():
                pass
            elif self._is_transport_event():
                self._idle_timer.restart()
        except Exception as exc:
            dul.LOGGER.error("Exception in DUL.run(), aborting association")
            dul.LOGGER.exception(exc)
            abort_pdu = A_ABORT_RQ()
            abort_pdu.source = 0x02
            abort_pdu.reason_diagnostic = 0x00
            self.socket.send(abort_pdu.encode())
            self.assoc.is_aborted = True
            self.assoc.is_established = False
            self.assoc._kill = True
            self._kill_thread = True
            return
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        self.state_machine.do_action(event)
        idle = False


def association_run_reactor(self: association.Association) -> None:
    """pynetdicom's Association._run_reactor, waiting on the DIMSE queue when idle."""
    messages = self.dimse.msg_queue
    checkpoint: Checkpoint = self._reactor_checkpoint
    checkpoint.reactor_thread = threading.current_thread()
    while not self._kill:
        # Paused whenever it is not reading the queue (Checkpoint.clear() waits for that).
        self._is_paused = True
        with messages.not_empty:
            if not messages._qsize() and checkpoint.is_set():
                messages.not_empty.wait(MAX_WAIT)

        context_id, msg = checkpoint.take(self.dimse)
        if msg:
            self._serve_request(msg, context_id)
            self._is_paused = True

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            association.LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            association.LOGGER.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            association.LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def install() -> bool:
    """Use the event-driven loops in this process; False if pynetdicom is not the
    version they were written against, or the system has no eventfd (Linux only)."""
    if pynetdicom.__version__ != PATCHED_VERSION or not hasattr(os, "eventfd"):
        return False  # another pynetdicom, or not Linux (no eventfd): its own loops stay
    dul.DULServiceProvider.__init__ = _dul_init
    dul.DULServiceProvider.run_reactor = dul_run_reactor
    association.Association.__init__ = _association_init
    association.Association._run_reactor = association_run_reactor
    return True
