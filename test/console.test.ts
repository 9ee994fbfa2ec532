/**
 * The web console in a real headless Chromium (Debian's, driven by
 * puppeteer-core): sign-in, the demo image, a VM run from the form followed
 * to RUNNING with its logs and a terminal, suspend/resume, a failing build's
 * reason, terminate, an egress connector made from its form, the usage
 * page. Screenshots go to test/artifacts/console (git-ignored).
 * Needs `npm run build` (the bundle) and boots VMs: run under flock /tmp/cella-vm.lock.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import yazl from 'yazl';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, createImage, guestGet, shutdown } from './control-helpers.js';
import { tempDataDir } from './helpers.js';

const SHOTS = path.join(import.meta.dirname, 'artifacts', 'console');

function zipOf(files: Record<string, string>): Promise<Buffer> {
  const z = new yazl.ZipFile();
  for (const [name, text] of Object.entries(files)) z.addBuffer(Buffer.from(text), name);
  z.end();
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    z.outputStream.on('data', (c: Buffer) => chunks.push(c));
    z.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    z.outputStream.on('error', reject);
  });
}

describe('web console', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let browser: Browser;
  let page: Page;
  let vmId = '';

  const shot = async (name: string): Promise<void> => {
    for (const [tag, width, height] of [
      ['desktop', 1280, 900],
      ['phone', 390, 844],
    ] as const) {
      await page.setViewport({ width, height });
      await page.screenshot({ path: path.join(SHOTS, `${name}-${tag}.png`), fullPage: true });
    }
    await page.setViewport({ width: 1280, height: 900 });
  };
  const text = (sel: string): Promise<string> => page.$eval(sel, (e) => e.textContent ?? '');
  const waitText = (sel: string, re: RegExp, timeout = 120_000): Promise<unknown> =>
    page.waitForFunction(
      (s: string, src: string) => new RegExp(src).test(document.querySelector(s)?.textContent ?? ''),
      { timeout, polling: 250 },
      sel,
      re.source,
    );

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dir = tempDataDir('console');
    server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, apiRateScale: 0, log: () => {} });
    const { build, log } = await createImage(server.url, 'demo');
    assert.equal(build.buildState, 'SUCCESSFUL', log);
    // The endpoints' CA is the server's own; *.localhost is loopback in Chromium.
    browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--ignore-certificate-errors'] });
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
  });

  after(async () => {
    await browser?.close();
    if (server) await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('pages carry a strict CSP and no inline script', { timeout: 30_000 }, async () => {
    const res = await fetch(`${server.url}/console/`);
    assert.equal(res.status, 200);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.doesNotMatch(await res.text(), /<script>/);
    assert.equal((await fetch(`${server.url}/console/../openapi.json`)).status, 401, 'nothing but the bundle without a key');
  });

  test('a wrong key is refused; the right one signs in and shows the demo image', { timeout: 60_000 }, async () => {
    await page.goto(`${server.url}/console/`);
    await shot('signin');
    await page.type('#api-key', 'wrong-key');
    await page.click('button[type=submit]');
    await waitText('.error', /UNAUTHENTICATED/, 10_000);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.$eval('#api-key', (e) => ((e as HTMLInputElement).value = ''));
    await page.type('#api-key', API_KEY);
    await page.click('button[type=submit]');
    await page.waitForSelector('nav');
    assert.doesNotMatch(page.url(), new RegExp(API_KEY));
    await page.goto(`${server.url}/console/#/images`);
    await waitText('.images', /demo/, 15_000);
    await shot('images');
  });

  test('run a VM from the form, see it RUNNING, follow its logs, use its terminal', { timeout: 5 * 60_000 }, async () => {
    await page.goto(`${server.url}/console/#/run`);
    await page.waitForSelector('#run-submit');
    await page.click('#run-submit');
    await page.waitForFunction(() => location.hash.startsWith('#/vm/'), { timeout: 30_000 });
    vmId = page.url().split('#/vm/')[1] ?? '';
    await waitText('h2', /RUNNING/);
    // The demo app prints a line when asked; the page follows the log live.
    await guestGet(server, vmId, '/log/from-the-console-test');
    await waitText('#logs', /from-the-console-test/, 30_000);
    await shot('vm');
    await page.click('#open-shell');
    await waitText('#shell-status', /connected/, 30_000);
    await page.type('.term textarea', 'echo h""i\r');
    await page.waitForFunction(() => /(^|\n)\s*hi\s*$/m.test([...document.querySelectorAll('.xterm-rows > div')].map((d) => d.textContent).join('\n')), {
      timeout: 30_000,
    });
    await shot('terminal');
    await page.click('#open-shell');
  });

  test('suspend and resume it, then terminate with a confirmation', { timeout: 5 * 60_000 }, async () => {
    await page.click('#suspend');
    await waitText('h2', /SUSPENDED/);
    await page.click('#resume');
    await waitText('h2', /RUNNING/);
    page.once('dialog', (d) => void d.accept());
    await page.click('#terminate');
    await waitText('h2', /TERMINAT/);
    await page.goto(`${server.url}/console/#/vms`);
    await waitText('table', new RegExp(vmId), 15_000);
    await shot('vms');
  });

  test('create an egress connector from the form; a bad one is refused with its code', { timeout: 60_000 }, async () => {
    await page.goto(`${server.url}/console/#/connectors`);
    await page.waitForSelector('#conn-submit');
    await page.type('#conn-name', 'bad-cidr');
    await page.type('#conn-cidrs', '10.0.0.1/8');
    await page.click('#conn-submit');
    await waitText('.connectors form .error', /INVALID_ARGUMENT.*host bits/, 10_000);
    assert.doesNotMatch(await text('#connectors'), /bad-cidr/, 'a refused connector is not listed');
    await page.click('#conn-name', { count: 3 });
    await page.keyboard.press('Backspace');
    await page.click('#conn-cidrs', { count: 3 });
    await page.keyboard.press('Backspace');
    await page.type('#conn-name', 'partner-api');
    await page.type('#conn-cidrs', '203.0.113.0/24');
    await page.type('#conn-domains', 'example.com, *.example.org');
    await page.click('#conn-submit');
    await waitText('#connectors', /partner-api.*203\.0\.113\.0\/24.*\*\.example\.org/, 10_000);
    assert.equal(await page.$('.connectors form .error'), null, 'the error is gone after a good create');
    await shot('connectors');
  });

  test('the usage page shows compute seconds of the demo image and the running count', { timeout: 60_000 }, async () => {
    await page.goto(`${server.url}/console/#/usage`);
    await waitText('#usage-images', /demo\s*\d+\.\d s/, 15_000);
    await waitText('#usage-running', /^\d+$/, 15_000);
    const width = await page.$eval('#usage-images .bar rect', (r) => Number(r.getAttribute('width')));
    assert.ok(width > 0, `the demo bar has a width (${width})`);
    await shot('usage');
  });

  test("a build from an uploaded zip streams its log and shows the failure's reason", { timeout: 5 * 60_000 }, async () => {
    const file = path.join(dir, 'bad.zip');
    writeFileSync(file, await zipOf({ Dockerfile: 'FROM busybox\nRUN echo building && exit 3\n' }));
    await page.goto(`${server.url}/console/#/images`);
    await page.waitForSelector('#image-name');
    await page.type('#image-name', 'broken');
    const input = await page.$('input#image-zip');
    await (input as NonNullable<typeof input>).uploadFile(file);
    await page.click('#image-build');
    await waitText('#build-log', /building/, 180_000);
    await page.waitForSelector('.images .reason', { timeout: 180_000 });
    // The form opened the new image's versions; the failed one carries its reason.
    await page.waitForSelector('td.reason', { timeout: 30_000 });
    assert.match(await text('td.reason'), /\S/);
    await shot('build-failed');
  });
});
