// Account care in the web app, end to end: a real node, headless Chromium.
// Alice claims her node and changes her password (the old one is then refused);
// she signs in from a second browser and signs that session out from the first;
// she makes a read token (shown once), sees it listed, and revokes it. As admin she
// lists the users, disables Bob (his sign-in then says so), enables him, and gives
// him a reset code, with which he sets a new password from the sign-in screen.
// Every new screen passes axe (WCAG A/AA); screenshots go to artifacts/acct-*.

import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';

import { launchPerson, screenshots } from './lib/browser.mjs';
import { startNode } from './lib/node.mjs';
import { audit, callFrom, claimNode, joinWithInvite, signIn, stepKeepingScreens } from './lib/scenario.mjs';

const CLAIM_CODE = 'CODE12345';
const PASSWORD = 'correct horse battery';
const NEW_PASSWORD = 'lantern quay seventeen gulls';
const BOB_PASSWORD = 'bob walks the long pier';
const BOB_NEW_PASSWORD = 'tidal clock under amber lamps';
/** A page problem that means the app broke a rule of its page (CSP, Trusted Types) or threw. */
const BROKEN_RULE = /page error|Content Security Policy|Trusted Type/i;

describe('account care in the web app', { timeout: 300_000 }, () => {
  let node, alice, aliceElsewhere, bob, auditor, failed = false;

  /** A step of the scenario; when it fails, everyone's screen is kept. */
  const it = (name, body) => stepKeepingScreens(name, {
    prefix: 'acct-',
    people: () => ({ alice, 'alice-elsewhere': aliceElsewhere, bob, auditor }),
    onFailure: () => { failed = true; },
  }, body);

  /** Signs out from one's profile. */
  async function signOut(page, handle) {
    await page.goto(`${node.origin}/#/u/${handle}`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  }

  before(async () => {
    node = await startNode({ name: 'account-test', claimCode: CLAIM_CODE });
    alice = await launchPerson({ trust: [node] });
    aliceElsewhere = await launchPerson({ trust: [node] });
    bob = await launchPerson({ trust: [node] });
    // axe builds DOM in ways Trusted Types refuse: it audits in its own browser.
    auditor = await launchPerson({ trust: [node], bypassCSP: true });
  });

  after(async () => {
    for (const person of [alice, aliceElsewhere, bob, auditor]) if (person) await person.close();
    if (node) {
      if (failed) console.error(`the node's stderr:\n${node.stderr()}`);
      await node.stop();
    }
  });

  it('lets Alice claim the node and Bob join with her invite', async () => {
    const { page } = alice;
    await claimNode(page, node, CLAIM_CODE, 'alice', PASSWORD);
    const invite = await callFrom(page, 'POST', '/api/v1/invites');
    assert.equal(invite.status, 201);
    await joinWithInvite(bob.page, node.origin, invite.body.code, 'bob', BOB_PASSWORD);
  });

  it('changes Alice’s password from her profile’s Account screen: the old one is refused, the new one signs in', async () => {
    const { page } = alice;
    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('link', { name: 'Account', exact: true }).waitFor();
    await screenshots(page, 'acct-00-profile');
    await page.getByRole('link', { name: 'Account', exact: true }).click();
    await page.getByRole('heading', { name: 'Account', exact: true }).waitFor();
    await page.getByRole('list', { name: 'Sessions on this node' }).getByRole('listitem').first().waitFor();
    await screenshots(page, 'acct-01-account');

    // Wrong current password, then a weak new one: both refused with a sentence a person reads.
    const password = page.getByRole('region', { name: 'Password' });
    await password.getByLabel('Current password').fill('not my password at all');
    await password.getByLabel('New password').fill(NEW_PASSWORD);
    await password.getByRole('button', { name: 'Change password' }).click();
    await password.getByRole('alert').filter({ hasText: 'Your current password is not right.' }).waitFor();
    await password.getByLabel('Current password').fill(PASSWORD);
    await password.getByLabel('New password').fill('aliceeeeeee');
    await password.getByRole('button', { name: 'Change password' }).click();
    await password.getByRole('alert').filter({ hasText: 'Please choose a stronger password' }).waitFor();

    await password.getByLabel('New password').fill(NEW_PASSWORD);
    assert.ok(await password.getByLabel('Sign out my other sessions, on every node').isChecked(), 'signing out other sessions is the default');
    await password.getByRole('button', { name: 'Change password' }).click();
    await password.getByRole('status').filter({ hasText: 'Password changed.' }).waitFor();
    assert.equal(await password.getByLabel('Current password').inputValue(), '', 'the form forgets the passwords');

    await signOut(page, 'alice');
    await signIn(page, node.origin, 'alice', PASSWORD);
    await page.getByRole('alert').filter({ hasText: /password/i }).waitFor();
    assert.equal(await page.getByRole('heading', { name: 'Sign in' }).count(), 1, 'the old password does not sign in');
    await page.getByLabel('Password').fill(NEW_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
  });

  it('lists Alice’s sessions from two browsers, and signing the other out sends it to sign-in', async () => {
    await signIn(aliceElsewhere.page, node.origin, 'alice', NEW_PASSWORD);
    await aliceElsewhere.page.getByRole('heading', { name: 'Feed' }).waitFor();

    const { page } = alice;
    await page.goto(`${node.origin}/#/account`);
    const sessions = page.getByRole('list', { name: 'Sessions on this node' }).getByRole('listitem');
    await sessions.nth(1).waitFor();
    assert.equal(await sessions.count(), 2, await sessions.allTextContents().then(String));
    const current = sessions.filter({ hasText: 'This device' });
    assert.equal(await current.count(), 1, 'one session is marked as this device');
    assert.equal(await current.getByRole('button').count(), 0, 'this device is signed out from the profile, not here');
    assert.match(await sessions.first().textContent(), /Chrome on Linux/);

    const other = sessions.filter({ hasNotText: 'This device' });
    await other.getByRole('button', { name: /^Sign out Chrome on Linux/ }).click();
    await other.getByText('Sign out this session?').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the question takes focus on its safe answer');
    await screenshots(page, 'acct-02-sessions-confirm');
    await other.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.waitForFunction(() => document.querySelectorAll('.sessions li').length === 1);
    assert.match(await sessions.first().textContent(), /This device/);

    // The other browser still holds its token; its next request finds it signed out.
    const elsewhere = aliceElsewhere.page;
    await elsewhere.getByRole('link', { name: 'Search' }).first().click();
    await elsewhere.getByRole('link', { name: 'Feed' }).first().click();
    await elsewhere.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.equal(await elsewhere.evaluate(() => localStorage.getItem('edgenode.session')), null, 'the dead token is forgotten');
  });

  it('makes a read token shown once, lists it, and revokes it', async () => {
    const { page } = alice;
    await page.goto(`${node.origin}/#/account`);
    const tokens = page.getByRole('region', { name: 'Access tokens' });
    await tokens.getByRole('list', { name: 'Access tokens' }).getByText('No access tokens.').waitFor();
    await tokens.getByLabel('Token name').fill('backup script');
    assert.ok(await tokens.getByLabel('Only look (read)').isChecked(), 'read is the default scope');
    await tokens.getByRole('button', { name: 'Create token' }).click();
    const secret = tokens.locator('output.secret');
    await secret.waitFor();
    const token = await secret.textContent();
    assert.match(token, /^ent_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
    await tokens.getByText('Copy it now: you will not see it again.').waitFor();
    assert.ok(await tokens.getByRole('button', { name: 'Copy token' }).isVisible());
    const listed = tokens.getByRole('list', { name: 'Access tokens' }).getByRole('listitem');
    await listed.filter({ hasText: 'backup script' }).waitFor();
    assert.match(await listed.first().textContent(), /Read only/);
    await screenshots(page, 'acct-03-token-created');

    // The token reads, may not write, and its secret is not shown again.
    assert.equal((await callFrom(page, 'GET', '/api/v1/feed', undefined, token)).status, 200);
    const write = await callFrom(page, 'PUT', '/api/v1/users/bob/follow', undefined, token);
    assert.deepEqual([write.status, write.body.error.code], [403, 'read_only_token']);
    await page.reload();
    await listed.filter({ hasText: 'backup script' }).waitFor();
    assert.equal(await page.locator('output.secret').count(), 0);
    assert.equal(await page.getByText(token).count(), 0, 'the token is never shown again');

    await listed.getByRole('button', { name: 'Revoke token backup script' }).click();
    await listed.getByText('Revoke “backup script”? What uses it stops working.').waitFor();
    await listed.getByRole('button', { name: 'Revoke', exact: true }).click();
    await tokens.getByText('No access tokens.').waitFor();
    assert.equal((await callFrom(page, 'GET', '/api/v1/feed', undefined, token)).status, 401, 'a revoked token stops working');
  });

  it('lets the admin list users, disable Bob (his sign-in says so), enable him, and give him a reset code', async () => {
    const { page } = alice;
    await page.getByRole('link', { name: 'Admin' }).first().click();
    await page.getByRole('heading', { name: 'Admin' }).waitFor();
    const users = page.getByRole('region', { name: 'Users' });
    const bobRow = users.getByRole('row').filter({ has: page.getByRole('link', { name: '@bob' }) });
    await bobRow.waitFor();
    assert.deepEqual(await users.getByRole('row').evaluateAll((rows) => rows.slice(1).map((row) => row.querySelector('a').textContent)), ['@alice', '@bob']);
    assert.match(await bobRow.textContent(), /0 B used/);
    assert.match(await bobRow.textContent(), /seen here/, 'Bob signed in here');
    const aliceRow = users.getByRole('row').filter({ has: page.getByRole('link', { name: '@alice' }) });
    assert.match(await aliceRow.textContent(), /Admin/);
    assert.equal(await aliceRow.getByRole('button', { name: /^Disable/ }).count(), 0, 'an admin cannot disable herself');

    // The filter reads the list by handle.
    await users.getByLabel('Handle starts with').fill('bo');
    await users.getByRole('button', { name: 'Find' }).click();
    await users.getByText('1 account starting with “bo”.').waitFor();
    assert.equal(await users.getByRole('cell', { name: '@alice' }).count(), 0);

    await bobRow.getByRole('button', { name: 'Disable bob' }).click();
    await bobRow.getByText('Disable @bob?').waitFor();
    await screenshots(page, 'acct-04-admin-disable-confirm');
    await bobRow.getByRole('button', { name: 'Disable', exact: true }).click();
    await bobRow.getByText('Disabled', { exact: true }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Enable bob', 'focus stays on the row');

    // Bob's session ended; signing in tells him why, in words.
    await bob.page.goto(`${node.origin}/#/feed`);
    await bob.page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await bob.page.locator('#toast').filter({ hasText: 'This account is disabled by an admin' }).waitFor();
    await bob.page.getByLabel('Handle').fill('bob');
    await bob.page.getByLabel('Password').fill(BOB_PASSWORD);
    await bob.page.getByRole('button', { name: 'Sign in' }).click();
    await bob.page.getByRole('alert').filter({ hasText: 'This account is disabled by an admin of this node.' }).waitFor();
    await screenshots(bob.page, 'acct-05-signin-disabled');

    await bobRow.getByRole('button', { name: 'Enable bob' }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('.users-table tr')].some((row) =>
      row.textContent.includes('@bob') && !row.textContent.includes('Disabled')));

    await bobRow.getByRole('button', { name: 'Reset code for bob' }).click();
    const secret = users.locator('output.secret');
    await secret.waitFor();
    const code = await secret.textContent();
    assert.match(code, /^[0-9A-Z]{5}-[0-9A-Z]{5}$/);
    await users.getByText('Copy it now: you will not see it again.').waitFor();
    await screenshots(page, 'acct-06-admin-reset-code');

    // Bob, on the sign-in screen, sets a new password with it.
    await bob.page.getByLabel('Handle').fill('bob');
    await bob.page.getByRole('link', { name: 'Have a reset code?' }).click();
    await bob.page.getByRole('heading', { name: 'Set a new password' }).waitFor();
    assert.equal(await bob.page.getByLabel('Handle').inputValue(), 'bob', 'the handle typed at sign-in comes along');
    await bob.page.getByLabel('Reset code').fill('AAAAA-AAAAA');
    await bob.page.getByLabel('New password').fill(BOB_NEW_PASSWORD);
    await bob.page.getByRole('button', { name: 'Set password and sign in' }).click();
    await bob.page.getByRole('alert').filter({ hasText: 'do not match' }).waitFor();
    await screenshots(bob.page, 'acct-07-reset');
    await bob.page.getByLabel('Reset code').fill(code.toLowerCase().replace('-', ' '));
    await bob.page.getByRole('button', { name: 'Set password and sign in' }).click();
    await bob.page.getByRole('heading', { name: 'Feed' }).waitFor();

    await signOut(bob.page, 'bob');
    await signIn(bob.page, node.origin, 'bob', BOB_PASSWORD);
    await bob.page.getByRole('alert').filter({ hasText: /password/i }).waitFor();
    await bob.page.getByLabel('Password').fill(BOB_NEW_PASSWORD);
    await bob.page.getByRole('button', { name: 'Sign in' }).click();
    await bob.page.getByRole('heading', { name: 'Feed' }).waitFor();
  });

  it('pages through the users a page at a time', async () => {
    const { page } = alice;
    // 50 more accounts, added by the admin without passwords (each gets a reset code).
    const added = await page.evaluate(async () => {
      const token = JSON.parse(localStorage.getItem('edgenode.session')).token;
      const statuses = [];
      for (let batch = 0; batch < 10; batch++) {
        statuses.push(...await Promise.all([1, 2, 3, 4, 5].map((index) => fetch('/api/v1/admin/users', {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ handle: `neighbour_${String(batch * 5 + index).padStart(2, '0')}` }),
        }).then((answer) => answer.status))));
      }
      return statuses;
    });
    assert.deepEqual([...new Set(added)], [201]);
    await page.goto(`${node.origin}/#/admin`);
    await page.reload(); // the Admin page was shown already, filtered
    const users = page.getByRole('region', { name: 'Users' });
    const rows = users.locator('tbody tr');
    await rows.nth(49).waitFor();
    assert.equal(await rows.count(), 50, 'one page of 50');
    assert.equal(await rows.nth(49).locator('a').textContent(), '@neighbour_48');
    await users.getByRole('button', { name: 'Load more' }).click();
    await rows.nth(51).waitFor();
    assert.equal(await rows.count(), 52);
    assert.equal(await rows.nth(51).locator('a').textContent(), '@neighbour_50');
    assert.ok(await users.getByRole('button', { name: 'Load more' }).isHidden(), 'no more pages');
    await users.getByLabel('Handle starts with').fill('neighbour_4');
    await users.getByRole('button', { name: 'Find' }).click();
    await users.getByText('10 accounts starting with “neighbour_4”.').waitFor();
    assert.equal(await rows.count(), 10);
  });

  it('passes an accessibility audit on each new screen and state', async () => {
    const { page } = auditor;
    const found = [];
    await page.goto(`${node.origin}/#/reset?handle=bob`);
    await page.getByRole('heading', { name: 'Set a new password' }).waitFor();
    found.push(...await audit(page, '#/reset'));
    await page.getByLabel('Reset code').fill('AAAAA-AAAAA');
    await page.getByLabel('New password').fill('aaaaaaaaaaaa');
    await page.getByRole('button', { name: 'Set password and sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Please choose a stronger password' }).waitFor();
    found.push(...await audit(page, '#/reset (refused)'));

    await signIn(page, node.origin, 'alice', NEW_PASSWORD);
    await page.getByRole('heading', { name: 'Feed' }).waitFor();
    await page.goto(`${node.origin}/#/account`);
    await page.getByRole('list', { name: 'Sessions on this node' }).getByRole('listitem').nth(1).waitFor();
    found.push(...await audit(page, '#/account'));
    const tokens = page.getByRole('region', { name: 'Access tokens' });
    await tokens.getByLabel('Token name').fill('audit');
    await tokens.getByLabel('Look, post and upload (write)').check();
    await tokens.getByRole('button', { name: 'Create token' }).click();
    await tokens.locator('output.secret').waitFor();
    await page.getByRole('list', { name: 'Sessions on this node' }).getByRole('button', { name: /^Sign out/ }).first().click();
    await page.getByText('Sign out this session?').waitFor();
    found.push(...await audit(page, '#/account (token shown, confirming)'));

    await page.goto(`${node.origin}/#/admin`);
    await page.getByRole('region', { name: 'Users' }).getByRole('link', { name: '@bob' }).waitFor();
    await page.getByRole('button', { name: 'Reset code for bob' }).click();
    await page.locator('output.secret').waitFor();
    await page.getByRole('button', { name: 'Disable bob' }).click();
    await page.getByText('Disable @bob?').waitFor();
    found.push(...await audit(page, '#/admin (reset code, confirming)'));

    await page.goto(`${node.origin}/#/u/alice`);
    await page.getByRole('link', { name: 'Account', exact: true }).waitFor();
    found.push(...await audit(page, '#/u/alice'));
    assert.deepEqual(found, []);
  });

  it('broke no rule of the page (CSP, Trusted Types) and threw nothing', async () => {
    for (const [who, person] of [['alice', alice], ['alice-elsewhere', aliceElsewhere], ['bob', bob]]) {
      assert.deepEqual(person.problems.filter((text) => BROKEN_RULE.test(text)), [], who);
    }
  });
});
