// The web app on a phone (390 x 844 CSS px at 2 device pixels per CSS px): the box
// label's link leads through the onboarding page to the claim screen with its code
// filled in (and its older `#pin=…&claim=…` form too); feed and grid photos are
// fetched at a size that is sharp on the screen; a person whose home node is down
// signs in on its sibling and carries on, and what they did there reaches home when
// it is back; an invite shows its QR code and the node's own link. Screenshots of the
// claim screen, the feed and the failover banner go to tests/web/screenshots/.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe } from 'node:test';

import { caBundleOf, launchPerson, settle } from './lib/browser.mjs';
import { imageBuilderBinary, startNode } from './lib/node.mjs';
import { stepKeepingScreens } from './lib/scenario.mjs';

const PASSWORD = 'correct horse battery';
const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const PHONE_PERSON = { viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
/** What the node makes (docs/api.md): `thumb` fits 256 px, `display` 1080 px. */
const THUMB_PIXELS = 256;
const REPLICATION_WAIT_MS = 60_000;
const POLL_MS = 250;
const API_TIMEOUT_MS = 10_000;
/** A debug build serving several tests at once can be slow to send a screenful of photos. */
const PHOTOS_LOAD_WAIT_MS = 30_000;
/** Page problems that mean the app broke a rule of its page. */
const BROKEN_RULE = /page error|Content Security Policy|Trusted Type/i;

/** A toast is passing news: a picture shows it over content. */
async function hideToast(page) {
  await page.evaluate(() => document.querySelector('#toast')?.classList.remove('shown'));
}

/** Full-page screenshots `<name>-390.png` and `<name>-1280.png` in tests/web/screenshots; back at phone size after. */
async function screenshots(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await hideToast(page);
  for (const viewport of [PHONE, DESKTOP]) {
    await page.setViewportSize(viewport);
    await page.evaluate(() => window.scrollTo(0, 0));
    await settle(page);
    // Photos far below the fold may not be decoded yet; a full-page picture needs them all.
    await page.evaluate(() => Promise.all([...document.images].map((image) => image.decode().catch(() => {}))));
    await page.screenshot({ path: join(SCREENSHOTS, `${name}-${viewport.width}.png`), fullPage: true });
  }
  await page.setViewportSize(PHONE);
}

/**
 * A camera-like JPEG of `width` x `height` drawn by the browser (sky, sun, sea and
 * fine stripes a blurry copy would lose), `seed` varying it. Written to `path`.
 */
async function drawJpeg(page, path, { width, height, seed }) {
  const base64 = await page.evaluate(async ({ width, height, seed }) => {
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext('2d');
    const horizon = Math.round(height * 0.62);
    const sky = context.createLinearGradient(0, 0, 0, horizon);
    sky.addColorStop(0, `hsl(${(200 + seed * 47) % 360} 70% 45%)`);
    sky.addColorStop(1, `hsl(${(30 + seed * 23) % 360} 90% 72%)`);
    context.fillStyle = sky;
    context.fillRect(0, 0, width, horizon);
    context.fillStyle = `hsl(${(45 + seed * 9) % 360} 100% 60%)`;
    context.beginPath();
    context.arc(width * (0.25 + 0.15 * (seed % 4)), horizon * 0.7, Math.min(width, height) * 0.09, 0, Math.PI * 2);
    context.fill();
    const sea = context.createLinearGradient(0, horizon, 0, height);
    sea.addColorStop(0, `hsl(${(195 + seed * 13) % 360} 60% 35%)`);
    sea.addColorStop(1, `hsl(${(220 + seed * 11) % 360} 70% 14%)`);
    context.fillStyle = sea;
    context.fillRect(0, horizon, width, height - horizon);
    for (let wave = 0; wave < 160; wave++) {
      context.fillStyle = `rgba(255,255,255,${0.1 + (wave % 5) * 0.06})`;
      context.fillRect((wave * 197 + seed * 61) % width, horizon + 8 + ((wave * 89) % (height - horizon - 16)), width / 30, 2);
    }
    for (let x = 0; x < width; x += 4) {
      context.fillStyle = x % 8 ? 'rgba(0,0,0,0.35)' : 'rgba(255,255,255,0.35)';
      context.fillRect(x, 0, 2, Math.round(height * 0.04));
    }
    const blob = await new Promise((resolveBlob) => canvas.toBlob(resolveBlob, 'image/jpeg', 0.9));
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let binary = '';
    for (let index = 0; index < bytes.length; index += 0x8000) binary += String.fromCharCode(...bytes.subarray(index, index + 0x8000));
    return btoa(binary);
  }, { width, height, seed });
  writeFileSync(path, Buffer.from(base64, 'base64'));
  return path;
}

/** Claims the node shown in `page` as `handle` through the claim screen. */
async function claim(page, node, claimCode, handle) {
  await page.goto(`${node.origin}/#/claim?code=${encodeURIComponent(claimCode)}`);
  await page.getByRole('heading', { name: `Set up ${node.name}` }).waitFor();
  await page.getByLabel('Admin handle').fill(handle);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Claim this node' }).click();
  await page.getByRole('heading', { name: 'Feed' }).waitFor();
}

/** Posts `files` with `caption` through the New post screen; returns the post's id. */
async function post(page, origin, files, caption) {
  await page.goto(`${origin}/#/upload`);
  await page.getByRole('heading', { name: 'New post' }).waitFor();
  if (files.length) {
    await page.locator('#photos').setInputFiles(files);
    await page.locator('.upload[data-status="done"]').nth(files.length - 1).waitFor({ timeout: 60_000 });
  }
  await page.getByLabel('Caption').fill(caption);
  await page.getByRole('button', { name: 'Share' }).click();
  await page.waitForURL(/#\/post\/[0-9A-Za-z_-]+$/);
  return new URL(page.url()).hash.split('/').pop();
}

/** Scrolls to the end of the list so every photo comes near, then waits until each has loaded. */
async function loadEveryPhoto(page) {
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.waitForFunction(() => [...document.querySelectorAll('.photo')].every((frame) => frame.classList.contains('loaded') || frame.classList.contains('failed')), null, { timeout: PHOTOS_LOAD_WAIT_MS });
  assert.equal(await page.locator('.photo.failed').count(), 0, 'no photo failed to load');
  await page.evaluate(() => window.scrollTo(0, 0));
}

/**
 * Each photo of `selector` on the screen with what it needs: `[{natural: [w, h],
 * rendered: [w, h] in device pixels}]`, in document order.
 */
function measured(page, selector) {
  return page.locator(selector).evaluateAll((images) => images.map((image) => {
    const box = image.getBoundingClientRect();
    return {
      natural: [image.naturalWidth, image.naturalHeight],
      rendered: [box.width * devicePixelRatio, box.height * devicePixelRatio],
    };
  }));
}

/** The media of `path` (a list of posts) as the page's session sees them: `[post media…]`, first `perPost` of each. */
function mediaOf(page, path, perPost) {
  return page.evaluate(async ({ path, perPost }) => {
    const { token } = JSON.parse(localStorage.getItem('edgenode.session'));
    const answer = await fetch(path, { headers: { Authorization: `Bearer ${token}` } }).then((response) => response.json());
    return answer.items.flatMap((item) => item.media.slice(0, perPost));
  }, { path, perPost });
}

/** `https` to a node, checking its certificate against the CA bundle it offers: `{status, body}`. */
async function call(node, method, path, { token, body } = {}) {
  const ca = await caBundleOf(node);
  const url = new URL(path, node.origin);
  return new Promise((resolveCall, reject) => {
    const sent = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const outgoing = request(url, {
      method,
      ca,
      timeout: API_TIMEOUT_MS,
      headers: {
        Accept: 'application/json',
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(sent ? { 'Content-Type': 'application/json', 'Content-Length': sent.length } : {}),
      },
    }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed = text;
        try { parsed = JSON.parse(text); } catch { /* not JSON */ }
        resolveCall({ status: response.statusCode, body: parsed });
      });
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error(`${method} ${url} took over ${API_TIMEOUT_MS} ms`)));
    outgoing.on('error', reject);
    outgoing.end(sent);
  });
}

