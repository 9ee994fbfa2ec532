"""Offline tests of server.py over HTTP: python3 -m unittest discover guest/code-interpreter"""

import http.client
import json
import os
import socket
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENVS = {'FROM_CREATE': 'yes', 'OVERRIDDEN': 'global'}


class Envs(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps(ENVS).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


envs_port = start(ThreadingHTTPServer(('127.0.0.1', 0), Envs))
os.environ['CELLA_ENVS_URL'] = f'http://127.0.0.1:{envs_port}/envs'
import server  # noqa: E402 - reads CELLA_ENVS_URL

server.Handler.state = server.State()
httpd = ThreadingHTTPServer(('127.0.0.1', 0), server.Handler)
httpd.daemon_threads = True
PORT = start(httpd)


def call(method, path, body=None):
    c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=30)
    c.request(method, path, body=None if body is None else json.dumps(body), headers={'Content-Type': 'application/json'})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.reason, data


def execute(code, **extra):
    status, reason, data = call('POST', '/execute', {'code': code, **extra})
    if status != 200:
        raise AssertionError(f'{status} {reason}: {data!r}')
    return [json.loads(line) for line in data.decode().splitlines()]


def results(events):
    return [e['text'] for e in events if e['type'] == 'result']


class ServerTest(unittest.TestCase):
    def test_last_expression_and_end(self):
        events = execute('x = 1; x')
        self.assertEqual(results(events), ['1'])
        self.assertEqual(events[-1], {'type': 'end_of_execution'})
        self.assertEqual(events[-2]['type'], 'number_of_executions')
        self.assertEqual(results(execute("'text'")), ['text'])
        self.assertEqual(results(execute('None')), [])

    def test_state_persists(self):
        execute('counter = 41')
        self.assertEqual(results(execute('counter + 1')), ['42'])

    def test_stdout_and_stderr_lines(self):
        events = execute('import sys\nprint("hello")\nprint("err", file=sys.stderr)\nprint("a", end="")')
        out = [(e['type'], e['text']) for e in events if e['type'] in ('stdout', 'stderr')]
        self.assertEqual(out, [('stdout', 'hello\n'), ('stderr', 'err\n'), ('stdout', 'a')])

    def test_error(self):
        (err,) = [e for e in execute('1 / 0') if e['type'] == 'error']
        self.assertEqual(err['name'], 'ZeroDivisionError')
        self.assertEqual(err['value'], 'division by zero')
        self.assertIn('<cell>', err['traceback'])
        self.assertNotIn('run_cell', err['traceback'])
        (syn,) = [e for e in execute('def (') if e['type'] == 'error']
        self.assertEqual(syn['name'], 'SyntaxError')

    def test_env_vars(self):
        get = "import os; os.getenv('OVERRIDDEN')"
        self.assertEqual(results(execute("import os; os.getenv('FROM_CREATE')")), ['yes'])
        self.assertEqual(results(execute(get, env_vars={'OVERRIDDEN': 'mine'})), ['mine'])
        self.assertEqual(results(execute(get)), ['global'])
        self.assertEqual(results(execute("import os; os.getenv('ONLY_ONCE', 'default')", env_vars={})), ['default'])

    def test_contexts(self):
        with tempfile.TemporaryDirectory() as cwd:
            status, _, data = call('POST', '/contexts', {'language': 'python', 'cwd': cwd})
            self.assertEqual(status, 200)
            ctx = json.loads(data)
            self.assertEqual((ctx['language'], ctx['cwd']), ('python', cwd))
            execute('v = "in context"', context_id=ctx['id'])
            self.assertEqual(results(execute('import os; v, os.getcwd()', context_id=ctx['id'])), [repr(('in context', cwd))])
            self.assertEqual([e['type'] for e in execute('v', context_id=ctx['id'])].count('result'), 1)
            self.assertEqual(results(execute("globals().get('v', 'unset')")), ['unset'])
            listed = json.loads(call('GET', '/contexts')[2])
            self.assertIn(ctx['id'], [c['id'] for c in listed])
            self.assertEqual(call('POST', f"/contexts/{ctx['id']}/restart")[0], 204)
            self.assertEqual(results(execute("globals().get('v', 'gone')", context_id=ctx['id'])), ['gone'])
            self.assertEqual(call('DELETE', f"/contexts/{ctx['id']}")[0], 204)
            self.assertEqual(call('DELETE', f"/contexts/{ctx['id']}")[0], 404)
            self.assertEqual(call('POST', '/execute', {'code': '1', 'context_id': ctx['id']})[0], 404)

    def test_bad_input(self):
        status, reason, _ = call('POST', '/contexts', {'language': 'javascript'})
        self.assertEqual(status, 400)
        self.assertIn('Python only', reason)
        self.assertEqual(call('POST', '/execute', {'code': '1', 'language': 'javascript'})[0], 400)
        self.assertEqual(call('POST', '/execute', {'code': 1})[0], 400)
        self.assertEqual(call('POST', '/contexts', {'cwd': '/nonexistent/dir'})[0], 400)

    def test_client_gone_interrupts(self):
        with tempfile.TemporaryDirectory() as cwd:
            ctx = json.loads(call('POST', '/contexts', {'cwd': cwd})[2])
            s = socket.create_connection(('127.0.0.1', PORT))
            body = json.dumps({'code': 'import time; time.sleep(120)', 'context_id': ctx['id']}).encode()
            s.sendall(b'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body))
            s.recv(100)  # the head: the cell runs
            s.close()
            started = time.monotonic()
            # The context takes one cell at a time: this one runs once the sleep was interrupted, long before 120 s.
            self.assertEqual(results(execute('2 + 2', context_id=ctx['id'])), ['4'])
            self.assertLess(time.monotonic() - started, 60)

if __name__ == '__main__':
    unittest.main()
