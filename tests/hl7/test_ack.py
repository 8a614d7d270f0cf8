"""ris.hl7.ack: control ids and escaping, the parts of every ACK we build."""

from __future__ import annotations

import os

from ris.hl7 import ack, parse


def test_control_ids_are_twenty_characters_and_differ_in_a_forked_worker():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a Celery prefork child, say: must not repeat its parent's ids
        os.write(write, ack.control_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = {ack.control_id() for _ in range(1000)}
    assert len(parent) == 1000 and len(child) == 20
    assert all(len(control_id) == 20 for control_id in parent)
    assert child not in parent


def test_escape_leaves_plain_text_alone_and_escapes_the_message_s_own_delimiters():
    header = parse.parse(b"MSH#!@$%#HIS#HOSP#RADPACS#NORTH#20261201##ADT!A01#1#P#2.5.1").header
    assert ack.escape("Smith-Jones, Anna", header) == "Smith-Jones, Anna"
    assert ack.escape("a#b!c@d$e%f|g^h", header) == "a$F$b$S$c$R$d$E$e$T$f|g^h"
    assert ack.escape("line\r\nbreak\x01", None) == "line\\.br\\break\\X01\\"