/** Polls `check` (async, truthy when done) every POLL_MS until `withinMs`; fails with `what` and the last value. */
async function eventually(what, withinMs, check) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() - started > withinMs) assert.fail(`${what} within ${withinMs} ms; last: ${JSON.stringify(last)}`);
    await new Promise((resolveWait) => setTimeout(resolveWait, POLL_MS));
  }
}

/** A loopback port free for HTTPS (TCP), HTTP/3 (UDP) and, at the next port, the peer endpoint (UDP). */
async function freeNodePort() {
  const bindUdp = (port) => new Promise((resolveBind) => {
    const socket = createSocket('udp4');
    socket.once('error', () => { socket.close(); resolveBind(false); });
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolveBind(true)));
  });
  for (;;) {
    const port = await new Promise((resolvePort, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: found } = server.address();
        server.close(() => resolvePort(found));
      });
    });
    if (port < 65535 && (await bindUdp(port)) && (await bindUdp(port + 1))) return port;
  }
}

/** A step that keeps the person's screen in tests/web/artifacts when it fails. */
function step(name, people, body, options = {}) {
  return stepKeepingScreens(name, { prefix: 'phone-', people, options }, body);
}

function assertNoBrokenRules(person) {
  // The onboarding page (plain HTTP) has no icon: Chromium's own /favicon.ico request
  // is redirected to HTTPS, which that page's CSP refuses. Not the app's doing.
  const onboardingIcon = /favicon\.ico.*img-src 'self'/;
  assert.deepEqual(person.problems.filter((text) => BROKEN_RULE.test(text) && !onboardingIcon.test(text)), []);
}

