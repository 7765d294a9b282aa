// The web app end to end: a real node, headless Chromium, two neighbours.
// Alice claims her new node and posts two photos; Bob joins with her invite,
// follows her, sees the post with its thumbnail, likes it, comments, finds it by
// tag; Alice deletes it and it is gone for both. On the way: load time, bytes of
// JavaScript and CSS, requests only to the node, the offline banner, the service
// worker and manifest, screenshots of every main screen at 360 and 1280 px.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';

import { accessibilityViolations } from './lib/audit.mjs';
import { ARTIFACTS, DESKTOP, PHONE, gzipBytes, launchPerson, makeJpeg, screenshots, settle } from './lib/browser.mjs';
import { startNode } from './lib/node.mjs';
import { stepKeepingScreens } from './lib/scenario.mjs';

const CLAIM_CODE = 'CODE12345';
const PASSWORD = 'correct horse battery';
const CAPTION = 'Sunset at the #harbour with the neighbours';
const LOAD_MS_MAX = 1000;
const SCRIPT_AND_STYLE_GZIP_BYTES_MAX = 100 * 1024;

describe('the web app, as two neighbours use it', { timeout: 300_000 }, () => {
  let node, alice, bob, postId, inviteCode, failed = false;
  const scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-photos-'));
  const metrics = {};
  const photos = [join(scratch, 'harbour-1.jpg'), join(scratch, 'harbour-2.jpg'), join(scratch, 'harbour-3.jpg')];

  /** A step of the scenario; when it fails, both people's screens are kept. */
  const it = (name, body) => stepKeepingScreens(name, {
    prefix: '',
    people: () => ({ alice, bob }),
    onFailure: () => { failed = true; },
  }, body);

  before(async () => {
    node = await startNode({ name: 'web-test', claimCode: CLAIM_CODE });
    alice = await launchPerson({ trust: [node] });
    bob = await launchPerson({ trust: [node] });
  });

  after(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, 'metrics.json'), JSON.stringify(metrics, null, 2) + '\n');
    for (const person of [alice, bob]) if (person) await person.close();
    if (node) {
      if (failed) console.error(`the node's stderr:\n${node.stderr()}`);
      await node.stop();
    }
    rmSync(scratch, { recursive: true, force: true });
  });

  it('loads in under a second with little JavaScript and CSS, and asks to be claimed', async (t) => {
    const { page } = alice;
    const scriptsAndStyles = [];
    page.on('response', (response) => {
      if (['script', 'stylesheet'].includes(response.request().resourceType())) scriptsAndStyles.push(response);
    });
    const response = await page.goto(node.origin + '/');
    assert.equal(response.status(), 200);
    const headers = response.headers();
    assert.match(headers['content-type'], /^text\/html/);
    assert.equal(headers['cache-control'], 'no-cache');
    for (const directive of ["default-src 'self'", "connect-src 'self'", "img-src 'self' blob: data:"]) {
      assert.ok(headers['content-security-policy'].includes(directive), `CSP has ${directive}`);
    }
    await page.getByRole('heading', { name: 'Set up web-test' }).waitFor();

    const timing = await page.evaluate(() => performance.getEntriesByType('navigation')[0].toJSON());
    metrics.load_event_end_ms = Math.round(timing.loadEventEnd);
    metrics.dom_content_loaded_ms = Math.round(timing.domContentLoadedEventEnd);
    metrics.navigation_ms = Object.fromEntries(['connectStart', 'secureConnectionStart', 'connectEnd', 'requestStart', 'responseStart', 'responseEnd', 'domInteractive']
      .map((name) => [name, Math.round(timing[name])]));
    t.diagnostic(`navigation: DOMContentLoaded ${metrics.dom_content_loaded_ms} ms, load ${metrics.load_event_end_ms} ms`);
    assert.ok(timing.loadEventEnd > 0 && timing.loadEventEnd < LOAD_MS_MAX, `load took ${timing.loadEventEnd} ms`);

    // Everything the page ran or styled itself with, plus the service worker.
    const files = new Map();
    for (const each of scriptsAndStyles) files.set(new URL(each.url()).pathname, await each.body());
    const worker = await page.evaluate(() => fetch('/app/sw.js').then((answer) => answer.text()));
    files.set('/app/sw.js', Buffer.from(worker));
    for (const expected of ['/app/app.js', '/app/api.js', '/app/blurhash.js', '/app/app.css']) {
      assert.ok(files.has(expected), `${expected} was loaded: ${[...files.keys()]}`);
    }
    let total = 0;
    metrics.gzip_bytes = {};
    for (const [path, body] of files) {
      metrics.gzip_bytes[path] = gzipBytes(body);
      total += metrics.gzip_bytes[path];
    }
    metrics.script_and_style_gzip_bytes_total = total;
    metrics.script_and_style_bytes_total = [...files.values()].reduce((sum, body) => sum + body.length, 0);
    t.diagnostic(`JavaScript + CSS: ${metrics.script_and_style_bytes_total} bytes, ${total} bytes after gzip -9`);
    assert.ok(total < SCRIPT_AND_STYLE_GZIP_BYTES_MAX, `${total} bytes gzip-compressed`);

    // Camera-like test photos, drawn by the browser itself.
    await makeJpeg(page, photos[0], 0);
    await makeJpeg(page, photos[1], 1);
    await makeJpeg(page, photos[2], 2);
    await screenshots(page, '01-claim');
  });

  it('is installable: Chromium finds nothing missing, the manifest names an icon', async () => {
    const session = await alice.context.newCDPSession(alice.page);
    const { installabilityErrors } = await session.send('Page.getInstallabilityErrors');
    assert.deepEqual(installabilityErrors, []);
    const manifest = await session.send('Page.getAppManifest');
    assert.deepEqual(manifest.errors, [], JSON.stringify(manifest.errors));
    const parsed = JSON.parse(manifest.data);
    assert.equal(parsed.start_url, '/#/feed');
    assert.equal(parsed.display, 'standalone');
    assert.ok(parsed.icons.length > 0);
    const icon = await alice.page.evaluate((src) => fetch(src).then((answer) => [answer.status, answer.headers.get('content-type')]), parsed.icons[0].src);
    assert.deepEqual(icon, [200, 'image/svg+xml']);
    await session.detach();
  });

  it('lets Alice claim the node with the claim code, by keyboard alone', async () => {
    const { page } = alice;
    const focused = () => page.evaluate(() => {
      const element = document.activeElement;
      return element.getAttribute('name') || element.id || element.textContent.trim();
    });
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'Skip to content');
    await page.keyboard.press('Enter');
    assert.equal(await focused(), 'main');
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'claim');
    await page.keyboard.type('wrong-code');
    await page.keyboard.press('Tab');
    await page.keyboard.type('alice');
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByRole('alert').filter({ hasText: 'claim code is wrong' }).waitFor();
    assert.equal(await page.getByLabel('Admin handle').inputValue(), 'alice', 'a failed claim keeps what was typed');
    await page.getByLabel('Claim code').fill(CLAIM_CODE);
    await page.getByRole('button', { name: 'Claim this node' }).click();
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.getByText('Nothing here yet.').waitFor();
    assert.ok(await page.getByRole('link', { name: 'Admin' }).isVisible(), 'the admin sees the admin page in the navigation');
    await screenshots(page, '02-feed-empty');
  });

  it('uploads two photos with progress and posts them with a #tag', async () => {
    const { page } = alice;
    await page.getByRole('link', { name: 'New post' }).first().click();
    await page.getByRole('heading', { name: 'New post' }).waitFor();
    await page.locator('#photos').setInputFiles(photos.slice(0, 2));
    await page.locator('.upload[data-status="done"]').nth(1).waitFor();
    assert.deepEqual(await page.locator('.upload .status').allTextContents(), ['Uploaded', 'Uploaded']);
    assert.deepEqual(await page.locator('.upload progress').evaluateAll((bars) => bars.map((bar) => bar.value)), [1, 1]);
    await page.getByLabel('Caption').fill(CAPTION);
    await page.getByLabel('Everyone on the node').check();
    await screenshots(page, '03-upload');
    await page.getByRole('button', { name: 'Share' }).click();
    await page.waitForURL(/#\/post\/[0-9A-Za-z_-]+$/);
    postId = new URL(page.url()).hash.split('/').pop();
    await page.getByRole('link', { name: '#harbour', exact: true }).first().waitFor();
    assert.equal(await page.locator('.photos-full .photo').count(), 2);
    await settle(page);
    assert.equal(await page.locator('.photos-full .photo.loaded').count(), 2, 'both display images loaded');
    await screenshots(page, '04-post');
  });

  it('keeps the caption when an upload fails, and retries it', async () => {
    const { page, context } = alice;
    await page.goto(node.origin + '/#/upload');
    await page.getByRole('heading', { name: 'New post' }).waitFor();
    await page.getByLabel('Caption').fill('Draft about the #harbour');
    await context.setOffline(true);
    await page.locator('#photos').setInputFiles(photos[2]);
    await page.locator('.upload[data-status="failed"]').waitFor();
    assert.match(await page.locator('.upload .status').textContent(), /^Failed: Can't reach the node/);
    await page.getByRole('alert').filter({ hasText: "Can't reach" }).waitFor();
    await page.getByRole('button', { name: 'Share' }).click();
    await page.getByRole('alert').filter({ hasText: '1 photo did not upload' }).waitFor();
    await screenshots(page, '03-upload-failed');
    await context.setOffline(false);
    await page.locator('#banner').waitFor({ state: 'hidden' });
    assert.equal(await page.getByLabel('Caption').inputValue(), 'Draft about the #harbour');
    await page.getByRole('button', { name: 'Retry harbour-3.jpg' }).click();
    await page.locator('.upload[data-status="done"]').waitFor();
    assert.equal(await page.locator('.upload .status').textContent(), 'Uploaded');
    assert.equal(await page.getByLabel('Caption').inputValue(), 'Draft about the #harbour');
    await page.getByRole('button', { name: 'Remove harbour-3.jpg' }).click();
    await page.getByLabel('Caption').fill('');
  });

  it('knows a photo it already has: a re-upload sends nothing', async () => {
    const { page, requests } = alice;
    const before = requests.length;
    await page.locator('#photos').setInputFiles(photos[0]);
    await page.locator('.upload[data-status="done"]').waitFor();
    assert.equal(await page.locator('.upload .status').textContent(), 'Already on the node: nothing to send');
    const sent = requests.slice(before).filter((url) => /\/api\/v1\/media(\/[0-9a-f]{64})?$/.test(new URL(url).pathname));
    assert.deepEqual(sent, [], 'no upload request');
    await page.getByRole('button', { name: 'Remove harbour-1.jpg' }).click();
    assert.equal(await page.locator('.upload').count(), 0);
  });

  it('shows the admin page with node facts and makes an invite', async () => {
    const { page } = alice;
    await page.getByRole('link', { name: 'Admin' }).first().click();
    await page.getByRole('heading', { name: 'Admin' }).waitFor();
    const facts = await page.locator('.facts').innerText();
    for (const expected of ['web-test', node.pin, node.nodeId, 'by invite']) assert.ok(facts.includes(expected), `${expected} in ${facts}`);
    await page.getByText('Discovery (mDNS) is off on this node.').waitFor();
    await page.getByRole('button', { name: 'Create invite' }).click();
    inviteCode = (await page.locator('.invite-code').first().textContent()).trim();
    assert.ok(inviteCode.length >= 6, inviteCode);
    await page.getByLabel('Handle starts with').fill('al');
    await page.getByRole('button', { name: 'Find' }).click();
    await page.getByRole('cell', { name: '@alice' }).waitFor();
    await screenshots(page, '05-admin');
  });

  it('lets Bob join with the invite and follow Alice', async () => {
    const { page } = bob;
    await page.goto(`${node.origin}/#/join?code=${encodeURIComponent(inviteCode)}`);
    await page.getByRole('heading', { name: 'Join web-test' }).waitFor();
    assert.equal(await page.getByLabel('Invite code').inputValue(), inviteCode);
    await page.getByLabel('Choose a handle').fill('bob');
    await page.getByLabel('Choose a password').fill(PASSWORD);
    await screenshots(page, '06-join');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'Search' }).waitFor();
    await page.getByLabel('Posts and people').fill('alice');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.getByRole('button', { name: 'Follow @alice' }).click();
    await page.getByRole('button', { name: 'Unfollow @alice' }).waitFor();
    assert.ok(!(await page.getByRole('link', { name: 'Admin' }).isVisible()), 'no admin page for Bob');
  });

  it("shows Bob Alice's post in his feed with its thumbnail", async () => {
    const { page } = bob;
    await page.getByRole('link', { name: 'Feed' }).first().click();
    const card = page.locator('article.post').filter({ hasText: 'Sunset at the' });
    await card.waitFor();
    await card.locator('.photo.loaded').first().waitFor();
    const sizes = await card.locator('.photo img').evaluateAll((images) => images.map((image) => [image.naturalWidth, image.naturalHeight]));
    assert.equal(sizes.length, 2);
    for (const [width, height] of sizes) assert.ok(width > 0 && width <= 256 && height <= 256, `a thumbnail: ${width}x${height}`);
    assert.equal(await card.locator('canvas.blur').count(), 2, 'blurhash placeholders painted');
    // The placeholder is the photo's blur: their average colours agree.
    const colours = await card.locator('.photo').first().evaluate((frame) => {
      const average = (source, width, height) => {
        const canvas = document.createElement('canvas');
        canvas.width = 16;
        canvas.height = 16;
        const context = canvas.getContext('2d');
        context.drawImage(source, 0, 0, width, height, 0, 0, 16, 16);
        const pixels = context.getImageData(0, 0, 16, 16).data;
        const sums = [0, 0, 0];
        for (let index = 0; index < pixels.length; index += 4) for (let channel = 0; channel < 3; channel++) sums[channel] += pixels[index + channel];
        return sums.map((sum) => Math.round(sum / 256));
      };
      const blur = frame.querySelector('canvas');
      const image = frame.querySelector('img');
      return [average(blur, blur.width, blur.height), average(image, image.naturalWidth, image.naturalHeight)];
    });
    const [blur, thumbnail] = colours;
    assert.ok(blur.every((value, channel) => Math.abs(value - thumbnail[channel]) < 40), `placeholder ${blur} vs thumbnail ${thumbnail}`);
    assert.ok(await card.getByRole('link', { name: '#harbour', exact: true }).isVisible());
    await screenshots(page, '07-feed');
    // What a slow link shows first: the placeholders.
    await page.evaluate(() => document.querySelectorAll('.photo').forEach((frame) => frame.classList.remove('loaded')));
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(ARTIFACTS, '07-feed-placeholders-360.png') });
    await page.evaluate(() => document.querySelectorAll('.photo').forEach((frame) => frame.classList.add('loaded')));
  });

  it('lets Bob like and comment, and Alice sees both', async () => {
    const { page } = bob;
    const card = page.locator('article.post').filter({ hasText: 'Sunset at the' });
    await card.getByRole('button', { name: 'Like, 0 likes' }).click();
    await card.getByRole('button', { name: 'Liked, 1 like' }).waitFor();
    assert.equal(await card.locator('.like').getAttribute('aria-pressed'), 'true');
    await card.getByRole('link', { name: '0 comments, open post' }).click();
    await page.getByLabel('Add a comment').fill('Lovely light!');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.comments li').filter({ hasText: 'Lovely light!' }).waitFor();
    await screenshots(page, '08-post-comment');

    await alice.page.goto(`${node.origin}/#/post/${postId}`);
    await alice.page.locator('.comments li').filter({ hasText: 'Lovely light!' }).waitFor();
    assert.ok(await alice.page.getByRole('button', { name: 'Like, 1 like' }).isVisible());
  });

  it('passes an accessibility audit on every screen, phone and desktop', async () => {
    const auditor = await launchPerson({ trust: [node], bypassCSP: true });
    const session = await alice.page.evaluate(() => localStorage.getItem('edgenode.session'));
    const screens = ['#/feed', `#/post/${postId}`, '#/upload', '#/admin', `#/search?q=${encodeURIComponent('#harbour')}`, '#/u/alice', '#/signin', '#/join'];
    const found = [];
    for (const screen of screens) {
      await auditor.page.goto(`${node.origin}/${screen}`);
      await auditor.page.evaluate((value) => {
        if (location.hash === '#/signin' || location.hash === '#/join') localStorage.removeItem('edgenode.session');
        else localStorage.setItem('edgenode.session', value);
      }, session);
      await auditor.page.reload();
      await auditor.page.locator('main h1').waitFor();
      for (const viewport of [PHONE, DESKTOP]) {
        await auditor.page.setViewportSize(viewport);
        await settle(auditor.page);
        for (const violation of await accessibilityViolations(auditor.page)) found.push(`${screen} at ${viewport.width} px: ${violation}`);
      }
    }
    await auditor.close();
    assert.deepEqual(found, []);
  });

  it('finds the post by its tag and shows profiles', async () => {
    const { page } = bob;
    await page.goto(`${node.origin}/#/search?q=${encodeURIComponent('#harbour')}`);
    const tile = page.locator(`a.tile[href="#/post/${postId}"]`);
    await tile.waitFor();
    await tile.locator('.photo.loaded').waitFor();
    await screenshots(page, '09-search');

    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('heading', { name: '@alice' }).waitFor();
    await page.getByText('1 follower').waitFor();
    assert.ok(await page.getByRole('button', { name: 'Unfollow @alice' }).isVisible());
    await page.locator(`a.tile[href="#/post/${postId}"] .photo.loaded`).waitFor();
    await screenshots(page, '10-profile');
  });

  it('downloads her data from her profile as one archive', async () => {
    const { page } = alice;
    const before = page.url();
    await page.goto(`${node.origin}/#/u/alice`);
    const button = page.getByRole('button', { name: 'Download my data' });
    await button.waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()]);
    assert.match(download.suggestedFilename(), /^edgenode-export-alice-\d{4}-\d{2}-\d{2}\.tar$/);
    const archive = readFileSync(await download.path());
    // A ustar archive whose first entry is the manifest (docs/export.md).
    assert.equal(archive.subarray(0, 13).toString(), 'manifest.json');
    assert.equal(archive.subarray(257, 262).toString(), 'ustar');
    assert.ok(archive.includes(Buffer.from('"caption": "' + CAPTION + '"')), 'posts.json holds her caption');
    // Back where the next steps expect her.
    await page.goto(before);
    await page.locator('main h1').waitFor();
  });

  it('opens without the network from its service worker and says the node is unreachable', async () => {
    const { page, context } = bob;
    await context.setOffline(true);
    await page.reload();
    const banner = page.getByRole('alert').filter({ hasText: "Can't reach" });
    await banner.waitFor();
    await page.getByText('The app will show this as soon as the node answers').waitFor();
    await screenshots(page, '11-unreachable');
    await banner.getByRole('button', { name: 'Retry' }).click();
    await banner.waitFor();
    // Back on the network, the app tries again by itself.
    await context.setOffline(false);
    await page.getByRole('heading', { name: '@alice' }).waitFor();
    assert.ok(await page.locator('#banner').isHidden());
  });

  it('retries when the node is back after a restart', async () => {
    const { page } = bob;
    await node.stop({ keepData: true });
    await page.getByRole('link', { name: 'Feed' }).first().click();
    const banner = page.getByRole('alert').filter({ hasText: "Can't reach" });
    await banner.waitFor();
    node = await startNode({ name: 'web-test', claimCode: CLAIM_CODE, dataDir: node.dataDir, listen: node.listen });
    await banner.getByRole('button', { name: 'Retry' }).click();
    await page.locator('article.post').filter({ hasText: 'Sunset at the' }).waitFor();
    assert.ok(await page.locator('#banner').isHidden());
  });

  it('lets Alice delete the post, and it is gone for everyone', async () => {
    const { page } = alice;
    await page.getByRole('button', { name: 'Delete post' }).click();
    await page.getByText('Delete this post for everyone?').waitFor();
    await screenshots(page, '12-delete');
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.getByText('Nothing here yet.').waitFor();

    await bob.page.getByRole('link', { name: 'Feed' }).first().click();
    await bob.page.getByText('Nothing here yet.').waitFor();
    await bob.page.goto(`${node.origin}/#/search?q=${encodeURIComponent('#harbour')}`);
    await bob.page.getByText('No public posts match').waitFor();
    const status = await bob.page.evaluate((id) => fetch('/api/v1/posts/' + id).then((answer) => answer.status), postId);
    assert.equal(status, 404);
  });

  it('keeps only the app shell in the service worker cache, never API answers', async () => {
    const { page } = alice;
    const cached = await page.evaluate(async () => {
      const registration = await Promise.race([
        navigator.serviceWorker.ready,
        new Promise((resolve) => setTimeout(() => resolve(null), 5000)),
      ]);
      if (!registration) return null;
      const urls = [];
      for (const name of await caches.keys()) {
        for (const request of await (await caches.open(name)).keys()) urls.push(new URL(request.url).pathname);
      }
      return urls;
    });
    assert.ok(cached, 'the service worker is registered');
    assert.ok(cached.includes('/') && cached.includes('/app/app.js'), JSON.stringify(cached));
    assert.deepEqual(cached.filter((path) => path !== '/' && !path.startsWith('/app/')), []);
  });

  it('talked to no host but the node, and broke no page rule', async () => {
    for (const person of [alice, bob]) {
      const elsewhere = person.requests.filter((url) => !url.startsWith(node.origin + '/') && !/^(blob|data):/.test(url));
      assert.deepEqual(elsewhere, []);
      assert.ok(person.requests.some((url) => url.includes('/api/v1/media/')), 'photos came from the node');
      const broken = person.problems.filter((text) => /page error|Content Security Policy|Trusted Type/i.test(text));
      assert.deepEqual(broken, []);
    }
  });
});
