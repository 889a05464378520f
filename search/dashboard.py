"""``hps dashboard``: optuna-dashboard on a study storage, with the trials' artifact store wired in.

The server listens on localhost by default (a dashboard can edit notes and delete studies, so exposing it is
an explicit ``--host 0.0.0.0``). It opens the storage the way the sweeper does (same SQLite busy timeout, so
reading while workers write does not fail with "database is locked"), and passes the artifact folder the
trials upload to, so each trial's page shows its learning curve, confusion matrix and config.
"""

from __future__ import annotations

import errno
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard

from hps.search.artifacts import artifact_store
from hps.search.errors import ConfigError
from hps.search.progress import console
from hps.search.storage import display_url, open_storage

MAX_PORT = 65535


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C does not wait for open browser connections


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise here
        pass


def serve(url: str, host: str, port: int, artifact_dir: Path) -> None:
    """Serve the dashboard until Ctrl-C. Refuses a port out of range or in use, or a bad storage, in one line.

    Port 0 lets the system choose a free port; the line printed at start names it.
    """
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"--port is {port}; allowed: 0..{MAX_PORT} (0: any free port)")
    storage = open_storage(url, create=False)
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store(artifact_dir))
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    console.print(
        f"optuna-dashboard on [bold]http://{host}:{server.server_port}/dashboard[/] "
        f"(storage {display_url(url)}, artifacts {artifact_dir}); Ctrl-C stops it",
        highlight=False,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
