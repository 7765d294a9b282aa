// Trust without shortcuts: Chromium runs with every certificate check on, and a
// person trusts a node only by installing its CA, as the onboarding page tells a
// user to. The node's pages then load with no warning, its service worker runs, the
// app is installable and opens offline; a browser that never installed the CA is
// refused; the CA cannot vouch for a name outside its name constraints; and the
// onboarding page itself is pictured at phone and desktop sizes.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { accessibilityViolations } from './lib/audit.mjs';
import { DESKTOP, launchPerson } from './lib/browser.mjs';
import { startNode } from './lib/node.mjs';

const CLAIM_CODE = 'TRUST1234';
const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');
const PHONE_ONBOARDING = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 };
const SERVICE_WORKER_WAIT_MS = 10_000;
const CERTIFICATE_ERROR = /net::ERR_CERT_[A-Z_]+/;

/**
 * The `net::ERR_…` a navigation to `url` failed with; fails the test if it loaded.
 * In a page of its own: after a failed navigation Chromium commits its error page a
 * moment later, which would cut short the next navigation of the same page.
 */
async function navigationError(context, url) {
  const page = await context.newPage();
  try {
    const error = await page.goto(url).then(() => null, (failure) => failure);
    assert.ok(error, `${url} loaded, but it should have been refused`);
    const code = error.message.match(/net::ERR_[A-Z_]+/);
    assert.ok(code, `${url}: ${error.message}`);
    return code[0];
  } finally {
    await page.close();
  }
}

describe('a node whose CA the person installed', { timeout: 120_000 }, () => {
  let node, stranger, person;

  before(async () => {
    node = await startNode({ name: 'trust-test', claimCode: CLAIM_CODE });
    stranger = await startNode({ name: 'stranger', claimCode: CLAIM_CODE });
    person = await launchPerson({ trust: [node] });
  });

  after(async () => {
    await person?.close();
    await stranger?.stop();
    await node?.stop();
  });

  it('serves its pages with no certificate warning, from a leaf of its own CA', async () => {
    const response = await person.page.goto(node.origin + '/');
    assert.equal(response.status(), 200);
    const security = await response.securityDetails();
    assert.match(security.issuer, /trust-test\.local/, JSON.stringify(security));
    await person.page.getByRole('heading', { name: 'Set up trust-test' }).waitFor();
  });

  it('is refused by a browser that did not install its CA: a certificate error', async (t) => {
    const newcomer = await launchPerson({ trust: [stranger] });
    try {
      const untrusted = await navigationError(newcomer.context, node.origin + '/');
      t.diagnostic(`a browser trusting only another node's CA: ${untrusted}`);
      assert.match(untrusted, CERTIFICATE_ERROR);
      // Trusting one node is not trusting every node.
      const other = await navigationError(person.context, stranger.origin + '/');
      assert.match(other, CERTIFICATE_ERROR);
    } finally {
      await newcomer.close();
    }
  });

  it('registers its service worker, which then controls the page', async () => {
    const { page } = person;
    await page.goto(node.origin + '/');
    const worker = await page.evaluate((waitMs) => Promise.race([
      navigator.serviceWorker.ready.then((registration) => ({ scope: registration.scope, state: registration.active?.state })),
      new Promise((resolve) => setTimeout(() => resolve(null), waitMs)),
    ]), SERVICE_WORKER_WAIT_MS);
    assert.ok(worker, 'navigator.serviceWorker.ready settled');
    assert.equal(worker.scope, node.origin + '/');
    assert.equal(worker.state, 'activated');
    await page.reload();
    assert.ok(await page.evaluate(() => navigator.serviceWorker.controller !== null), 'the reloaded page is controlled');
  });

  it('is installable: Chromium reports no installability error', async (t) => {
    const session = await person.context.newCDPSession(person.page);
    try {
      const { installabilityErrors } = await session.send('Page.getInstallabilityErrors');
      assert.deepEqual(installabilityErrors, []);
      const manifest = await session.send('Page.getAppManifest');
      assert.deepEqual(manifest.errors, []);
      assert.equal(new URL(manifest.url).origin, node.origin);
      const parsed = JSON.parse(manifest.data);
      assert.equal(parsed.display, 'standalone');
      assert.ok(parsed.start_url, 'a start_url');
      assert.ok(parsed.icons?.length > 0, 'icons');
      t.diagnostic(`manifest ${new URL(manifest.url).pathname}: start_url ${parsed.start_url}, ${parsed.icons.length} icon(s)`);
    } finally {
      await session.detach();
    }
  });

  it("leads from the onboarding page's Continue to the claim screen over HTTPS, code filled in", async () => {
    // A browser of its own: Chromium preconnects to origins it saw on the same host,
    // and that idle connection would hold the node's shutdown in the last step.
    const visitor = await launchPerson({ trust: [node] });
    try {
      const { page } = visitor;
      await page.goto(`${node.onboarding}/?claim=${CLAIM_CODE}`);
      const href = await page.locator('#continue').getAttribute('href');
      assert.equal(href, `${node.origin}/#/claim?code=${CLAIM_CODE}`);
      await page.locator('#continue').click();
      await page.getByRole('heading', { name: 'Set up trust-test' }).waitFor();
      assert.equal(new URL(page.url()).origin, node.origin);
      assert.equal(await page.getByLabel('Claim code').inputValue(), CLAIM_CODE);
    } finally {
      await visitor.close();
    }
  });

  it("opens the app shell from the service worker once the node is gone, not Chromium's error page", async () => {
    const { page } = person;
    await page.goto(node.origin + '/');
    await page.getByRole('heading', { name: 'Set up trust-test' }).waitFor();
    assert.ok(await page.evaluate(() => navigator.serviceWorker.controller !== null), 'controlled before the node stops');
    await node.stop();
    const response = await page.reload();
    assert.ok(response?.fromServiceWorker(), 'the page came from the service worker');
    assert.equal(new URL(page.url()).origin, node.origin);
    await page.getByRole('alert').filter({ hasText: "Can't reach" }).waitFor();
    assert.equal(await page.locator('main').count(), 1, "the app's own page");
  });
});

