"""Offline tests of server.py and js-kernel.cjs over HTTP: python3 -m unittest discover guest/code-interpreter"""

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


def create_context(language, cwd):
    status, reason, data = call('POST', '/contexts', {'language': language, 'cwd': cwd})
    if status != 200:
        raise AssertionError(f'{status} {reason}: {data!r}')
    return json.loads(data)


def hang_up_during(code, context_id):
    """Sends an execution of `code` and closes the connection once it runs, as the SDK's timeout does."""
    s = socket.create_connection(('127.0.0.1', PORT))
    body = json.dumps({'code': code, 'context_id': context_id}).encode()
    s.sendall(b'POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body))
    s.recv(100)  # the head: the cell runs
    s.close()


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
            ctx = create_context('python', cwd)
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
        status, reason, _ = call('POST', '/contexts', {'language': 'r'})
        self.assertEqual(status, 400)
        self.assertIn("language 'r' is not supported", reason)
        status, reason, _ = call('POST', '/execute', {'code': '1', 'language': 'typescript'})
        self.assertEqual(status, 400)
        self.assertIn('no TypeScript compiler', reason)
        self.assertEqual(call('POST', '/execute', {'code': 1})[0], 400)
        self.assertEqual(call('POST', '/contexts', {'cwd': '/nonexistent/dir'})[0], 400)

    def test_client_gone_interrupts(self):
        with tempfile.TemporaryDirectory() as cwd:
            ctx = create_context('python', cwd)
            hang_up_during('import time; time.sleep(120)', ctx['id'])
            started = time.monotonic()
            # The context takes one cell at a time: this one runs once the sleep was interrupted, long before 120 s.
            self.assertEqual(results(execute('2 + 2', context_id=ctx['id'])), ['4'])
            self.assertLess(time.monotonic() - started, 60)


    def test_warm_up_leaves_nothing(self):
        def executions(events):
            return next(e['execution_count'] for e in events if e['type'] == 'number_of_executions')

        before = executions(execute("'marker'"))  # `_` is now 'marker'
        status, _, _ = call('POST', '/warm-up')
        self.assertEqual(status, 204)
        events = execute('_')
        self.assertEqual(results(events), ['marker'], 'the warm-up kept no value')
        self.assertEqual(executions(events), before + 1, 'the warm-up counted no execution')
        self.assertEqual([e for e in events if e['type'] in ('stdout', 'stderr')], [], 'its output went nowhere')


class JavaScriptTest(unittest.TestCase):
    """js-kernel.cjs through the server (needs `node` on PATH, as the image has)."""

    def js(self, code, **extra):
        return execute(code, language='js', **extra)

    def test_values_and_state(self):
        self.assertEqual(results(self.js('1 + 1')), ['2'])
        self.assertEqual(results(self.js('let kept = 41')), [])
        self.assertEqual(results(self.js('kept + 1')), ['42'])
        self.assertEqual(results(execute('kept', language='javascript')), ['41'])  # 'js' and 'javascript' share the default context
        self.assertEqual(results(self.js("'text'")), ['text'])
        self.assertEqual(results(self.js('({a: [1, 2]})')), ['{ a: [ 1, 2 ] }'])
        self.assertEqual(results(self.js('function f() { return 7 }')), [])
        self.assertEqual(results(self.js('f()')), ['7'])

    def test_top_level_await(self):
        self.assertEqual(results(self.js('async function m() { return "hi" }\nawait m()')), ['hi'])
        self.js('const later = await Promise.resolve(5)')
        self.assertEqual(results(self.js('later * 2')), ['10'])
        self.assertEqual(results(self.js('(await import("node:path")).sep')), ['/'])

    def test_output_lines(self):
        events = self.js('console.log("hello"); console.error("err"); process.stdout.write("a")')
        out = [(e['type'], e['text']) for e in events if e['type'] in ('stdout', 'stderr')]
        self.assertEqual(out, [('stdout', 'hello\n'), ('stderr', 'err\n'), ('stdout', 'a')])

    def test_errors(self):
        (err,) = [e for e in self.js('null.x') if e['type'] == 'error']
        self.assertEqual(err['name'], 'TypeError')
        self.assertIn('null', err['value'])
        self.assertNotIn('js-kernel', err['traceback'])
        (syn,) = [e for e in self.js('foo(') if e['type'] == 'error']
        self.assertEqual(syn['name'], 'SyntaxError')
        (thrown,) = [e for e in self.js('throw 5') if e['type'] == 'error']
        self.assertEqual(thrown['value'], 'Uncaught 5')
        self.assertEqual(results(self.js('1 + 2')), ['3'])  # the kernel lives on

    def test_env_vars(self):
        self.assertEqual(results(self.js('process.env.FROM_CREATE')), ['yes'])
        self.assertEqual(results(self.js('process.env.OVERRIDDEN', env_vars={'OVERRIDDEN': 'mine'})), ['mine'])
        self.assertEqual(results(self.js('process.env.OVERRIDDEN')), ['global'])

    def test_context_and_restart(self):
        with tempfile.TemporaryDirectory() as cwd:
            ctx = create_context('js', cwd)
            self.assertEqual((ctx['language'], ctx['cwd']), ('javascript', cwd))
            self.assertEqual(results(execute('var own = 1; process.cwd()', context_id=ctx['id'])), [cwd])
            self.assertEqual(results(self.js('typeof own')), ['undefined'])
            self.assertEqual(call('POST', f"/contexts/{ctx['id']}/restart")[0], 204)
            self.assertEqual(results(execute('typeof own', context_id=ctx['id'])), ['undefined'])
            self.assertEqual(call('DELETE', f"/contexts/{ctx['id']}")[0], 204)

    def test_client_gone_interrupts(self):
        for code in ('while (true) {}', 'await new Promise(() => {})'):
            with tempfile.TemporaryDirectory() as cwd:
                ctx = create_context('javascript', cwd)
                hang_up_during(code, ctx['id'])
                self.assertEqual(results(execute('2 + 2', context_id=ctx['id'])), ['4'], code)
                call('DELETE', f"/contexts/{ctx['id']}")


if __name__ == '__main__':
    unittest.main()