describe('the box label opens setup', { timeout: 180_000 }, () => {
  const CLAIM_CODE = 'LABEL-2345-ABCD';
  const scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-label-'));
  let node, owner, visitor, labelLink;

  before(async () => {
    // The ISP's tool prints the label; the phone's camera reads its QR code.
    writeFileSync(join(scratch, 'boxes.csv'), `name,claim_code\nlabel-test,${CLAIM_CODE}\n`);
    execFileSync(imageBuilderBinary(), ['provision', '--inventory', join(scratch, 'boxes.csv'), '--out', join(scratch, 'boxes')]);
    const label = join(scratch, 'boxes', 'label-test', 'label.png');
    labelLink = execFileSync('zbarimg', ['--quiet', '--raw', label], { encoding: 'utf8' }).trim();
    mkdirSync(SCREENSHOTS, { recursive: true });
    copyFileSync(label, join(SCREENSHOTS, 'label.png'));
    node = await startNode({ name: 'label-test', claimCode: CLAIM_CODE });
    // What mDNS does on a phone's network: label-test.local is the box, whose
    // onboarding page is on port 80 (here: the test's loopback port).
    const onboardingPort = new URL(node.onboarding).port;
    const resolver = `--host-resolver-rules=MAP label-test.local:80 127.0.0.1:${onboardingPort}, MAP label-test.local 127.0.0.1`;
    owner = await launchPerson({ trust: [node], args: [resolver], ...PHONE_PERSON });
  });

  after(async () => {
    await owner?.close();
    await visitor?.close();
    await node?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  step("leads from the label's QR code through onboarding to the claim screen, code filled in", () => ({ owner }), async () => {
    assert.equal(labelLink, `http://label-test.local/?claim=${CLAIM_CODE}`, 'the label links to the onboarding page');
    const { page } = owner;
    await page.goto(labelLink);
    await page.locator('#fingerprint').waitFor();
    await page.locator('#continue').click();
    await page.getByRole('heading', { name: 'Set up label-test' }).waitFor();
    const landed = new URL(page.url());
    assert.equal(landed.host, `label-test.local:${new URL(node.origin).port}`, 'HTTPS by the name the CA vouches for');
    assert.equal(await page.getByLabel('Claim code').inputValue(), CLAIM_CODE);
    await screenshots(page, 'phone-claim');
  });

  step('opens the claim screen from the older label link `#pin=…&claim=CODE`', () => ({ owner }), async () => {
    const { page } = owner;
    await page.goto('about:blank');
    await page.goto(`${node.origin}/#pin=${encodeURIComponent(node.pin)}&claim=${CLAIM_CODE}`);
    await page.getByRole('heading', { name: 'Set up label-test' }).waitFor();
    assert.equal(await page.getByLabel('Claim code').inputValue(), CLAIM_CODE);
    assert.match(new URL(page.url()).hash, /^#\/claim\?code=/, 'the address became the claim screen');
  });

  step('claims the node with the filled-in code', () => ({ owner }), async () => {
    const { page } = owner;
    await page.getByLabel('Admin handle').fill('owner');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Claim this node' }).click();
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
  });

  step('sends both link forms to sign-in once the node is claimed, and never hangs on an unknown address', () => ({ visitor }), async () => {
    visitor = await launchPerson({ trust: [node], ...PHONE_PERSON });
    const { page } = visitor;
    for (const link of [`/#/claim?code=${CLAIM_CODE}`, `/#pin=${encodeURIComponent(node.pin)}&claim=${CLAIM_CODE}`, '/#anything-else']) {
      await page.goto('about:blank');
      await page.goto(node.origin + link);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    }
    await page.goto('about:blank');
    await page.goto(`${node.origin}/#/no-such-screen`);
    await page.getByRole('heading', { name: 'Nothing here' }).waitFor();
    assert.equal(await page.getByText('Loading…', { exact: true }).count(), 0);
    assertNoBrokenRules(owner);
    assertNoBrokenRules(visitor);
  });
});

describe('photos on a phone are sharp, and invites carry a QR code', { timeout: 300_000 }, () => {
  const CLAIM_CODE = 'PHOTO-2345-ABCD';
  let node, ada, newcomer;
  const scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-phone-'));
  const originals = new Map();

  before(async () => {
    node = await startNode({ name: 'photo-test', claimCode: CLAIM_CODE });
    ada = await launchPerson({ trust: [node], ...PHONE_PERSON });
  });

  after(async () => {
    await ada?.close();
    await newcomer?.close();
    await node?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  step('posts landscape, portrait and square photos of 1,200 px and more', () => ({ ada }), async () => {
    const { page } = ada;
    await claim(page, node, CLAIM_CODE, 'ada');
    const photos = {};
    for (const [name, width, height, seed] of [['landscape', 1600, 1200, 1], ['portrait', 1200, 1600, 2], ['square', 1200, 1200, 3], ['wide', 2000, 1000, 4]]) {
      photos[name] = await drawJpeg(page, join(scratch, `${name}.jpg`), { width, height, seed });
      originals.set(name, [width, height]);
    }
    await post(page, node.origin, [photos.landscape], 'A #landscape by the sea');
    await post(page, node.origin, [photos.portrait], 'A #portrait of the pier');
    await post(page, node.origin, [photos.square, photos.wide], 'Two at once: square and wide');
    await post(page, node.origin, [photos.wide, photos.portrait, photos.landscape], 'Three of the harbour');
  });

  step('fetches each feed photo at least as wide as it is drawn, in device pixels', () => ({ ada }), async (t) => {
    const { page, requests } = ada;
    const before = requests.length;
    await page.goto(`${node.origin}/#/feed`);
    await page.locator('article.post').nth(3).waitFor();
    await loadEveryPhoto(page);
    // Each photo was fetched once, at the size it needed: no thumbnail first, then a bigger one.
    const fetched = requests.slice(before).map((url) => new URL(url).pathname).filter((path) => path.startsWith('/api/v1/media/'));
    assert.deepEqual(fetched.filter((path) => path.endsWith('/thumb')), [], 'no thumbnail is enough at 390 px and DPR 2 here');
    const shown = await measured(page, 'article.post .photo img');
    const media = await mediaOf(page, '/api/v1/feed?limit=20', 4);
    assert.equal(shown.length, media.length, 'one image per photo of the feed');
    assert.equal(await page.evaluate(() => devicePixelRatio), 2);
    const lines = [];
    shown.forEach(({ natural, rendered }, index) => {
      const original = media[index].width;
      const needed = Math.min(rendered[0], original);
      lines.push(`photo ${index + 1}: natural ${natural.join('x')}, drawn ${rendered.map(Math.round).join('x')} device px, original ${original} px wide`);
      assert.ok(natural[0] >= needed, `feed photo ${index + 1}: natural width ${natural[0]} < ${needed} (${lines.at(-1)})`);
    });
    t.diagnostic(lines.join('; '));
    await screenshots(page, 'phone-feed');
  });

  step('uses thumbnails in the profile grid only where they fill the tile, and a bigger size when the tile grows', () => ({ ada }), async (t) => {
    const { page } = ada;
    await page.goto(`${node.origin}/#/u/ada`);
    await page.getByRole('heading', { name: '@ada' }).waitFor();
    await page.locator('.grid .photo').nth(3).waitFor();
    await loadEveryPhoto(page);
    const tiles = await measured(page, '.grid .photo img');
    const media = await mediaOf(page, '/api/v1/users/ada/posts?limit=20', 1);
    assert.equal(tiles.length, 4);
    const lines = [];
    tiles.forEach(({ natural, rendered }, index) => {
      const original = [media[index].width, media[index].height];
      lines.push(`tile ${index + 1}: natural ${natural.join('x')}, drawn ${rendered.map(Math.round).join('x')} device px`);
      // A tile crops its photo to a square: both sides must cover it.
      for (const side of [0, 1]) {
        assert.ok(natural[side] >= Math.min(rendered[side], original[side]), `tile ${index + 1}: ${lines.at(-1)}`);
      }
      // A thumbnail whenever one is enough (the square photo, in the newest-but-one post).
      const thumbIsEnough = media[index].variants.thumb.width >= rendered[0] && media[index].variants.thumb.height >= rendered[1];
      if (thumbIsEnough) assert.ok(Math.max(...natural) <= THUMB_PIXELS, `tile ${index + 1} is a thumbnail: ${lines.at(-1)}`);
    });
    t.diagnostic(`390 px, DPR 2: ${lines.join('; ')}`);
    const squareTile = 1;
    assert.ok(Math.max(...tiles[squareTile].natural) <= THUMB_PIXELS, `the square photo's tile is a thumbnail: ${lines[squareTile]}`);

    // Wider window, wider tiles: the thumbnail no longer fills its tile and is replaced.
    await page.setViewportSize(DESKTOP);
    await page.waitForFunction((index) => document.querySelectorAll('.grid .photo img')[index].naturalWidth > 256, squareTile);
    const wide = (await measured(page, '.grid .photo img'))[squareTile];
    t.diagnostic(`1280 px, DPR 2: square tile natural ${wide.natural.join('x')}, drawn ${wide.rendered.map(Math.round).join('x')} device px`);
    assert.ok(wide.natural[0] >= Math.min(wide.rendered[0], 1200));
    await page.setViewportSize(PHONE);
  });

  step("shows an invite's QR code and the node's own link, and takes the code in small letters with a space", () => ({ ada, newcomer }), async () => {
    const { page } = ada;
    await page.goto(`${node.origin}/#/admin`);
    await page.getByRole('heading', { name: 'Admin' }).waitFor();
    const answered = page.waitForResponse((response) => response.url().endsWith('/api/v1/invites') && response.request().method() === 'POST');
    await page.getByRole('button', { name: 'Create invite' }).click();
    const invite = await (await answered).json();
    assert.ok(typeof invite.link === 'string' && invite.link, `the node answers a link: ${JSON.stringify(invite)}`);
    assert.ok(typeof invite.qr_svg === 'string', 'the node answers a QR code');
    const qr = page.getByRole('img', { name: /QR code of the invite link/ });
    await qr.waitFor();
    const picture = await qr.evaluate((image) => ({ src: image.getAttribute('src'), width: image.naturalWidth, shown: image.getBoundingClientRect().width }));
    assert.match(picture.src, /^data:image\/svg\+xml;charset=utf-8,/);
    assert.ok(picture.width > 0 && picture.shown >= 150, `the QR code is drawn: ${JSON.stringify({ width: picture.width, shown: picture.shown })}`);
    const shownLink = (await page.locator('.invite-link').first().textContent()).trim();
    assert.equal(shownLink, invite.link);
    assert.ok(!shownLink.startsWith(node.origin), `the link is the node's, not this page's address: ${shownLink}`);
    await hideToast(page);
    const made = page.locator('.invites li').first();
    await made.evaluate((element) => element.scrollIntoView({ block: 'center' }));
    await made.screenshot({ path: join(SCREENSHOTS, 'phone-invite-390.png') });

    newcomer = await launchPerson({ trust: [node], ...PHONE_PERSON });
    const typed = invite.code.toLowerCase().replace('-', ' ');
    await newcomer.page.goto(`${node.origin}/#/join`);
    await newcomer.page.getByLabel('Invite code').fill(typed);
    await newcomer.page.getByLabel('Choose a handle').fill('newcomer');
    await newcomer.page.getByLabel('Choose a password').fill(PASSWORD);
    await newcomer.page.getByRole('button', { name: 'Create account' }).click();
    await newcomer.page.getByRole('heading', { name: 'Search' }).waitFor();
    assertNoBrokenRules(ada);
    assertNoBrokenRules(newcomer);
  });
});

describe('a person whose home node is down carries on at its sibling', { timeout: 420_000 }, () => {
  const CLAIM_CODE = 'HOME-2345-ABCD';
  let home, sibling, ada, homePostId, photoFile;
  const scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-failover-'));
  const controlToken = (node) => readFileSync(join(node.dataDir, 'control-token'), 'utf8').trim();

  before(async () => {
    home = await startNode({ name: 'home', claimCode: CLAIM_CODE, listen: `127.0.0.1:${await freeNodePort()}` });
    sibling = await startNode({ name: 'sibling', claimCode: 'SIBL-2345-ABCD' });
  });

  after(async () => {
    await ada?.close();
    await sibling?.stop();
    await home?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  step('pairs the two nodes, and a phone that trusts home trusts its sibling too', () => ({}), async () => {
    const pairing = await call(home, 'POST', '/api/v1/node/peers/pair', { token: controlToken(home) });
    assert.equal(pairing.status, 200, JSON.stringify(pairing.body));
    const joined = await call(sibling, 'POST', '/api/v1/node/peers/join', { token: controlToken(sibling), body: { address: pairing.body.peer_address, code: pairing.body.code } });
    assert.equal(joined.status, 200, JSON.stringify(joined.body));
    assert.equal(joined.body.node_id, home.nodeId);
    await eventually("home's onboarding offers its sibling's CA", 10_000, async () => (await caBundleOf(home)).length >= 2);
    ada = await launchPerson({ trust: [home], ...PHONE_PERSON });
  });

  step('lets Ada claim home and post; the sibling gets both and counts as claimed', () => ({ ada }), async () => {
    const { page } = ada;
    await claim(page, home, CLAIM_CODE, 'ada');
    photoFile = await drawJpeg(page, join(scratch, 'home.jpg'), { width: 1600, height: 1200, seed: 5 });
    homePostId = await post(page, home.origin, [photoFile], 'Posted at #home');
    await eventually('the sibling holds the post made at home', REPLICATION_WAIT_MS, async () => {
      const answer = await call(sibling, 'GET', `/api/v1/posts/${homePostId}`);
      return answer.status === 200 && answer.body.media.length === 1;
    });
    const info = await call(sibling, 'GET', '/api/v1/node');
    assert.equal(info.body.claimed, true, 'a sibling holding accounts is claimed');
    // The app remembers where Ada's account is kept.
    await page.goto(`${home.origin}/#/u/ada`);
    await page.getByRole('heading', { name: '@ada' }).waitFor();
    const replicas = await page.evaluate(() => JSON.parse(localStorage.getItem('edgenode.replicas')));
    assert.equal(replicas.handle, 'ada');
    assert.deepEqual(replicas.nodes.map((held) => held.id).sort(), [home.nodeId, sibling.nodeId].sort(), JSON.stringify(replicas));
  });

  step("says home can't be reached when it stops, and names the sibling", () => ({ ada }), async () => {
    const { page } = ada;
    await home.stop({ keepData: true });
    await page.getByRole('link', { name: 'Feed' }).first().click();
    const banner = page.getByRole('alert').filter({ hasText: "Can't reach" });
    await banner.waitFor();
    await banner.getByText(/also kept on/).waitFor();
    await hideToast(page);
    await page.screenshot({ path: join(SCREENSHOTS, 'phone-failover-banner-390.png') });
  });

  step("offers an Open link to the sibling's sign-in screen", () => ({ ada }), async () => {
    const banner = ada.page.getByRole('alert').filter({ hasText: "Can't reach" });
    const link = banner.getByRole('link', { name: /^Open / });
    assert.equal(await link.count(), 1, `one link, to the sibling: ${await banner.innerText()}`);
    const href = new URL(await link.getAttribute('href'));
    assert.equal(href.origin, sibling.origin);
    assert.equal(href.hash, '#/signin?handle=ada');
  });

  step("follows the banner's Open link to the sibling's sign-in", () => ({ ada }), async () => {
    const { page } = ada;
    const banner = page.getByRole('alert').filter({ hasText: "Can't reach" });
    const link = banner.getByRole('link', { name: /^Open / });
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), `${sibling.origin}/#/signin?handle=ada`);
    await hideToast(page);
    await page.screenshot({ path: join(SCREENSHOTS, 'phone-failover-banner-link-390.png') });
    await link.click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.equal(new URL(page.url()).origin, sibling.origin);
  });

  step('lets Ada sign in on the sibling and post, like and comment there', () => ({ ada }), async () => {
    const { page } = ada;
    assert.equal(await page.getByLabel('Handle').inputValue(), 'ada');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    const homeCard = page.locator('article.post').filter({ hasText: 'Posted at' });
    await homeCard.locator('.photo.loaded').waitFor();

    await homeCard.getByRole('button', { name: 'Like, 0 likes' }).click();
    await homeCard.getByRole('button', { name: 'Liked, 1 like' }).waitFor();
    await homeCard.getByRole('link', { name: '0 comments, open post' }).click();
    await page.getByLabel('Add a comment').fill('Still here while home is off');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.comments li').filter({ hasText: 'Still here while home is off' }).waitFor();

    const photo = await drawJpeg(page, join(scratch, 'sibling.jpg'), { width: 1200, height: 1600, seed: 6 });
    const siblingPostId = await post(page, sibling.origin, [photo], 'Posted at the #sibling');
    await page.locator('.photos-full .photo.loaded').waitFor();
    await page.goto(`${sibling.origin}/#/feed`);
    await page.locator('article.post').filter({ hasText: 'Posted at the' }).locator('.photo.loaded').waitFor();
    await screenshots(page, 'phone-failover-feed');
    assert.ok(siblingPostId);
  });

  step('brings what Ada did at the sibling home when home is back', () => ({ ada }), async (t) => {
    const started = Date.now();
    home = await startNode({ name: 'home', claimCode: CLAIM_CODE, dataDir: home.dataDir, listen: home.listen, onboardingListen: home.onboardingListen });
    const posts = await eventually('home holds the post made at the sibling, with its photo', REPLICATION_WAIT_MS, async () => {
      const answer = await call(home, 'GET', '/api/v1/users/ada/posts');
      const made = answer.status === 200 && answer.body.items.find((item) => item.caption === 'Posted at the #sibling');
      return made && made.media.length === 1 && made.media[0].width === 1200 ? answer.body.items : null;
    });
    const earlier = await eventually('home holds the like and the comment made at the sibling', REPLICATION_WAIT_MS, async () => {
      const answer = await call(home, 'GET', `/api/v1/posts/${homePostId}`);
      return answer.status === 200 && answer.body.like_count === 1 && answer.body.comment_count === 1 ? answer.body : null;
    });
    t.diagnostic(`home caught up ${Date.now() - started} ms after its restart: ${posts.length} posts, like_count ${earlier.like_count}, comment_count ${earlier.comment_count}`);
    assertNoBrokenRules(ada);
  });
});
