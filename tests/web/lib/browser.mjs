// Headless Chromium (Debian's, driven by playwright-core), one browser with its own
// fresh profile per person, every request URL recorded, screenshots at phone and
// desktop widths.

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
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--ignore-certificate-errors',
];

/**
 * One person's browser: Chromium on a fresh user-data-dir (as a phone's browser
 * would be: not incognito, so installability can be checked) with
 * `{context, page, requests, problems, close()}`. `requests` lists every URL the
 * browser asked for, pages and service worker alike.
 */
export async function launchPerson(options = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'edgenode-web-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
    viewport: PHONE,
    ignoreHTTPSErrors: true,
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
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
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