describe("the node's CA, within its name constraints only", { timeout: 120_000 }, () => {
  let node, scratch;
  const servers = [];

  before(async () => {
    node = await startNode({ name: 'constraints', claimCode: CLAIM_CODE });
    scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-leaves-'));
  });

  after(async () => {
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
    await node?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  /** A leaf for `subjectAltName` signed with the node's own CA key, as PEM `{key, cert}`. */
  function leafSignedByNode(label, subjectAltName) {
    const key = join(scratch, `${label}.key`);
    const request = join(scratch, `${label}.csr`);
    const extensions = join(scratch, `${label}.ext`);
    const cert = join(scratch, `${label}.crt`);
    writeFileSync(extensions, [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = serverAuth',
      `subjectAltName = ${subjectAltName}`,
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      '',
    ].join('\n'));
    const openssl = (args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-subj', `/CN=${label}`, '-out', request]);
    openssl(['x509', '-req', '-in', request, '-CA', join(node.dataDir, 'ca.crt'), '-CAkey', join(node.dataDir, 'ca.key'),
      '-set_serial', '0x' + Date.now().toString(16) + Math.floor(Math.random() * 1e6).toString(16), '-days', '30', '-sha256', '-extfile', extensions, '-out', cert]);
    return { key: readFileSync(key), cert: readFileSync(cert, 'utf8') + readFileSync(join(node.dataDir, 'ca.crt'), 'utf8') };
  }

  /** A tiny HTTPS server on loopback presenting `leaf`; its port. */
  async function serve(leaf) {
    const server = createServer(leaf, (request, response) => {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(`<!doctype html><title>served</title><h1>served to ${request.headers.host}</h1>`);
    });
    servers.push(server);
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return server.address().port;
  }

  it('refuses a leaf for bank.example or 10.1.2.3 that its CA signed; a leaf for localhost, signed and served the same way, loads', async (t) => {
    const outside = [
      { host: 'bank.example', subjectAltName: 'DNS:bank.example' },
      { host: '10.1.2.3', subjectAltName: 'IP:10.1.2.3' },
    ];
    const inside = { host: 'localhost', subjectAltName: 'DNS:localhost' };
    for (const each of [...outside, inside]) each.port = await serve(leafSignedByNode(each.host, each.subjectAltName));
    // Names to loopback, as DNS would answer; certificates are checked as ever.
    const rules = [...outside, inside].map(({ host }) => `MAP ${host} 127.0.0.1`).join(', ');
    // Chromium's net log says why it refused a certificate; written out on close.
    const netLog = join(scratch, 'net-log.json');
    const person = await launchPerson({ trust: [node], args: [`--host-resolver-rules=${rules}`, `--log-net-log=${netLog}`] });
    let closed = false;
    try {
      for (const { host, port } of outside) {
        const error = await navigationError(person.context, `https://${host}:${port}/`);
        t.diagnostic(`${host}: ${error}`);
        assert.match(error, CERTIFICATE_ERROR);
      }
      const page = await person.context.newPage();
      const response = await page.goto(`https://${inside.host}:${inside.port}/`);
      assert.equal(response.status(), 200);
      await page.getByRole('heading', { name: `served to localhost:${inside.port}` }).waitFor();
      await person.close();
      closed = true;
      const log = readFileSync(netLog, 'utf8');
      for (const { host } of outside) {
        const why = `(CN=${host}) -----\\nERROR: Not permitted by name constraints`;
        assert.ok(log.includes(why), `the net log says the leaf for ${host} is not permitted by the name constraints`);
      }
      assert.ok(!log.includes('(CN=localhost) -----\\nERROR'), 'no verification error for the localhost leaf');
    } finally {
      if (!closed) await person.close();
    }
  });
});

describe('the onboarding page, pictured', { timeout: 120_000 }, () => {
  let node;

  before(async () => {
    node = await startNode({ name: 'harbour', claimCode: CLAIM_CODE });
  });

  after(async () => {
    await node?.stop();
  });

  for (const [label, options] of [['390', PHONE_ONBOARDING], ['1280', { viewport: DESKTOP }]]) {
    it(`fits ${label} px with nothing scrolling sideways, passes the accessibility audit, and is saved as onboarding-${label}.png`, async () => {
      // A new phone: it trusts nothing yet, which is why it is on this page.
      const person = await launchPerson({ ...options, bypassCSP: true });
      try {
        const { page } = person;
        const response = await page.goto(`${node.onboarding}/?claim=${CLAIM_CODE}`);
        assert.equal(response.status(), 200);
        await page.locator('#continue').waitFor();
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
        assert.deepEqual(await accessibilityViolations(page), []);
        mkdirSync(SCREENSHOTS, { recursive: true });
        await page.screenshot({ path: join(SCREENSHOTS, `onboarding-${label}.png`), fullPage: true });
      } finally {
        await person.close();
      }
    });
  }
});
