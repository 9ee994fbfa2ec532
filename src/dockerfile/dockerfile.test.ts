import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BuildFailure } from '../contract/index.js';
import { expandWord } from './expand.js';
import { applyStep, cacheKeyOf, commandOf, emptyConfig, parseDockerfile, planSteps, resolveConfig, type ContainerConfig, type Step } from './index.js';

const FROM = 'FROM alpine:3.20\n';

/** The steps of `FROM alpine:3.20` followed by `body`. */
function stepsOf(body: string, buildArgs?: Record<string, string>, baseEnv?: Record<string, string>): Step[] {
  return parseDockerfile(FROM + body, buildArgs, baseEnv).steps;
}

/** The BuildFailure that parsing `text` throws. */
function failureOf(text: string): BuildFailure {
  try {
    parseDockerfile(text);
  } catch (err) {
    assert.ok(err instanceof BuildFailure, `expected a BuildFailure, got ${String(err)}`);
    assert.equal(err.reason, 'CONTAINER_BUILD_FAILED');
    return err;
  }
  assert.fail('parseDockerfile did not throw');
}

function config(overrides: Partial<ContainerConfig>): ContainerConfig {
  return { ...emptyConfig(), ...overrides };
}

describe('parseDockerfile', () => {
  it('parses a realistic Python app', () => {
    const text = [
      '# syntax=docker/dockerfile:1',
      'ARG PYTHON_VERSION=3.12',
      'FROM python:${PYTHON_VERSION}-slim AS app',
      'ENV PYTHONDONTWRITEBYTECODE=1 \\',
      '    PYTHONUNBUFFERED=1',
      'WORKDIR /app',
      'RUN python -m venv /opt/venv',
      'ENV PATH="/opt/venv/bin:$PATH"',
      'COPY requirements.txt .',
      'RUN pip install --no-cache-dir -r requirements.txt',
      'COPY --chown=app:app . .',
      'USER app',
      'EXPOSE 8000',
      'CMD ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]',
      '',
    ].join('\n');
    const df = parseDockerfile(text, {}, { PATH: '/usr/local/bin:/usr/bin' });
    assert.deepEqual(df.from, { image: 'python:3.12-slim', line: 3 });
    assert.deepEqual(df.steps, [
      { line: 4, text: 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1', kind: 'ENV', vars: { PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' } },
      { line: 6, text: 'WORKDIR /app', kind: 'WORKDIR', path: '/app' },
      { line: 7, text: 'RUN python -m venv /opt/venv', kind: 'RUN', argv: ['/bin/sh', '-c', 'python -m venv /opt/venv'] },
      { line: 8, text: 'ENV PATH="/opt/venv/bin:$PATH"', kind: 'ENV', vars: { PATH: '/opt/venv/bin:/usr/local/bin:/usr/bin' } },
      { line: 9, text: 'COPY requirements.txt .', kind: 'COPY', sources: ['requirements.txt'], dest: '.', extract: false },
      {
        line: 10,
        text: 'RUN pip install --no-cache-dir -r requirements.txt',
        kind: 'RUN',
        argv: ['/bin/sh', '-c', 'pip install --no-cache-dir -r requirements.txt'],
      },
      { line: 11, text: 'COPY --chown=app:app . .', kind: 'COPY', sources: ['.'], dest: '.', extract: false, chown: 'app:app' },
      { line: 12, text: 'USER app', kind: 'USER', user: 'app' },
      { line: 13, text: 'EXPOSE 8000', kind: 'EXPOSE', ports: [8000] },
      {
        line: 14,
        text: 'CMD ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]',
        kind: 'CMD',
        argv: ['gunicorn', '-b', '0.0.0.0:8000', 'app:app'],
        shellForm: false,
      },
    ]);
    const base = config({ env: { PATH: '/usr/local/bin:/usr/bin', LANG: 'C.UTF-8' }, cmd: ['python3'] });
    const final = resolveConfig(base, df.steps);
    assert.deepEqual(final, {
      env: { PATH: '/opt/venv/bin:/usr/local/bin:/usr/bin', LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
      entrypoint: [],
      cmd: ['gunicorn', '-b', '0.0.0.0:8000', 'app:app'],
      workingDir: '/app',
      user: 'app',
      exposedPorts: [8000],
      labels: {},
    });
    assert.deepEqual(commandOf(final), ['gunicorn', '-b', '0.0.0.0:8000', 'app:app']);
    const pip = planSteps(base, df).find((p) => p.step.line === 10)!;
    assert.equal(pip.env.PATH, '/opt/venv/bin:/usr/local/bin:/usr/bin');
    assert.equal(pip.workingDir, '/app');
    assert.equal(pip.user, '');
  });

  it('parses RUN, CMD and ENTRYPOINT in shell and exec form', () => {
    const steps = stepsOf(
      [
        'RUN apt-get update && \\',
        '    apt-get install -y curl',
        'RUN ["echo", "a \\"quoted\\" word", "$HOME"]',
        'RUN [ -f /etc/os-release ] && echo yes',
        'CMD python app.py --port $PORT',
        'ENTRYPOINT ["/docker-entrypoint.sh"]',
        'ENTRYPOINT exec nginx',
        'CMD []',
      ].join('\n'),
    );
    assert.deepEqual(
      steps.map((s) => ('argv' in s ? s.argv : null)),
      [
        ['/bin/sh', '-c', 'apt-get update &&     apt-get install -y curl'],
        ['echo', 'a "quoted" word', '$HOME'],
        ['/bin/sh', '-c', '[ -f /etc/os-release ] && echo yes'],
        ['/bin/sh', '-c', 'python app.py --port $PORT'],
        ['/docker-entrypoint.sh'],
        ['/bin/sh', '-c', 'exec nginx'],
        [],
      ],
    );
    assert.deepEqual(
      steps.map((s) => ('shellForm' in s ? s.shellForm : null)),
      [null, null, null, true, false, true, false],
    );
    assert.equal(steps[0]!.text, 'RUN apt-get update && apt-get install -y curl');
  });

  it('cuts long instructions in the build log text', () => {
    const [step] = stepsOf(`RUN echo ${'x'.repeat(300)}`);
    assert.equal(step!.text.length, 160);
    assert.ok(step!.text.endsWith('…'));
  });

  it('parses COPY and ADD in both forms with their flags', () => {
    const steps = stepsOf(
      [
        'COPY --chown=1000:1000 --chmod=0755 bin/run.sh lib/ /usr/local/bin/',
        'COPY ["my file.txt", "/data/"]',
        'COPY /etc/app.conf ./sub/../conf/ config/',
        'ADD rootfs.tar.gz /',
        'ADD notes.txt /notes.txt',
        'COPY --link app.py .',
      ].join('\n'),
    );
    assert.deepEqual(steps, [
      {
        line: 2,
        text: 'COPY --chown=1000:1000 --chmod=0755 bin/run.sh lib/ /usr/local/bin/',
        kind: 'COPY',
        sources: ['bin/run.sh', 'lib'],
        dest: '/usr/local/bin/',
        extract: false,
        chown: '1000:1000',
        chmod: '0755',
      },
      { line: 3, text: 'COPY ["my file.txt", "/data/"]', kind: 'COPY', sources: ['my file.txt'], dest: '/data/', extract: false },
      { line: 4, text: 'COPY /etc/app.conf ./sub/../conf/ config/', kind: 'COPY', sources: ['etc/app.conf', 'conf'], dest: 'config/', extract: false },
      { line: 5, text: 'ADD rootfs.tar.gz /', kind: 'ADD', sources: ['rootfs.tar.gz'], dest: '/', extract: true },
      { line: 6, text: 'ADD notes.txt /notes.txt', kind: 'ADD', sources: ['notes.txt'], dest: '/notes.txt', extract: false },
      { line: 7, text: 'COPY --link app.py .', kind: 'COPY', sources: ['app.py'], dest: '.', extract: false },
    ]);
  });

  it('parses ENV, ARG, LABEL, WORKDIR, USER and MAINTAINER in their forms', () => {
    const steps = stepsOf(
      [
        'ENV A=1 B="two words" C=three\\ words',
        'ENV LEGACY a value with spaces',
        'ARG WITH_DEFAULT=x',
        'ARG BARE',
        'LABEL "org.opencontainers.image.title"="My app" version=1.0',
        'WORKDIR "/srv/my app"',
        'USER 1000:1000',
        'MAINTAINER Jane Doe <jane@example.com>',
      ].join('\n'),
    );
    assert.deepEqual(
      steps.map(({ line: _line, text: _text, ...rest }) => rest),
      [
        { kind: 'ENV', vars: { A: '1', B: 'two words', C: 'three words' } },
        { kind: 'ENV', vars: { LEGACY: 'a value with spaces' } },
        { kind: 'ARG', name: 'WITH_DEFAULT', value: 'x' },
        { kind: 'ARG', name: 'BARE' },
        { kind: 'LABEL', labels: { 'org.opencontainers.image.title': 'My app', version: '1.0' } },
        { kind: 'WORKDIR', path: '/srv/my app' },
        { kind: 'USER', user: '1000:1000' },
        { kind: 'LABEL', labels: { maintainer: 'Jane Doe <jane@example.com>' } },
      ],
    );
  });
});

