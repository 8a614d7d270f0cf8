# ruff: noqa: S108
"""The floor under RadPACS's C-STORE: a pynetdicom SCP that only writes and fsyncs.

    .venv/bin/python bench/minimal_scp.py PORT [--out DIR] [--polling]

Accepts every storage SOP class (uncompressed syntaxes), writes each received
dataset to DIR and fsyncs it, nothing else: no parse, no index. Push with dcmtk
(`TCP_NODELAY=1 storescu -aec RADPACS 127.0.0.1 PORT files...`) and read the
process's CPU from /proc/PID/stat: what is left is pynetdicom's own cost plus the
kernel's. By default it runs RadPACS's event-driven association loops
(pacs/dimse/reactor.py); --polling keeps pynetdicom's 1 ms polling.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--out", type=Path, default=Path("/tmp/minimal-scp"))
    parser.add_argument("--polling", action="store_true")
    args = parser.parse_args()
    if not args.polling:
        from pacs.dimse import reactor

        reactor.install()
    args.out.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count()

    def nagle_off(event: evt.Event) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def store(event: evt.Event) -> int:
        fd = os.open(args.out / f"{next(numbers)}.dcm", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, event.request.DataSet.getvalue())
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0x0000

    ae = AE(ae_title="RADPACS")
    ae.maximum_pdu_size = 262144
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(
            context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
    handlers = [(evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, nagle_off)]
    ae.start_server(("127.0.0.1", args.port), block=True, evt_handlers=handlers)


if __name__ == "__main__":
    main()
