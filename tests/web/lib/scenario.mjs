// What the web scenarios share: a step that keeps everyone's screen when it fails,
// claiming a node, joining and signing in, API calls with a page's own session, and axe at both widths.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { accessibilityViolations } from './audit.mjs';
import { ARTIFACTS, DESKTOP, PHONE, settle } from './browser.mjs';

/**
 * A step of a scenario (a `node:test` test with `options`): when `body` fails, calls
 * `onFailure`, then keeps a full-page screenshot of every person `people()` names
 * (`{who: person}`; absent ones are skipped) as
 * `artifacts/<prefix>failed-<step>-<who>.png`, and fails with the step's own error.
 */
export function stepKeepingScreens(name, { prefix, people, onFailure = () => {}, options = {} }, body) {
  return test(name, options, async (t) => {
    try {
      await body(t);
    } catch (error) {
      onFailure();
      mkdirSync(ARTIFACTS, { recursive: true });
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      for (const [who, person] of Object.entries(people())) {
        await person?.page.screenshot({ path: join(ARTIFACTS, `${prefix}failed-${slug}-${who}.png`), fullPage: true }).catch(() => {});
      }
      throw error;
    }
  });
}

/** Claims `node` (as `startNode` returns it) from its first screen, typing the claim code; waits for the feed. */
export async function claimNode(page, node, claimCode, handle, password) {
  await page.goto(node.origin + '/');
  await page.getByRole('heading', { name: `Set up ${node.name}` }).waitFor();
  await page.getByLabel('Claim code').fill(claimCode);
  await page.getByLabel('Admin handle').fill(handle);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Claim this node' }).click();
  await page.getByRole('heading', { name: 'Feed' }).waitFor();
}

/** Joins the node at `origin` with invite `code` as `handle`; waits for the Search screen a newcomer lands on. */
export async function joinWithInvite(page, origin, code, handle, password) {
  await page.goto(`${origin}/#/join?code=${encodeURIComponent(code)}`);
  await page.getByLabel('Choose a handle').fill(handle);
  await page.getByLabel('Choose a password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Search' }).waitFor();
}

/** Signs `handle` in on the sign-in screen of the node at `origin`. */
export async function signIn(page, origin, handle, password) {
  await page.goto(`${origin}/#/signin`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('Handle').fill(handle);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/**
 * An API call from `page` with its own session (what the app would send), or with
 * `token`; `body`, when given, goes as JSON. `{status, body}`, the body parsed.
 */
export function callFrom(page, method, path, body, token) {
  return page.evaluate(async ({ method, path, body, token }) => {
    const bearer = token || JSON.parse(localStorage.getItem('edgenode.session')).token;
    const headers = { Authorization: `Bearer ${bearer}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await answer.text();
    return { status: answer.status, body: text ? JSON.parse(text) : null };
  }, { method, path, body, token });
}

/** The axe violations of what `page` shows, at phone and desktop widths; back at phone size after. */
export async function audit(page, label) {
  const found = [];
  for (const viewport of [PHONE, DESKTOP]) {
    await page.setViewportSize(viewport);
    // From the top, as a person arrives: content scrolled under the sticky top bar
    // would count as obscured targets.
    await page.evaluate(() => window.scrollTo(0, 0));
    await settle(page);
    for (const violation of await accessibilityViolations(page)) found.push(`${label} at ${viewport.width} px: ${violation}`);
  }
  await page.setViewportSize(PHONE);
  return found;
}