describe('variable substitution', () => {
  const vars: Record<string, string> = { NAME: 'cella', EMPTY: '' };
  const lookup = (name: string) => (Object.hasOwn(vars, name) ? vars[name] : undefined);

  it('expands words as Docker does', () => {
    const cases: [string, string][] = [
      ['$NAME', 'cella'],
      ['${NAME}-x', 'cella-x'],
      ['$NAME.x', 'cella.x'],
      ['$UNSET', ''],
      ['${UNSET:-fallback}', 'fallback'],
      ['${EMPTY:-fallback}', 'fallback'],
      ['${EMPTY-fallback}', ''],
      ['${NAME:-fallback}', 'cella'],
      ['${NAME:+alt}', 'alt'],
      ['${EMPTY:+alt}', ''],
      ['${EMPTY+alt}', 'alt'],
      ['${UNSET:+alt}', ''],
      ['${UNSET:-${NAME}s}', 'cellas'],
      ['\\$NAME', '$NAME'],
      ["'$NAME'", '$NAME'],
      ['"$NAME and \\"q\\""', 'cella and "q"'],
      ['"a\\b"', 'a\\b'],
      ['a$', 'a$'],
      ['$1x', 'x'],
      ['100$ ok', '100$ ok'],
    ];
    for (const [word, expected] of cases) assert.equal(expandWord(word, lookup), expected, word);
  });

  it('refuses malformed substitutions', () => {
    for (const word of ['${NAME', '${NAME#prefix}', '${}', '"open', "'open"]) {
      assert.throws(() => expandWord(word, lookup), word);
    }
  });

  it('uses only ARGs declared before FROM in FROM, and a bare ARG after FROM takes their value', () => {
    const df = parseDockerfile(['ARG TAG=3.20', 'ARG REPO=alpine', 'FROM ${REPO}:${TAG}', 'ARG TAG', 'RUN true', 'ENV V=$TAG R=${REPO:-none}'].join('\n'));
    assert.deepEqual(df.from, { image: 'alpine:3.20', line: 3 });
    assert.deepEqual(df.steps[2], { line: 6, text: 'ENV V=$TAG R=${REPO:-none}', kind: 'ENV', vars: { V: '3.20', R: 'none' } });
  });

  it('substitutes in ENV, COPY, WORKDIR, USER, EXPOSE, LABEL and ARG defaults but not in RUN, CMD or ENTRYPOINT', () => {
    const steps = stepsOf(
      [
        'ARG APP=web',
        'ARG HOME_DIR=/srv/$APP',
        'ENV PORT=8080 OWNER=$APP',
        'COPY --chown=${OWNER} $APP/ $HOME_DIR/',
        'WORKDIR $HOME_DIR',
        'USER $OWNER',
        'EXPOSE $PORT',
        'LABEL app=$APP',
        'RUN echo $APP',
        'CMD ["echo", "$APP"]',
        'ENTRYPOINT echo $APP',
      ].join('\n'),
    );
    assert.deepEqual(
      steps.map(({ line: _line, text: _text, ...rest }) => rest),
      [
        { kind: 'ARG', name: 'APP', value: 'web' },
        { kind: 'ARG', name: 'HOME_DIR', value: '/srv/web' },
        { kind: 'ENV', vars: { PORT: '8080', OWNER: 'web' } },
        { kind: 'COPY', sources: ['web'], dest: '/srv/web/', extract: false, chown: 'web' },
        { kind: 'WORKDIR', path: '/srv/web' },
        { kind: 'USER', user: 'web' },
        { kind: 'EXPOSE', ports: [8080] },
        { kind: 'LABEL', labels: { app: 'web' } },
        { kind: 'RUN', argv: ['/bin/sh', '-c', 'echo $APP'] },
        { kind: 'CMD', argv: ['echo', '$APP'], shellForm: false },
        { kind: 'ENTRYPOINT', argv: ['/bin/sh', '-c', 'echo $APP'], shellForm: true },
      ],
    );
  });

  it('lets the values of one ENV see only what came before it, and ENV win over ARG', () => {
    const steps = stepsOf(['ENV X=old', 'ENV X=new Y=$X', 'ARG X=fromarg', 'ENV Z=$X'].join('\n'));
    assert.deepEqual(steps[1], { line: 3, text: 'ENV X=new Y=$X', kind: 'ENV', vars: { X: 'new', Y: 'old' } });
    assert.deepEqual(steps[3], { line: 5, text: 'ENV Z=$X', kind: 'ENV', vars: { Z: 'new' } });
  });

  it('uses the base image env below ENV and above ARG', () => {
    const steps = stepsOf(['ARG HOME=/arg', 'ENV A=$HOME:$LANG', 'ENV LANG=en', 'ENV B=$LANG'].join('\n'), {}, { HOME: '/root', LANG: 'C' });
    assert.deepEqual(steps[1], { line: 3, text: 'ENV A=$HOME:$LANG', kind: 'ENV', vars: { A: '/root:C' } });
    assert.deepEqual(steps[3], { line: 5, text: 'ENV B=$LANG', kind: 'ENV', vars: { B: 'en' } });
  });

  it('honours the escape directive', () => {
    const df = parseDockerfile(['# escape=`', 'FROM alpine', 'ENV WIN=C:\\app PRICE=`$5', 'RUN echo a `', '  b'].join('\n'));
    assert.deepEqual(df.steps[0], { line: 3, text: 'ENV WIN=C:\\app PRICE=`$5', kind: 'ENV', vars: { WIN: 'C:\\app', PRICE: '$5' } });
    assert.deepEqual(df.steps[1], { line: 4, text: 'RUN echo a b', kind: 'RUN', argv: ['/bin/sh', '-c', 'echo a   b'] });
  });
});

