"""A throwaway HTTP server on 127.0.0.1 for the download tests: it serves the bytes put in `FileHandler.files`
by path, answers 404 for anything else, and logs every path asked for in `FileHandler.log`."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager


class FileHandler(http.server.BaseHTTPRequestHandler):
    """GET of a path in `files` answers its bytes; every other path is a 404."""

    files: dict = {}
    log: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.path.lstrip("/")
        self.log.append(path)
        if path not in self.files:
            self.send_error(404)
            return
        body = self.files[path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve():
    """Start a server with no files and an empty log; yields (base URL ending in '/', FileHandler)."""
    FileHandler.files, FileHandler.log = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", FileHandler
    finally:
        httpd.shutdown()
        httpd.server_close()
