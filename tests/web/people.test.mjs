// People in the web app, end to end: a real node, headless Chromium.
// Alice posts a photo and edits her profile (display name, bio, a new photo as her
// avatar); Bob sees her name and avatar on her post and her profile, and likes the
// post. Alice's bell then counts 1 unread (asked again on focus, and on a reload);
// opening it shows "bob liked your post" and clears the count, on the node too. A
// second like collapses into "carol and bob liked your post". Carol deletes her
// account with her password (a wrong one deletes nothing) and cannot sign in again.
// Every new screen passes axe (WCAG A/AA); screenshots go to artifacts/people-*.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';

import { launchPerson, makeJpeg, screenshots } from './lib/browser.mjs';
import { startNode } from './lib/node.mjs';
import { audit, callFrom, claimNode, joinWithInvite, signIn, stepKeepingScreens } from './lib/scenario.mjs';

const CLAIM_CODE = 'CODE12345';
const PASSWORD = 'correct horse battery';
const BOB_PASSWORD = 'bob walks the long pier';
const CAROL_PASSWORD = 'carol counts the lighthouse steps';
const DISPLAY_NAME = 'Alice Liddell';
const BIO = 'Harbour light at dusk, mostly.\nAmsterdam Noord.';
/** The avatar derivative: the photo's centre square fitted into 256 × 256 (docs/api.md, "Profiles"). */
const AVATAR_PIXELS = 256;
/** A page problem that means the app broke a rule of its page (CSP, Trusted Types) or threw. */
const BROKEN_RULE = /page error|Content Security Policy|Trusted Type/i;

