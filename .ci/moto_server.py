"""moto's server, with its requests handled one at a time.

moto 5.2.5 keeps Secrets Manager's state in plain dicts without a lock: a
ListSecrets iterating while another thread creates a secret fails with
HTTP 500 ("dictionary changed size during iteration"), which the tests'
parallel threads hit. Connections are still served by a thread each (so an
idle keep-alive connection blocks nobody); only moto's application runs
under one lock. Real AWS has no such limit.

Usage: python moto_server.py HOST PORT (with moto installed).
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
moto = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serialized(environ, start_response):
    with one_at_a_time:
        return list(moto(environ, start_response))


run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)