describe('build arguments', () => {
  it('override ARG defaults before and after FROM, and fill bare ARGs', () => {
    const text = ['ARG TAG=3.19', 'FROM alpine:$TAG', 'ARG MODE=dev', 'ARG TOKEN', 'ARG KEEP=default'].join('\n');
    const df = parseDockerfile(text, { TAG: '3.20', MODE: 'prod', TOKEN: 't0k', UNUSED: 'x' });
    assert.equal(df.from.image, 'alpine:3.20');
    assert.deepEqual(
      df.steps.map((s) => (s.kind === 'ARG' ? [s.name, s.value] : null)),
      [
        ['MODE', 'prod'],
        ['TOKEN', 't0k'],
        ['KEEP', 'default'],
      ],
    );
  });
});

describe('resolveConfig', () => {
  it('resolves relative WORKDIRs against the one in force, starting from the base', () => {
    const steps = stepsOf(['WORKDIR app', 'WORKDIR ../lib/', 'WORKDIR /opt', 'WORKDIR x/y'].join('\n'));
    const seen: string[] = [];
    let current = config({ workingDir: '/srv' });
    for (const step of steps) {
      current = applyStep(current, step);
      seen.push(current.workingDir);
    }
    assert.deepEqual(seen, ['/srv/app', '/srv/lib', '/opt', '/opt/x/y']);
    assert.equal(resolveConfig(emptyConfig(), stepsOf('WORKDIR app')).workingDir, '/app');
  });

  it('clears an inherited CMD on ENTRYPOINT but keeps a CMD from the same Dockerfile', () => {
    const base = config({ entrypoint: ['/init'], cmd: ['bash'] });
    const entrypointOnly = resolveConfig(base, stepsOf('ENTRYPOINT ["python", "-m", "app"]'));
    assert.deepEqual(commandOf(entrypointOnly), ['python', '-m', 'app']);
    assert.deepEqual(entrypointOnly.cmd, []);

    const cmdThenEntrypoint = resolveConfig(base, stepsOf('CMD ["--port", "80"]\nENTRYPOINT ["server"]'));
    assert.deepEqual(commandOf(cmdThenEntrypoint), ['server', '--port', '80']);

    const entrypointThenCmd = resolveConfig(base, stepsOf('ENTRYPOINT ["server"]\nCMD ["--port", "81"]'));
    assert.deepEqual(commandOf(entrypointThenCmd), ['server', '--port', '81']);

    const cmdOnly = resolveConfig(base, stepsOf('CMD echo hi'));
    assert.deepEqual(commandOf(cmdOnly), ['/init', '/bin/sh', '-c', 'echo hi']);
  });

  it('merges ENV and LABEL, dedups EXPOSE, and is pure', () => {
    const base = config({ env: { A: 'base', B: 'base' }, labels: { l: 'base' }, exposedPorts: [80] });
    const snapshot = structuredClone(base);
    const final = resolveConfig(base, stepsOf('ENV B=mine C=mine\nLABEL l=mine m=mine\nEXPOSE 80 443\nEXPOSE 443/tcp\nRUN true\nARG X=1'));
    assert.deepEqual(final.env, { A: 'base', B: 'mine', C: 'mine' });
    assert.deepEqual(final.labels, { l: 'mine', m: 'mine' });
    assert.deepEqual(final.exposedPorts, [80, 443]);
    assert.deepEqual(base, snapshot);
  });
});

