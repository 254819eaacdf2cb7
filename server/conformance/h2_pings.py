#!/usr/bin/env python3
"""A raw HTTP/2 client that pings a gRPC server and prints what the server answers.

Used by keepalive.sh against etcd and keel alike, with identical output required. It
speaks just enough HTTP/2 with hand-written frames (no library, so nothing it does is
hidden): the client preface and an empty SETTINGS, a SETTINGS ACK for the server's, then
optionally one open gRPC stream (a Watch call whose request never comes, so the server
keeps the stream open without sending a message), then PINGs --interval apart, each
waiting for its ACK. It prints one line per ping answered and, if the server gives up on
the connection, the GOAWAY (code, debug data, last stream ID) and whether the socket then
closed. Frames of other kinds (SETTINGS, WINDOW_UPDATE, response HEADERS) are not printed:
servers differ in them without any client noticing.

Usage: h2_pings.py (--tcp HOST:PORT | --unix PATH) [--tls CA_FILE] [--stream]
                   --pings N --interval SECONDS
"""

import argparse
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
ACK, END_HEADERS = 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK: a literal header field without indexing, new name, no Huffman coding."""
    out = b"\x00"
    for s in (name, value):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self, deadline):
        """The next frame as (kind, flags, stream, payload); None at end of stream;
        raises TimeoutError when nothing whole came by `deadline`."""
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    kind, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9 : 9 + length]
                    self.buf = self.buf[9 + length :]
                    return kind, flags, stream, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def answer(self, f):
        """Answers what the protocol requires of a client: SETTINGS and PING ACKs."""
        kind, flags, _, payload = f
        if kind == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))


def goaway_line(payload):
    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
    code = int.from_bytes(payload[4:8], "big")
    return f"GOAWAY code=0x{code:x} debug={payload[8:].decode(errors='replace')!r} last_stream={last}"


def wait_closed(conn):
    deadline = time.monotonic() + 3
    try:
        while True:
            f = conn.read_frame(deadline)
            if f is None:
                return "connection closed"
            if f[0] == GOAWAY:
                print(goaway_line(f[3]))
    except TimeoutError:
        return "connection still open 3s after GOAWAY"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp")
    p.add_argument("--unix")
    p.add_argument("--tls", metavar="CA_FILE")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--pings", type=int, required=True)
    p.add_argument("--interval", type=float, required=True)
    a = p.parse_args()
    if a.unix:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(a.unix)
        authority = b"localhost"
    else:
        host, port = a.tcp.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=5)
        authority = a.tcp.encode()
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.tls)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=a.tcp.rsplit(":", 1)[0] if a.tcp else "localhost")
    conn = Conn(sock)
    conn.send(PREFACE + frame(SETTINGS, 0, 0))
    if a.stream:
        block = b"".join(
            literal(n, v)
            for n, v in [
                (b":method", b"POST"),
                (b":scheme", b"https" if a.tls else b"http"),
                (b":path", b"/etcdserverpb.Watch/Watch"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ]
        )
        conn.send(frame(HEADERS, END_HEADERS, 1, block))
    print(f"{'one open stream' if a.stream else 'no stream'}, {a.pings} pings {a.interval}s apart")
    for n in range(1, a.pings + 1):
        data = struct.pack(">Q", 0x6B65656C00000000 + n)
        conn.send(frame(PING, 0, 0, data))
        if not until_ack(conn, n, data):
            return
        # Between pings (and for a while after the last) whatever the server sends is
        # read: a GOAWAY can follow the ACK in a later segment.
        if not listen(conn, n, time.monotonic() + (a.interval if n < a.pings else 0.5)):
            return
    print("connection kept")


def until_ack(conn, n, data):
    """Reads up to ping n's ACK; False (after printing why) when the connection ended."""
    deadline = time.monotonic() + 3
    try:
        while True:
            f = conn.read_frame(deadline)
            if f is None:
                print(f"ping {n}: connection closed without an answer")
                return False
            kind, flags, stream, payload = f
            if kind == PING and flags & ACK and payload == data:
                print(f"ping {n}: ACK")
                return True
            if kind == GOAWAY:
                print(f"ping {n}: {goaway_line(payload)}")
                print(wait_closed(conn))
                return False
            if kind == RST_STREAM:
                print(f"ping {n}: RST_STREAM on stream {stream}")
            conn.answer(f)
    except TimeoutError:
        print(f"ping {n}: no answer in 3s")
        return False


def listen(conn, n, deadline):
    """Reads until `deadline`; False (after printing why) when the connection ended."""
    try:
        while True:
            f = conn.read_frame(deadline)
            if f is None:
                print(f"after ping {n}: connection closed")
                return False
            kind, _, stream, payload = f
            if kind == GOAWAY:
                print(f"after ping {n}: {goaway_line(payload)}")
                print(wait_closed(conn))
                return False
            if kind == RST_STREAM:
                print(f"after ping {n}: RST_STREAM on stream {stream}")
            conn.answer(f)
    except TimeoutError:
        return True

if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError) as e:
        print(f"connection reset: {e}")
    sys.stdout.flush()