describe('profiles, notifications and deleting an account in the web app', { timeout: 300_000 }, () => {
  let node, alice, bob, carol, auditor, scratch, postId, avatarId, failed = false;
  const photos = {};

  /** A step of the scenario; when it fails, everyone's screen is kept. */
  const it = (name, body) => stepKeepingScreens(name, {
    prefix: 'people-',
    people: () => ({ alice, bob, carol, auditor }),
    onFailure: () => { failed = true; },
  }, body);

  /** `{src, width}` of the profile photo in the first `.avatar` under `scope`, once it has loaded. */
  async function loadedAvatar(scope) {
    const image = scope.locator('.avatar img').first();
    await image.waitFor({ state: 'attached' });
    await image.evaluate((element) => (element.complete ? null : new Promise((resolve) => {
      element.addEventListener('load', resolve, { once: true });
      element.addEventListener('error', resolve, { once: true });
    })));
    return image.evaluate((element) => ({ src: new URL(element.src).pathname, width: element.naturalWidth, height: element.naturalHeight }));
  }

  /** The bell in the top bar, by the name a screen reader hears. */
  const bell = (page, name) => page.getByRole('link', { name, exact: true });

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'edgenode-web-people-'));
    node = await startNode({ name: 'people-test', claimCode: CLAIM_CODE });
    alice = await launchPerson({ trust: [node] });
    bob = await launchPerson({ trust: [node] });
    carol = await launchPerson({ trust: [node] });
    // axe builds DOM in ways Trusted Types refuse: it audits in its own browser.
    auditor = await launchPerson({ trust: [node], bypassCSP: true });
  });

  after(async () => {
    for (const person of [alice, bob, carol, auditor]) if (person) await person.close();
    if (node) {
      if (failed) console.error(`the node's stderr:\n${node.stderr()}`);
      await node.stop();
    }
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('lets Alice claim the node, Bob and Carol join, and Alice post a photo', async () => {
    const { page } = alice;
    await claimNode(page, node, CLAIM_CODE, 'alice', PASSWORD);
    for (const [person, handle, password] of [[bob, 'bob', BOB_PASSWORD], [carol, 'carol', CAROL_PASSWORD]]) {
      const invite = await callFrom(page, 'POST', '/api/v1/invites');
      assert.equal(invite.status, 201);
      await joinWithInvite(person.page, node.origin, invite.body.code, handle, password);
    }

    photos.post = await makeJpeg(page, join(scratch, 'quay.jpg'), 0);
    photos.avatar = await makeJpeg(page, join(scratch, 'me.jpg'), 1);
    await page.getByRole('link', { name: 'New post' }).first().click();
    await page.locator('#photos').setInputFiles(photos.post);
    await page.locator('.upload[data-status="done"]').waitFor();
    await page.getByLabel('Caption').fill('The quay this morning');
    await page.getByRole('button', { name: 'Share' }).click();
    await page.waitForURL(/#\/post\/[0-9A-Za-z_-]+$/);
    postId = new URL(page.url()).hash.split('/').pop();
    // Nobody has done anything to Alice yet: the bell names no count.
    await bell(page, 'Notifications').waitFor();
  });

  it('lets Alice edit her profile: a display name, a bio, and a new photo as her avatar', async () => {
    const { page } = alice;
    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('link', { name: 'Edit profile' }).click();
    await page.getByRole('heading', { name: 'Edit profile' }).waitFor();
    assert.equal(await page.getByLabel('Display name').inputValue(), 'alice', 'a display name starts as the handle');
    assert.ok(await page.getByRole('button', { name: 'Remove photo' }).isHidden(), 'no photo to remove yet');

    // A display name of spaces alone is refused here, before the node is asked.
    await page.getByLabel('Display name').fill('   ');
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByRole('alert').filter({ hasText: 'Please write a display name' }).waitFor();

    await page.getByLabel('Display name').fill(DISPLAY_NAME);
    await page.getByLabel('Bio').fill(BIO);
    await page.getByText(`${BIO.length} of 300 characters.`).waitFor();
    await page.locator('#avatar-photo').setInputFiles(photos.avatar);
    await page.getByRole('status').filter({ hasText: 'Photo ready: save to use it.' }).waitFor();
    assert.ok(await page.getByRole('button', { name: 'Remove photo' }).isVisible());
    await screenshots(page, 'people-01-edit-profile');

    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByRole('heading', { name: DISPLAY_NAME }).waitFor();
    const profile = page.locator('.profile');
    await profile.getByText('@alice', { exact: true }).waitFor();
    assert.equal(await profile.locator('.bio').innerText(), BIO, 'the bio keeps its line break');
    const shown = await loadedAvatar(profile);
    assert.match(shown.src, /^\/api\/v1\/media\/[0-9a-f]{64}\/avatar$/);
    assert.deepEqual([shown.width, shown.height], [AVATAR_PIXELS, AVATAR_PIXELS], 'the avatar derivative loaded');
    avatarId = shown.src.split('/')[4];
    const me = await callFrom(page, 'GET', '/api/v1/users/alice');
    assert.deepEqual([me.body.display_name, me.body.bio, me.body.avatar?.id], [DISPLAY_NAME, BIO, avatarId], 'the node keeps what was saved');
    await screenshots(page, 'people-02-profile');
  });

  it('shows Bob her name and avatar on her post and her profile', async () => {
    const { page } = bob;
    await page.goto(`${node.origin}/#/post/${postId}`);
    const byline = page.locator('article.post .byline');
    await byline.getByRole('link', { name: DISPLAY_NAME }).waitFor();
    await byline.getByText('@alice', { exact: true }).waitFor();
    const onPost = await loadedAvatar(byline);
    assert.deepEqual([onPost.src, onPost.width], [`/api/v1/media/${avatarId}/avatar`, AVATAR_PIXELS]);
    await screenshots(page, 'people-03-post-by-alice');

    await byline.getByRole('link', { name: DISPLAY_NAME }).click();
    await page.getByRole('heading', { name: DISPLAY_NAME }).waitFor();
    const onProfile = await loadedAvatar(page.locator('.profile'));
    assert.deepEqual([onProfile.src, onProfile.width], [`/api/v1/media/${avatarId}/avatar`, AVATAR_PIXELS]);
    assert.equal(await page.getByRole('link', { name: 'Edit profile' }).count(), 0, 'only Alice edits her profile');
    // Anyone may load an avatar, and only the avatar: the photo's other variants keep their rules.
    const anonymous = await page.evaluate(async (id) => Promise.all(['avatar', 'display'].map((variant) =>
      fetch(`/api/v1/media/${id}/${variant}`).then((answer) => answer.status))), avatarId);
    assert.deepEqual(anonymous, [200, 404]);
  });

  it('counts Bob’s like on Alice’s bell when her page gets focus, and opening it reads it', async () => {
    await bob.page.goto(`${node.origin}/#/post/${postId}`);
    await bob.page.getByRole('button', { name: 'Like, 0 likes' }).click();
    await bob.page.getByRole('button', { name: 'Liked, 1 like' }).waitFor();

    const { page } = alice;
    await page.goto(`${node.origin}/#/feed`);
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    // The app asked when it started; it asks again on focus (and every 30 s in view).
    const asked = page.waitForResponse((response) => response.url().endsWith('/api/v1/notifications/unread'));
    await page.evaluate(() => window.dispatchEvent(new Event('focus')));
    await asked;
    await bell(page, 'Notifications, 1 unread').waitFor();
    assert.equal(await page.locator('#bell .count').textContent(), '1');
    await page.locator('#bell-news').filter({ hasText: '1 unread notification.' }).waitFor();
    await screenshots(page, 'people-04-bell');

    await bell(page, 'Notifications, 1 unread').click();
    await page.getByRole('heading', { name: 'Notifications' }).waitFor();
    const item = page.getByRole('list', { name: 'Notifications' }).getByRole('listitem').first();
    await item.getByText('New', { exact: true }).waitFor();
    assert.equal(await item.locator('.sentence').textContent(), 'bob liked your post');
    await bell(page, 'Notifications').waitFor();
    assert.equal(await page.locator('#bell').textContent(), '', 'the badge is gone, and nothing else is written there');
    assert.equal((await callFrom(page, 'GET', '/api/v1/notifications/unread')).body.count, 0, 'read on the node too');
    await page.locator('.notification-thumb img[src^="blob:"]').waitFor();
    await screenshots(page, 'people-05-notifications');

    await item.getByRole('link', { name: 'your post' }).click();
    await page.waitForURL(new RegExp(`#/post/${postId}$`));
    await page.getByRole('button', { name: 'Like, 1 like' }).waitFor();
  });

  it('collapses a second like into one group, counted again after a reload', async () => {
    await carol.page.goto(`${node.origin}/#/post/${postId}`);
    await carol.page.getByRole('button', { name: 'Like, 1 like' }).click();
    await carol.page.getByRole('button', { name: 'Liked, 2 likes' }).waitFor();

    const { page } = alice;
    await page.goto(`${node.origin}/#/feed`);
    await page.reload();
    await bell(page, 'Notifications, 1 unread').waitFor();
    await bell(page, 'Notifications, 1 unread').click();
    const items = page.getByRole('list', { name: 'Notifications' }).getByRole('listitem');
    await items.first().getByText('New', { exact: true }).waitFor();
    assert.equal(await items.count(), 1, 'one group per post and kind');
    assert.equal(await items.first().locator('.sentence').textContent(), 'carol and bob liked your post');
    await bell(page, 'Notifications').waitFor();
  });

  it('lets Carol delete her account with her password, after a clear question, and she cannot sign in again', async () => {
    const { page } = carol;
    await page.goto(`${node.origin}/#/account`);
    const card = page.getByRole('region', { name: 'Delete your account' });
    await card.getByText('It cannot be undone.').waitFor();
    await card.getByLabel('Your password').fill('not my password at all');
    await card.getByRole('button', { name: 'Delete my account' }).click();
    await card.getByText('Delete @carol and everything in it, for good?').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the question takes focus on its safe answer');
    await card.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Delete my account');

    await card.getByRole('button', { name: 'Delete my account' }).click();
    await card.getByRole('button', { name: 'Delete for good' }).click();
    await card.getByRole('alert').filter({ hasText: 'That password is not right: nothing was deleted.' }).waitFor();
    assert.equal((await callFrom(page, 'GET', '/api/v1/users/carol')).status, 200, 'a wrong password deletes nothing');

    await card.getByLabel('Your password').fill(CAROL_PASSWORD);
    await card.getByRole('button', { name: 'Delete my account' }).click();
    await card.getByRole('button', { name: 'Delete for good' }).waitFor();
    await screenshots(page, 'people-06-delete-confirm');
    await card.getByRole('button', { name: 'Delete for good' }).click();
    await page.getByRole('heading', { name: 'Your account is deleted' }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('edgenode.session')), null, 'the browser forgot the session');
    await screenshots(page, 'people-07-deleted');

    await signIn(page, node.origin, 'carol', CAROL_PASSWORD);
    await page.getByRole('alert').filter({ hasText: 'wrong handle or password' }).waitFor();
    assert.equal(await page.getByRole('heading', { name: 'Sign in' }).count(), 1, 'still on the sign-in screen');
    const profile = await page.evaluate(() => fetch('/api/v1/users/carol').then((answer) => answer.status));
    assert.equal(profile, 404, 'her profile is gone');

    // Her like went with her: Alice's post counts Bob's alone.
    await bob.page.goto(`${node.origin}/#/post/${postId}`);
    await bob.page.getByRole('button', { name: 'Liked, 1 like' }).waitFor();
  });

  it('passes an accessibility audit on each new screen and state', async () => {
    // Something unread, so the bell shows its count while audited.
    const comment = await callFrom(bob.page, 'POST', `/api/v1/posts/${postId}/comments`, { text: 'Lovely light!' });
    assert.equal(comment.status, 201);

    const { page } = auditor;
    const found = [];
    await signIn(page, node.origin, 'alice', PASSWORD);
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('heading', { name: DISPLAY_NAME }).waitFor();
    await bell(page, 'Notifications, 1 unread').waitFor();
    await loadedAvatar(page.locator('.profile'));
    found.push(...await audit(page, '#/u/alice (unread)'));

    await page.goto(`${node.origin}/#/post/${postId}`);
    await page.locator('.comments').getByText('Lovely light!').waitFor();
    found.push(...await audit(page, '#/post (bylines)'));

    await page.goto(`${node.origin}/#/edit-profile`);
    await page.getByRole('heading', { name: 'Edit profile' }).waitFor();
    found.push(...await audit(page, '#/edit-profile'));
    await page.locator('#avatar-photo').setInputFiles(photos.post);
    await page.getByRole('status').filter({ hasText: 'Photo ready' }).waitFor();
    await page.getByLabel('Display name').fill(' ');
    await page.getByRole('button', { name: 'Save profile' }).click();
    await page.getByRole('alert').filter({ hasText: 'Please write a display name' }).waitFor();
    found.push(...await audit(page, '#/edit-profile (new photo, refused)'));

    await bell(page, 'Notifications, 1 unread').click();
    await page.getByRole('list', { name: 'Notifications' }).getByRole('listitem').nth(1).waitFor();
    await page.locator('.notification-thumb img[src^="blob:"]').first().waitFor();
    found.push(...await audit(page, '#/notifications'));

    await page.goto(`${node.origin}/#/account`);
    const card = page.getByRole('region', { name: 'Delete your account' });
    await card.getByLabel('Your password').fill(PASSWORD);
    await card.getByRole('button', { name: 'Delete my account' }).click();
    await card.getByRole('button', { name: 'Delete for good' }).waitFor();
    found.push(...await audit(page, '#/account (delete, confirming)'));
    await card.getByRole('button', { name: 'Cancel' }).click();

    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.ok(await page.locator('#bell').isHidden(), 'no bell for the signed out');
    await page.goto(`${node.origin}/#/goodbye?handle=carol`);
    await page.getByRole('heading', { name: 'Your account is deleted' }).waitFor();
    found.push(...await audit(page, '#/goodbye'));
    assert.deepEqual(found, []);
  });

  it('broke no rule of the page (CSP, Trusted Types) and threw nothing', async () => {
    for (const [who, person] of [['alice', alice], ['bob', bob], ['carol', carol]]) {
      assert.deepEqual(person.problems.filter((text) => BROKEN_RULE.test(text)), [], who);
    }
  });
});