describe('EXPOSE', () => {
  it('accepts bare and /tcp ports, drops /udp, expands ranges', () => {
    const [step] = stepsOf('EXPOSE 8080 9090/tcp 53/udp 8000-8002 7000-7001/TCP');
    assert.deepEqual(step, {
      line: 2,
      text: 'EXPOSE 8080 9090/tcp 53/udp 8000-8002 7000-7001/TCP',
      kind: 'EXPOSE',
      ports: [8080, 9090, 8000, 8001, 8002, 7000, 7001],
    });
  });

  it('refuses bad ports and huge ranges', () => {
    for (const ports of ['http', '0', '70000', '9000-8000', '1-5000']) {
      const err = failureOf(`${FROM}EXPOSE ${ports}`);
      assert.match(err.message, /^Dockerfile line 2: EXPOSE /, ports);
    }
  });
});

describe('unsupported Dockerfiles', () => {
  const cases: [string, string, number, string][] = [
    ['SHELL', 'SHELL ["/bin/bash", "-c"]', 3, 'SHELL'],
    ['HEALTHCHECK', 'HEALTHCHECK CMD curl -f http://localhost/', 3, 'HEALTHCHECK'],
    ['ONBUILD', 'ONBUILD RUN make', 3, 'ONBUILD'],
    ['STOPSIGNAL', 'STOPSIGNAL SIGTERM', 3, 'STOPSIGNAL'],
    ['VOLUME', 'VOLUME /data', 3, 'VOLUME'],
    ['a second FROM', 'FROM debian', 3, 'FROM'],
    ['COPY --from', 'COPY --from=builder /out /app', 3, 'COPY'],
    ['ADD of a URL', 'ADD https://example.com/x.tar.gz /x/', 3, 'ADD'],
    ['ADD of a git repository', 'ADD git@github.com:a/b.git /src', 3, 'ADD'],
    ['ADD mixing archives and files', 'ADD a.tar b.txt /x/', 3, 'ADD'],
    ['a RUN heredoc', 'RUN <<EOF\necho hi\nEOF', 3, 'RUN'],
    ['a COPY heredoc', 'COPY <<EOF /x\nhi\nEOF', 3, 'COPY'],
    ['RUN --mount', 'RUN --mount=type=cache,target=/root/.cache pip install x', 3, 'RUN'],
    ['a malformed exec form', 'CMD ["python", app.py]', 3, 'CMD'],
    ['an unterminated exec form', 'ENTRYPOINT ["python"', 3, 'ENTRYPOINT'],
    ['an unknown instruction', 'COPPY a b', 3, 'COPPY'],
    ['ENV without a value', 'ENV JUST_A_NAME', 3, 'ENV'],
    ['a bad substitution', 'WORKDIR ${DIR', 3, 'WORKDIR'],
    ['a source outside the context', 'COPY ../secret /x', 3, 'COPY'],
    ['several sources into a file', 'COPY a b /dest', 3, 'COPY'],
    ['a symbolic chmod', 'COPY --chmod=u+x a /a', 3, 'COPY'],
    ['COPY without a destination', 'COPY onlyone', 3, 'COPY'],
    ['RUN without a command', 'RUN', 3, 'RUN'],
  ];
  for (const [name, instruction, line, keyword] of cases) {
    it(`refuses ${name}, naming line and instruction`, () => {
      const err = failureOf(`FROM alpine\n# a comment\n${instruction}\n`);
      assert.match(err.message, new RegExp(`^Dockerfile line ${line}: ${keyword} `));
    });
  }

  it('refuses instructions before FROM other than ARG', () => {
    assert.match(failureOf('ARG X=1\nRUN echo\nFROM alpine').message, /^Dockerfile line 2: RUN /);
  });

  it('refuses an empty Dockerfile and one without FROM', () => {
    failureOf('');
    failureOf('# only a comment\n\n');
    assert.doesNotThrow(() => parseDockerfile('FROM scratch'));
    assert.match(failureOf('ARG X=1\n').message, /FROM/);
  });

  it('reports every bad line at once', () => {
    const err = failureOf('FROM alpine\nSHELL ["bash"]\nRUN ok\nVOLUME /x\n');
    assert.deepEqual(
      err.message.split('\n').map((l) => l.replace(/: [A-Z]+ .*/, '')),
      ['Dockerfile line 2', 'Dockerfile line 4'],
    );
  });
});

