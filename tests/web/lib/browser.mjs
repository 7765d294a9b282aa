// Headless Chromium (Debian's, driven by playwright-core), one browser with its own
// fresh profile and HOME per person, every request URL recorded, screenshots at phone
// and desktop widths.
//
// No flag turns certificate checks off. A person trusts a node the way a user
// would: its CA, fetched from the node's onboarding page, is added to the NSS
// database in the person's own HOME (`$HOME/.pki/nssdb`, where Chromium on Linux
// looks for user-added roots), with `certutil` from libnss3-tools.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
export const PHONE = { width: 360, height: 800 };
export const DESKTOP = { width: 1280, height: 800 };

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const CA_PEM_FETCH_TIMEOUT_MS = 10_000;
const CA_CERTIFICATES_PER_NODE_MAX = 64;

/**
 * One person's browser: Chromium on a fresh user-data-dir and a fresh HOME (as a
 * phone's browser would be: not incognito, so installability can be checked) with
 * `{context, page, requests, problems, home, close()}`. `requests` lists every URL
 * the browser asked for, pages and service worker alike.
 *
 * `trust`: the nodes (as `startNode` returns them) whose CAs this person has
 * installed, each fetched from `<node.onboarding>/ca.pem` (the node's CA and its
 * siblings') into `<home>/.pki/nssdb` as trusted for TLS servers ("C,,"). Default:
 * none, like a new phone: every node's HTTPS then fails with a certificate error.
 * `args`: extra Chromium switches, after the usual ones. Any other option goes to
 * playwright's `launchPersistentContext` (`viewport`, `deviceScaleFactor`, …).
 */
export async function launchPerson({ trust = [], args = [], ...options } = {}) {
  const scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-person-'));
  try {
    const home = join(scratch, 'home');
    await makeTrustStore(home, trust, scratch);
    const userDataDir = join(scratch, 'profile');
    mkdirSync(userDataDir);
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, ...args],
      env: { ...process.env, HOME: home },
      timeout: 60_000,
      viewport: PHONE,
      locale: 'en-GB',
      serviceWorkers: 'allow',
      ...options,
    });
    context.setDefaultTimeout(15_000);
    const requests = [];
    context.on('request', (request) => requests.push(request.url()));
    const page = context.pages()[0] || (await context.newPage());
    const problems = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`);
    });
    return {
      context,
      page,
      requests,
      problems,
      home,
      async close() {
        await context.close();
        rmSync(scratch, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}

/** The PEM bundle a node offers on its onboarding listener: its CA, then its siblings'. */
export async function caBundleOf(node) {
  if (!node?.onboarding) throw new Error('trust: expected a node from startNode (it has no onboarding origin)');
  const answer = await fetch(`${node.onboarding}/ca.pem`, { signal: AbortSignal.timeout(CA_PEM_FETCH_TIMEOUT_MS) });
  if (answer.status !== 200) throw new Error(`GET ${node.onboarding}/ca.pem answered ${answer.status}`);
  const certificates = (await answer.text()).match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) || [];
  if (certificates.length === 0) throw new Error(`GET ${node.onboarding}/ca.pem held no certificate`);
  if (certificates.length > CA_CERTIFICATES_PER_NODE_MAX) throw new Error(`GET ${node.onboarding}/ca.pem held ${certificates.length} certificates`);
  return certificates.map((pem) => pem + '\n');
}

/** A new NSS database in `<home>/.pki/nssdb` trusting the CAs of the `trust` nodes. */
async function makeTrustStore(home, trust, scratch) {
  const database = `sql:${join(home, '.pki', 'nssdb')}`;
  mkdirSync(join(home, '.pki', 'nssdb'), { recursive: true, mode: 0o700 });
  certutil(['-N', '-d', database, '--empty-password']);
  const added = new Set();
  for (const node of trust) {
    for (const pem of await caBundleOf(node)) {
      if (added.has(pem)) continue;
      added.add(pem);
      const file = join(scratch, `ca-${added.size}.pem`);
      writeFileSync(file, pem);
      certutil(['-A', '-d', database, '-t', 'C,,', '-n', `edgenode ${node.name} CA ${added.size}`, '-i', file]);
    }
  }
}

function certutil(args) {
  try {
    execFileSync('certutil', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const why = error.code === 'ENOENT' ? 'certutil is missing: install libnss3-tools' : `${error.stderr || error.message}`.trim();
    throw new Error(`certutil ${args.join(' ')}: ${why}`);
  }
}

/** Full-page screenshots `<name>-360.png` and `<name>-1280.png`; leaves the page at phone size. */
export async function screenshots(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  // A toast is passing news; a full-page picture shows it mid-page, over content.
  await page.evaluate(() => document.querySelector('#toast')?.classList.remove('shown'));
  for (const viewport of [PHONE, DESKTOP]) {
    await page.setViewportSize(viewport);
    await page.evaluate(() => window.scrollTo(0, 0));
    await settle(page);
    await page.screenshot({ path: join(ARTIFACTS, `${name}-${viewport.width}.png`), fullPage: true });
  }
  await page.setViewportSize(PHONE);
}

/** Waits until photos in view have loaded (or failed) and transitions are over. */
export async function settle(page) {
  await page.waitForFunction(() => {
    const frames = [...document.querySelectorAll('.photo')].filter((frame) => {
      const box = frame.getBoundingClientRect();
      return box.bottom > 0 && box.top < innerHeight;
    });
    return frames.every((frame) => frame.classList.contains('loaded') || frame.classList.contains('failed'));
  }, null, { timeout: 10_000 });
  await page.waitForTimeout(350);
}

/** Bytes of `data` after `gzip -9`, as the real tool counts them. */
export function gzipBytes(data) {
  return execFileSync('gzip', ['-9', '-c'], { input: data, maxBuffer: 64 * 1024 * 1024 }).length;
}

/**
 * A small camera-like JPEG drawn in the page (a sky, a sun, the sea), `seed`
 * varying its colours so each is a different file. Written to `path`.
 */
export async function makeJpeg(page, path, seed) {
  const base64 = await page.evaluate(async (seed) => {
    const canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 480;
    const context = canvas.getContext('2d');
    const sky = context.createLinearGradient(0, 0, 0, 300);
    sky.addColorStop(0, `hsl(${(210 + seed * 140) % 360} 70% 45%)`);
    sky.addColorStop(1, `hsl(${(30 + seed * 40) % 360} 90% 70%)`);
    context.fillStyle = sky;
    context.fillRect(0, 0, 640, 300);
    context.fillStyle = `hsl(${(45 + seed * 10) % 360} 100% 60%)`;
    context.beginPath();
    context.arc(200 + seed * 220, 220, 60, 0, Math.PI * 2);
    context.fill();
    const sea = context.createLinearGradient(0, 300, 0, 480);
    sea.addColorStop(0, `hsl(${(200 + seed * 20) % 360} 60% 35%)`);
    sea.addColorStop(1, `hsl(${(220 + seed * 20) % 360} 70% 15%)`);
    context.fillStyle = sea;
    context.fillRect(0, 300, 640, 180);
    for (let wave = 0; wave < 40; wave++) {
      context.fillStyle = `rgba(255,255,255,${0.1 + (wave % 5) * 0.05})`;
      context.fillRect((wave * 97 + seed * 31) % 600, 310 + ((wave * 53) % 160), 40, 3);
    }
    const blob = await new Promise((resolveBlob) => canvas.toBlob(resolveBlob, 'image/jpeg', 0.9));
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let binary = '';
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary);
  }, seed);
  writeFileSync(path, Buffer.from(base64, 'base64'));
  return path;
}
