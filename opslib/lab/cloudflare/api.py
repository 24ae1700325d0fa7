"""A Cloudflare v4 API stand-in for the lab and the tests.

The official ``cloudflare`` SDK talks to it through ``base_url`` exactly as it
would to the real API: the same paths under ``/client/v4``, the response
envelope ``{success, errors, messages, result, result_info}``, the error codes
the real API answers with, page-number pagination, and Bearer-token auth.

The request logic is :mod:`opslib.lab.cloudflare.requests` (zones, DNS records
and their list filters, token verify); the state, the record rules and the
injected faults (429 with ``Retry-After``, 5xx, late, or committed and then failed)
are :mod:`opslib.lab.cloudflare.store`. With a state file the state survives
restarts and tests can inspect and edit it while the server runs. Tokens are
never written to the state file, never logged and never echoed.

Run as a process (what the lab does)::

    python -m opslib.lab.cloudflare.api --port 0 --state FILE --zones example.org \\
        --token-file TOKEN [--read-token-file TOKEN2]

It prints ``listening on http://127.0.0.1:PORT/client/v4`` once it accepts requests.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError
from opslib.lab.cloudflare.requests import API_PREFIX, CloudflareApi
from opslib.lab.cloudflare.store import Store

# -- the HTTP server -----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.api.handle(self.command, self.path, headers, body)
        payload = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in answer.headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: the work is done all the same

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:  # request lines only: headers (the token) are never logged
            sys.stderr.write(f"cloudflare-api: {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: CloudflareApi, *, verbose: bool) -> None:
        self.api, self.verbose = api, verbose
        self.server_name_ip = address[0]  # the loopback address itself, not a host name
        super().__init__(address, _Handler)


def _loopback(host: str) -> str:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise InputError(f"the Cloudflare stand-in listens on loopback only, not {host}")


class CloudflareStandIn:
    """The stand-in as an in-process server: ``with CloudflareStandIn(...) as cf: cf.url``.

    ``store`` is the helper API (records, put_record, change_record, inject);
    ``requests`` lists what the server answered, for tests.
    """

    def __init__(
        self,
        *,
        token: str,
        read_token: str = "",
        zones: tuple[str, ...] = ("example.org",),
        state_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        tokens = {token: "edit", **({read_token: "read"} if read_token else {})}
        self.store = Store(state_file, zones=zones)
        self.api = CloudflareApi(self.store, tokens=tokens)
        self._server = _Server((_loopback(host), port), self.api, verbose=verbose)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"CloudflareStandIn(url={self.url!r})"

    @property
    def url(self) -> str:
        return f"http://{self._server.server_name_ip}:{self._server.server_port}{API_PREFIX}"

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        return self.api.requests

    def start(self) -> CloudflareStandIn:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cloudflare-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> CloudflareStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise InputError(f"token file {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opslib.lab.cloudflare.api", description="Cloudflare v4 API stand-in"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", help="JSON state file (kept across restarts)")
    parser.add_argument("--zones", nargs="+", default=["example.org"], metavar="ZONE")
    parser.add_argument("--token-file", required=True, help="file holding the edit token")
    parser.add_argument("--read-token-file", help="file holding a token without edit permission")
    parser.add_argument("--pid-file", help="write the pid here once listening; removed at exit")
    parser.add_argument("--verbose", action="store_true", help="log request lines to stderr")
    args = parser.parse_args(argv)
    try:
        standin = CloudflareStandIn(
            token=_read_token(args.token_file),
            read_token=_read_token(args.read_token_file) if args.read_token_file else "",
            zones=tuple(args.zones),
            state_file=args.state,
            host=args.host,
            port=args.port,
            verbose=args.verbose,
        )
    except (InputError, OSError) as exc:
        print(f"cloudflare-api: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with standin:
        if args.pid_file:
            Path(args.pid_file).write_text(f"{os.getpid()}\n")
        print(f"listening on {standin.url}", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            if args.pid_file:
                Path(args.pid_file).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