describe('planSteps', () => {
  it('gives each step the env, working directory and user in force when it runs', () => {
    const df = parseDockerfile(
      [
        'FROM python:3.12',
        'ARG VERSION=1.0',
        'RUN echo $VERSION',
        'ENV VERSION=2.0 APP_HOME=/app',
        'WORKDIR $APP_HOME',
        'USER app',
        'RUN make',
        'WORKDIR src',
        'COPY . .',
      ].join('\n'),
    );
    const base = config({ env: { PATH: '/usr/bin' }, workingDir: '/root' });
    const planned = planSteps(base, df);
    assert.deepEqual(
      planned.map((p) => [p.step.kind, p.env, p.workingDir, p.user]),
      [
        ['ARG', { PATH: '/usr/bin' }, '/root', ''],
        ['RUN', { PATH: '/usr/bin', VERSION: '1.0' }, '/root', ''],
        ['ENV', { PATH: '/usr/bin', VERSION: '1.0' }, '/root', ''],
        ['WORKDIR', { PATH: '/usr/bin', VERSION: '2.0', APP_HOME: '/app' }, '/root', ''],
        ['USER', { PATH: '/usr/bin', VERSION: '2.0', APP_HOME: '/app' }, '/app', ''],
        ['RUN', { PATH: '/usr/bin', VERSION: '2.0', APP_HOME: '/app' }, '/app', 'app'],
        ['WORKDIR', { PATH: '/usr/bin', VERSION: '2.0', APP_HOME: '/app' }, '/app', 'app'],
        ['COPY', { PATH: '/usr/bin', VERSION: '2.0', APP_HOME: '/app' }, '/app/src', 'app'],
      ],
    );
  });
});