// Follow requests, blocking, reporting and hiding, end to end: Alice locks her
// account; Bob's follow waits in her follow requests until she approves it there,
// Dave's she turns down. Bob reports her post; on the admin page Alice finds the
// report, hides the post (Bob then gets 404 for it) and resolves the report. She
// blocks Bob from his profile, after a question, and Bob's follow is refused until
// she unblocks him. Every new screen and state passes axe.
describe('follow requests, blocking, reporting and hiding in the web app', { timeout: 300_000 }, () => {
  let node, alice, bob, auditor, postId, failed = false;
  const DAVE_PASSWORD = 'dave reads the tide tables';
  const REASON = 'Selling fake tickets to the ferry';

  const it = (name, body) => stepKeepingScreens(name, {
    prefix: 'safety-',
    people: () => ({ alice, bob, auditor }),
    onFailure: () => { failed = true; },
  }, body);

  before(async () => {
    node = await startNode({ name: 'safety-test', claimCode: CLAIM_CODE });
    alice = await launchPerson({ trust: [node] });
    bob = await launchPerson({ trust: [node] });
    auditor = await launchPerson({ trust: [node], bypassCSP: true });
  });

  after(async () => {
    for (const person of [alice, bob, auditor]) if (person) await person.close();
    if (node) {
      if (failed) console.error(`the node's stderr:\n${node.stderr()}`);
      await node.stop();
    }
  });

  let daveToken;

  it('lets Alice claim the node, lock her account and post; Bob and Dave join', async () => {
    const { page } = alice;
    await claimNode(page, node, CLAIM_CODE, 'alice', PASSWORD);
    const invite = await callFrom(page, 'POST', '/api/v1/invites');
    await joinWithInvite(bob.page, node.origin, invite.body.code, 'bob', BOB_PASSWORD);
    const second = await callFrom(page, 'POST', '/api/v1/invites');
    const dave = await page.evaluate(async ({ code, password }) => {
      const answer = await fetch('/api/v1/accounts', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ handle: 'dave', password, invite: code }) });
      return { status: answer.status, body: await answer.json() };
    }, { code: second.body.code, password: DAVE_PASSWORD });
    assert.equal(dave.status, 201, JSON.stringify(dave.body));
    daveToken = dave.body.token;
    assert.equal((await callFrom(page, 'PATCH', '/api/v1/me/profile', { locked: true })).status, 200);
    const post = await callFrom(page, 'POST', '/api/v1/posts', { caption: 'Ferry to the island at noon', visibility: 'public' });
    assert.equal(post.status, 201);
    postId = post.body.id;
  });

  it('lets Alice approve Bob’s follow request and turn down Dave’s', async () => {
    await bob.page.goto(`${node.origin}/#/u/alice`);
    await bob.page.getByRole('button', { name: 'Follow @alice' }).click();
    await bob.page.getByRole('button', { name: 'Unfollow @alice' }).waitFor();
    assert.equal((await callFrom(alice.page, 'PUT', '/api/v1/users/alice/follow', {}, daveToken)).status, 200);

    const { page } = alice;
    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('link', { name: 'Follow requests' }).click();
    await page.getByRole('heading', { name: 'Follow requests' }).waitFor();
    const list = page.getByRole('list', { name: 'Follow requests' });
    await list.getByRole('link', { name: 'bob' }).waitFor();
    await screenshots(page, 'safety-01-follow-requests');
    await list.getByRole('button', { name: 'Approve bob' }).click();
    await list.getByRole('status').filter({ hasText: '@bob now follows you.' }).waitFor();
    await list.getByRole('button', { name: 'Reject dave' }).click();
    await list.getByRole('status').filter({ hasText: 'You turned down @dave.' }).waitFor();
    const asBob = await callFrom(bob.page, 'GET', '/api/v1/users/alice');
    assert.equal(asBob.body.follow_status, 'following');
    const requests = await callFrom(page, 'GET', '/api/v1/me/follow-requests');
    assert.deepEqual(requests.body.items, [], 'nobody waits any more');
  });

  it('lets Bob report Alice’s post with a reason', async () => {
    const { page } = bob;
    await page.goto(`${node.origin}/#/post/${postId}`);
    await page.getByRole('button', { name: 'Report' }).click();
    await page.getByLabel('Why are you reporting this post?').fill(REASON);
    await screenshots(page, 'safety-02-report');
    await page.getByRole('button', { name: 'Send report' }).click();
    await page.getByRole('status').filter({ hasText: 'Thank you: the admins will look at it.' }).waitFor();
    assert.equal((await callFrom(page, 'GET', '/api/v1/admin/reports')).status, 403, 'reports are for admins');
  });

  it('shows Alice the report on the admin page, where she hides the post and resolves the report', async () => {
    const { page } = alice;
    await page.goto(`${node.origin}/#/admin`);
    const reports = page.getByRole('list', { name: 'Open reports' });
    await reports.getByText(REASON).waitFor();
    await screenshots(page, 'safety-03-reports');
    await reports.getByRole('button', { name: 'Hide the post by @alice' }).click();
    await reports.getByRole('button', { name: 'Show the post by @alice' }).waitFor();
    await reports.getByText('Hidden', { exact: true }).waitFor();
    assert.equal((await callFrom(bob.page, 'GET', `/api/v1/posts/${postId}`)).status, 404, 'hidden from Bob');
    assert.equal((await callFrom(page, 'GET', `/api/v1/posts/${postId}`)).status, 200, 'its author still sees it');
    await reports.getByRole('button', { name: 'Show the post by @alice' }).click();
    await reports.getByRole('button', { name: 'Hide the post by @alice' }).waitFor();
    assert.equal((await callFrom(bob.page, 'GET', `/api/v1/posts/${postId}`)).status, 200, 'shown again');
    await reports.getByRole('button', { name: 'Resolve the report by @bob' }).click();
    await reports.getByRole('status').filter({ hasText: 'Resolved the report' }).waitFor();
    const open = await callFrom(page, 'GET', '/api/v1/admin/reports');
    assert.deepEqual(open.body.items, [], 'no open report left');
  });

  it('lets Alice block Bob from his profile after a question, and unblock him', async () => {
    const { page } = alice;
    await page.goto(`${node.origin}/#/u/bob`);
    await page.getByRole('button', { name: 'Block @bob' }).click();
    await page.getByText('Block @bob? Follows between you end.').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the question takes focus on its safe answer');
    await screenshots(page, 'safety-04-block-question');
    await page.getByRole('button', { name: 'Block', exact: true }).click();
    await page.getByRole('button', { name: 'Unblock @bob' }).waitFor();
    const follow = await callFrom(bob.page, 'PUT', '/api/v1/users/alice/follow', {});
    assert.deepEqual([follow.status, follow.body.error.code], [403, 'blocked']);
    const seen = await callFrom(bob.page, 'GET', '/api/v1/users/alice');
    assert.equal(seen.body.followed_by_me, false, 'his follow ended');
    await page.reload();
    await page.getByRole('button', { name: 'Unblock @bob' }).click();
    await page.getByRole('button', { name: 'Block @bob' }).waitFor();
    assert.equal((await callFrom(bob.page, 'PUT', '/api/v1/users/alice/follow', {})).status, 200, 'he may ask again');
  });

  it('passes an accessibility audit on each new screen and state', async () => {
    // Something to show: Dave asks again, Bob reports again.
    assert.equal((await callFrom(alice.page, 'DELETE', '/api/v1/users/alice/follow', undefined, daveToken)).status, 200);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal((await callFrom(alice.page, 'PUT', '/api/v1/users/alice/follow', {}, daveToken)).status, 200);
    assert.equal((await callFrom(bob.page, 'POST', `/api/v1/posts/${postId}/report`, { reason: REASON })).status, 201);

    const { page } = auditor;
    const found = [];
    await signIn(page, node.origin, 'alice', PASSWORD);
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.goto(`${node.origin}/#/follow-requests`);
    await page.getByRole('list', { name: 'Follow requests' }).getByRole('button', { name: 'Approve dave' }).waitFor();
    found.push(...await audit(page, '#/follow-requests'));
    await page.goto(`${node.origin}/#/admin`);
    await page.getByRole('list', { name: 'Open reports' }).getByText(REASON).waitFor();
    found.push(...await audit(page, '#/admin (reports)'));
    await page.goto(`${node.origin}/#/u/bob`);
    await page.getByRole('button', { name: 'Block @bob' }).click();
    await page.getByText('Block @bob? Follows between you end.').waitFor();
    found.push(...await audit(page, '#/u/bob (block question)'));
    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await signIn(page, node.origin, 'bob', BOB_PASSWORD);
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.goto(`${node.origin}/#/post/${postId}`);
    await page.getByRole('button', { name: 'Report' }).click();
    await page.getByLabel('Why are you reporting this post?').waitFor();
    found.push(...await audit(page, '#/post (report form)'));
    assert.deepEqual(found, []);
  });

  it('broke no rule of the page (CSP, Trusted Types) and threw nothing', async () => {
    for (const [who, person] of [['alice', alice], ['bob', bob]]) {
      assert.deepEqual(person.problems.filter((text) => BROKEN_RULE.test(text)), [], who);
    }
  });
});