describe('cacheKeyOf', () => {
  it('is the same for the same step anywhere in the file, and differs when a field changes', () => {
    const [a, b] = stepsOf('RUN pip install -r requirements.txt\nENV X=1\nRUN pip install -r requirements.txt').filter((s) => s.kind === 'RUN');
    assert.notEqual(a!.line, b!.line);
    assert.equal(cacheKeyOf(a!), cacheKeyOf(b!));
    assert.notEqual(cacheKeyOf(a!), cacheKeyOf(stepsOf('RUN pip install -r requirements-dev.txt')[0]!));

    const copies = stepsOf('COPY --chown=a:b x /y\nCOPY --chown=a:c x /y\nCOPY x /y\nADD x /y\nCOPY --chown=a:b x /y');
    const keys = copies.map((s) => cacheKeyOf(s));
    assert.equal(new Set(keys.slice(0, 4)).size, 4);
    assert.equal(keys[4], keys[0]);
  });

  it('does not depend on the order fields or env entries were written in', () => {
    const [one] = stepsOf('ENV A=1 B=2');
    const [two] = stepsOf('ENV B=2 A=1');
    assert.equal(cacheKeyOf(one!), cacheKeyOf(two!));
  });

  it('includes the env, working directory and user of a planned step', () => {
    const df = parseDockerfile('FROM alpine\nRUN make');
    const key = (base: ContainerConfig) => cacheKeyOf(planSteps(base, df)[0]!);
    const plain = key(emptyConfig());
    assert.equal(key(emptyConfig()), plain);
    assert.notEqual(key(config({ env: { CC: 'clang' } })), plain);
    assert.notEqual(key(config({ workingDir: '/src' })), plain);
    assert.notEqual(key(config({ user: 'builder' })), plain);
    assert.notEqual(plain, cacheKeyOf(df.steps[0]!));
  });
});
