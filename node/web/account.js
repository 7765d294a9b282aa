// Account care in the web app: your password, where you are signed in, personal
// access tokens, deleting your account, setting a new password with a reset code,
// and the admin's list of users (disable, enable, reset codes). Built from app.js's pieces (`h`, `form`, …);
// app.js imports this module, so nothing here runs before app.js has loaded.

import { api, ApiError, currentSession } from './api.js?v=__BUILD__';
import {
  h, field, form, toast, go, setTitle, copyButton, timeElement, plural, messageOf, storageText, startSession,
  handleInput, passwordInput, PASSWORD_HINT, nodeInfo, forgetSession,
} from './app.js?v=__BUILD__';

/** Rows the admin's list asks for at once (the node answers at most 100). */
const ADMIN_USERS_PAGE = 50;
/** Pages a handle filter reads at most: a household node has far fewer users. */
const ADMIN_FILTER_PAGES_MAX = 40;
const TOKEN_NAME_CHARS_MAX = 64;

/**
 * What people read for an error code of the node (docs/api.md), where its own
 * message is written for programs; `null` keeps the node's message.
 */
const PEOPLE_TEXT = {
  wrong_password: 'Your current password is not right.',
  account_disabled: 'This account is disabled by an admin of this node. Ask them to enable it again.',
  bad_reset_code: 'That handle and reset code do not match, or the code was used or has expired. Ask your admin for a new one.',
  session_expired: 'You were signed out after a long time without using the app. Please sign in again.',
  session_required: 'Sign in with your password to do this: an access token cannot change passwords, sessions or tokens.',
  read_only_token: 'This access token may only look at things, not change them.',
  cannot_disable_self: 'You cannot disable your own account. Another admin can, or `edgenode user disable` on the box.',
  last_admin: 'You are the last admin of this node, and a node keeps one: another account must be admin before yours can go.',
  not_replicated_yet: 'This node has not received your account from its sibling yet. Please try again in a minute.',
  unknown_media: 'That photo is not on this node yet. Wait a moment and save again, or choose the photo again.',
};

/** The sentence to show for `error` from the node where its code has one (PEOPLE_TEXT), else null. */
export function peopleText(error) {
  if (!(error instanceof ApiError)) return null;
  if (error.code === 'weak_password') return 'Please choose a stronger password: ' + error.message;
  if (error.code === 'invalid_profile') return 'Please check your profile: ' + error.message + '.';
  return PEOPLE_TEXT[error.code] || null;
}

// ---------------------------------------------------------------- small pieces

/** "Chrome on Linux" from a User-Agent header; the whole header stays in a tooltip. */
function deviceName(userAgent) {
  if (!userAgent) return 'Unknown device';
  const browsers = [[/Edg\//, 'Edge'], [/OPR\//, 'Opera'], [/Firefox\//, 'Firefox'], [/(Headless)?Chrome\/|Chromium\//, 'Chrome'],
    [/Safari\//, 'Safari'], [/^curl\//, 'curl'], [/^edgenode/i, 'edgenode']];
  const systems = [[/Android/, 'Android'], [/iPhone|iPad|iPod/, 'iOS'], [/Windows/, 'Windows'], [/Mac OS X|Macintosh/, 'macOS'],
    [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux']];
  const browser = (browsers.find(([pattern]) => pattern.test(userAgent)) || [null, userAgent.split(/[\s/]/)[0]])[1];
  const system = (systems.find(([pattern]) => pattern.test(userAgent)) || [])[1];
  return system ? `${browser} on ${system}` : browser;
}

/**
 * A button that asks once more in place before `action` (no blocking browser
 * dialog): `label` on the first button, `question` and `confirmLabel` after it.
 * Cancel, or a failure, puts the first button back and focuses it.
 */
function confirmedButton({ label, ariaLabel, question, confirmLabel, action }) {
  const wrapper = h('span', { class: 'confirm-wrap' });
  const idle = () => {
    const start = h('button', { type: 'button', class: 'button secondary small', 'aria-label': ariaLabel, onclick: ask }, label);
    wrapper.replaceChildren(start);
    return start;
  };
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'button danger small' }, confirmLabel);
    const no = h('button', { type: 'button', class: 'button secondary small' }, 'Cancel');
    yes.addEventListener('click', async () => {
      yes.disabled = no.disabled = true;
      try {
        await action();
      } catch (error) {
        toast(messageOf(error));
        idle().focus();
      }
    });
    no.addEventListener('click', () => idle().focus());
    wrapper.replaceChildren(h('span', { class: 'confirm' }, question), ' ', yes, no);
    no.focus();
  };
  idle();
  return wrapper;
}

/**
 * A secret the node shows once (a token, a reset code): the text, a Copy button and
 * the warning; Done takes it off the screen. Goes in an `aria-live` region.
 */
function oneTimeSecret({ title, secret, copyLabel, notes, onDone }) {
  const panel = h('div', { class: 'one-time' },
    h('p', {}, h('strong', {}, title)),
    h('p', { class: 'with-copy' }, h('output', { class: 'secret' }, secret), copyButton(secret, copyLabel)),
    h('p', { class: 'warning' }, 'Copy it now: you will not see it again.'),
    notes ? h('p', { class: 'hint' }, notes) : null,
    h('button', { type: 'button', class: 'button secondary small', onclick: () => { panel.remove(); if (onDone) onDone(); } }, 'Done'));
  return panel;
}

/** After a list item is removed, focus goes to its card's heading rather than nowhere. */
function focusHeading(list) {
  const heading = list.closest('section').querySelector('h2');
  heading.tabIndex = -1;
  heading.focus();
}

// ---------------------------------------------------------------- account screen

/** `#/account`: password, sessions on this node, personal access tokens, deleting the account. */
export async function accountView({ view, signal }) {
  setTitle('Account');
  const session = currentSession();
  const sessions = h('ul', { class: 'sessions', 'aria-label': 'Sessions on this node' });
  const tokens = h('ul', { class: 'tokens', 'aria-label': 'Access tokens' });
  view.append(h('div', { class: 'column account' },
    h('h1', {}, 'Account'),
    h('p', { class: 'muted' }, 'Signed in as ', h('a', { href: '#/u/' + session.handle }, '@' + session.handle), '.'),
    passwordCard(),
    h('section', { class: 'card', 'aria-labelledby': 'sessions-title' },
      h('h2', { id: 'sessions-title' }, 'Where you are signed in'),
      h('p', { class: 'hint' }, `Browsers and apps signed in to ${nodeInfo() ? nodeInfo().name : 'this node'}. Other nodes that keep your account have their own list.`),
      sessions),
    tokensCard(tokens, signal),
    deleteAccountCard(session.handle)));
  await Promise.all([loadSessions(sessions, signal), loadTokens(tokens, signal)]);
}

function passwordCard() {
  const current = passwordInput('current-password');
  current.name = 'current_password';
  const fresh = passwordInput('new-password');
  fresh.name = 'new_password';
  const others = h('input', { type: 'checkbox', name: 'sign_out_other_sessions', id: 'sign-out-others', checked: true });
  const result = h('p', { class: 'result', role: 'status' });
  return h('section', { class: 'card', 'aria-labelledby': 'password-title' },
    h('h2', { id: 'password-title' }, 'Password'),
    form('stack', [
      field('Current password', current),
      field('New password', fresh, PASSWORD_HINT),
      h('label', { class: 'choice', for: 'sign-out-others' }, others, h('span', {}, 'Sign out my other sessions, on every node')),
      h('button', { type: 'submit', class: 'button primary' }, 'Change password'),
    ], async () => {
      result.textContent = '';
      const answer = await api('PUT', '/api/v1/me/password', {
        body: { current_password: current.value, new_password: fresh.value, sign_out_other_sessions: others.checked },
      });
      current.value = fresh.value = '';
      result.textContent = answer.signed_out_other_sessions
        ? 'Password changed. Your other sessions were signed out; this one stays.'
        : 'Password changed. Your other sessions stay signed in.';
      const list = document.querySelector('.sessions');
      if (list && answer.signed_out_other_sessions) loadSessions(list, null);
    }),
    result);
}

async function loadSessions(list, signal) {
  const answer = await api('GET', '/api/v1/me/sessions', { signal });
  list.replaceChildren(...answer.items.map((item) => sessionItem(item, list)));
  if (!answer.items.length) list.append(h('li', { class: 'muted' }, 'No sessions.'));
}

function sessionItem(item, list) {
  const name = deviceName(item.user_agent);
  const element = h('li', { class: 'listed' },
    h('div', { class: 'grow' },
      h('span', { class: 'listed-name', title: item.user_agent || null }, name),
      item.current ? h('span', { class: 'badge' }, 'This device') : null,
      h('br'),
      h('span', { class: 'muted small' }, 'Signed in ', timeElement(item.created_at), ' · last used ', timeElement(item.last_seen_at))),
    item.current ? null : confirmedButton({
      label: 'Sign out',
      ariaLabel: `Sign out ${name}, signed in ${timeElement(item.created_at).textContent}`,
      question: 'Sign out this session?',
      confirmLabel: 'Sign out',
      action: async () => {
        await api('DELETE', '/api/v1/me/sessions/' + encodeURIComponent(item.session_id));
        element.remove();
        toast(`${name} is signed out.`);
        focusHeading(list);
      },
    }));
  return element;
}

function tokensCard(tokens, signal) {
  const name = h('input', { name: 'token_name', required: true, maxlength: TOKEN_NAME_CHARS_MAX, autocomplete: 'off', placeholder: 'backup script' });
  const scope = h('fieldset', { class: 'choices' }, h('legend', {}, 'It may'),
    [['read', 'Only look (read)'], ['write', 'Look, post and upload (write)']].map(([value, label]) =>
      h('label', { class: 'choice' }, h('input', { type: 'radio', name: 'token_scope', value, checked: value === 'read' }), h('span', {}, label))));
  const shown = h('div', { 'aria-live': 'polite' });
  return h('section', { class: 'card', 'aria-labelledby': 'tokens-title' },
    h('h2', { id: 'tokens-title' }, 'Access tokens'),
    h('p', { class: 'hint' }, 'For scripts and apps, sent as ', h('code', {}, 'Authorization: Bearer …'),
      '. A token never changes your password, sessions or tokens; revoke it when it is no longer needed.'),
    form('stack', [
      field('Token name', name, 'What it is for, so you know which to revoke.'),
      scope,
      h('button', { type: 'submit', class: 'button primary' }, 'Create token'),
    ], async (element) => {
      const chosen = element.querySelector('input[name=token_scope]:checked').value;
      const made = await api('POST', '/api/v1/me/tokens', { body: { name: name.value.trim(), scope: chosen } });
      name.value = '';
      shown.replaceChildren(oneTimeSecret({
        title: `Your new token “${made.name}”`,
        secret: made.token,
        copyLabel: 'Copy token',
        notes: made.scope === 'read' ? 'It may only read.' : 'It may do what you may, except manage your credentials.',
        onDone: () => name.focus(),
      }));
      await loadTokens(tokens, signal);
    }),
    shown,
    h('h3', { class: 'list-title' }, 'Your tokens'),
    tokens);
}

async function loadTokens(list, signal) {
  const answer = await api('GET', '/api/v1/me/tokens', { signal });
  const empty = () => h('li', { class: 'muted' }, 'No access tokens.');
  list.replaceChildren(...answer.items.map((token) => {
    const element = h('li', { class: 'listed' },
      h('div', { class: 'grow' },
        h('span', { class: 'listed-name' }, token.name),
        h('span', { class: 'badge' }, token.scope === 'read' ? 'Read only' : 'Read and write'),
        h('br'),
        h('span', { class: 'muted small' }, 'Created ', timeElement(token.created_at))),
      confirmedButton({
        label: 'Revoke',
        ariaLabel: `Revoke token ${token.name}`,
        question: `Revoke “${token.name}”? What uses it stops working.`,
        confirmLabel: 'Revoke',
        action: async () => {
          await api('DELETE', '/api/v1/me/tokens/' + encodeURIComponent(token.token_id));
          element.remove();
          if (!list.children.length) list.append(empty());
          toast(`Token “${token.name}” revoked.`);
          focusHeading(list);
        },
      }));
    return element;
  }));
  if (!answer.items.length) list.append(empty());
}

// ---------------------------------------------------------------- deleting the account

/**
 * The Account screen's last card: the password, then a question asked in place
 * ("Delete @carol for good?"), its safe answer focused; only the second button
 * deletes. Then the browser forgets the session and says goodbye.
 */
function deleteAccountCard(handle) {
  const password = passwordInput('current-password');
  password.id = 'delete-password';
  const error = h('p', { class: 'error', role: 'alert' });
  const start = h('button', { type: 'submit', class: 'button danger-outline' }, 'Delete my account');
  const question = h('div', { class: 'confirm-delete', hidden: true });
  const idle = () => {
    question.hidden = true;
    question.replaceChildren();
    start.hidden = false;
  };
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'button danger' }, 'Delete for good');
    const no = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
    no.addEventListener('click', () => { idle(); start.focus(); });
    yes.addEventListener('click', async () => {
      yes.disabled = no.disabled = true;
      try {
        await api('DELETE', '/api/v1/me', { body: { password: password.value } });
      } catch (failure) {
        idle();
        error.textContent = failure instanceof ApiError && failure.code === 'wrong_password'
          ? 'That password is not right: nothing was deleted.'
          : messageOf(failure);
        password.focus();
        return;
      }
      forgetSession();
      go('/goodbye?handle=' + encodeURIComponent(handle));
    });
    question.replaceChildren(
      h('p', { class: 'confirm' }, `Delete @${handle} and everything in it, for good?`),
      h('div', { class: 'row' }, yes, no));
    question.hidden = false;
    start.hidden = true;
    no.focus();
  };
  const element = h('form', { class: 'stack' },
    field('Your password', password, 'To be sure it is you.'),
    start,
    question,
    error);
  element.addEventListener('submit', (event) => {
    event.preventDefault();
    error.textContent = '';
    ask();
  });
  return h('section', { class: 'card delete-account', 'aria-labelledby': 'delete-title' },
    h('h2', { id: 'delete-title' }, 'Delete your account'),
    h('p', {}, 'This deletes your posts and photos, your comments and likes, who you follow and who follows you, ',
      'your password, sessions and access tokens: here, and on every node that keeps your account. ',
      h('strong', {}, 'It cannot be undone.')),
    h('p', { class: 'hint' }, 'Your handle stays taken, so nobody can pass for you. Want a copy first? Use “Download my data” on ',
      h('a', { href: '#/u/' + handle }, 'your profile'), '.'),
    element);
}

/** `#/goodbye`: after an account was deleted. */
export function goodbyeView({ view, params }) {
  setTitle('Account deleted');
  const handle = (params.get('handle') || '').trim();
  view.append(h('section', { class: 'card narrow' },
    h('h1', {}, 'Your account is deleted'),
    h('p', {}, handle ? `@${handle} is gone from this node, ` : 'It is gone from this node, ',
      'and from the other nodes that kept it as soon as they hear of it.'),
    h('p', {}, h('a', { href: '#/signin' }, 'Sign in'), ' with another account, or ', h('a', { href: '#/search' }, 'look around'), '.')));
}

// ---------------------------------------------------------------- reset code

/** `#/reset`: a new password with the one-time code an admin gave, reached from sign-in. */
export function resetView({ view, params }) {
  setTitle('Set a new password');
  const handle = handleInput('username');
  handle.value = (params.get('handle') || '').trim().toLowerCase();
  const code = h('input', {
    name: 'code', required: true, autocomplete: 'one-time-code', autocapitalize: 'characters', autocorrect: 'off', spellcheck: 'false',
    maxlength: 64, value: params.get('code') || '',
  });
  const password = passwordInput('new-password');
  view.append(h('section', { class: 'card narrow' },
    h('h1', {}, 'Set a new password'),
    h('p', { class: 'muted' }, 'With the one-time reset code your admin gave you. Every other session of your account is signed out.'),
    form('stack', [
      field('Handle', handle),
      field('Reset code', code, 'Like 7K3QZ-M9X2A; small letters and spaces are fine. A code works once, for a day.'),
      field('New password', password, PASSWORD_HINT),
      h('button', { type: 'submit', class: 'button primary' }, 'Set password and sign in'),
    ], async () => {
      const name = handle.value.trim().toLowerCase();
      const answer = await api('POST', '/api/v1/password-reset', { body: { handle: name, code: code.value.trim(), new_password: password.value } });
      await startSession(answer, name);
      toast('Your new password is set, and you are signed in.');
      go('/feed');
    }),
    h('p', {}, 'Remember your password? ', h('a', { href: '#/signin' }, 'Sign in'))));
}

// ---------------------------------------------------------------- admin: users

/**
 * The Admin page's "Users" card: every account this node holds, by handle, a page at
 * a time, with what each uses; disable or enable one, or give a reset code (shown
 * once). "Handle starts with" reads the list in order up to past the prefix.
 */
export function adminUsersCard(signal) {
  const self = currentSession();
  const body = h('tbody', {});
  const table = h('table', { class: 'table users-table' },
    h('caption', { class: 'visually-hidden' }, 'Accounts on this node'),
    h('thead', {}, h('tr', {}, ['Account', 'Actions'].map((name) => h('th', { scope: 'col' }, name)))),
    body);
  const status = h('p', { class: 'muted', role: 'status' });
  const more = h('button', { type: 'button', class: 'button secondary', hidden: true }, 'Load more');
  const shown = h('div', { 'aria-live': 'polite' });
  const prefix = h('input', { type: 'search', name: 'handle', autocapitalize: 'none', spellcheck: 'false', maxlength: 30, placeholder: 'a, al, alice…' });
  let cursor = null;

  const row = (user) => {
    const element = h('tr', {});
    const paint = (focusAction) => {
      const here = nodeInfo();
      const elsewhere = user.home && here && user.home !== here.node_id;
      // Buttons are named with the bare handle: the handle's own cell is the one that reads "@name".
      const toggle = user.disabled
        ? h('button', { type: 'button', class: 'button secondary small', 'aria-label': `Enable ${user.handle}`, onclick: () => setDisabled(false) }, 'Enable')
        : user.user_id === self.user_id
          ? null
          : confirmedButton({
            label: 'Disable',
            ariaLabel: `Disable ${user.handle}`,
            question: `Disable @${user.handle}?`,
            confirmLabel: 'Disable',
            action: () => setDisabled(true),
          });
      const reset = h('button', { type: 'button', class: 'button secondary small', 'aria-label': `Reset code for ${user.handle}`, onclick: issueResetCode }, 'Reset code');
      element.replaceChildren(
        h('td', {},
          h('a', { href: '#/u/' + user.handle }, '@' + user.handle),
          user.admin ? h('span', { class: 'badge' }, 'Admin') : null,
          user.disabled ? h('span', { class: 'badge disabled' }, 'Disabled') : null,
          user.display_name && user.display_name !== user.handle ? [h('br'), h('span', { class: 'muted small' }, user.display_name)] : null,
          h('br'),
          h('span', { class: 'muted small' }, storageText({ used_bytes: user.storage_bytes_used }), ' · ',
            user.last_seen_at ? ['seen here ', timeElement(user.last_seen_at)] : 'not seen on this node'),
          h('br'),
          h('span', { class: 'muted small' }, 'Joined ', new Date(user.created_at).toLocaleDateString(), elsewhere ? ' · home is a sibling' : '')),
        h('td', {}, h('div', { class: 'row' }, toggle, reset)));
      if (focusAction) {
        const target = element.querySelector(`button[aria-label="${focusAction} ${user.handle}"]`) || element.querySelector('button');
        if (target) target.focus();
      }
    };
    const setDisabled = async (disabled) => {
      try {
        Object.assign(user, await api('POST', `/api/v1/admin/users/${encodeURIComponent(user.handle)}/${disabled ? 'disable' : 'enable'}`));
      } catch (error) {
        if (!disabled) { toast(messageOf(error)); return; }
        throw error;
      }
      paint(disabled ? 'Enable' : 'Disable');
      toast(disabled ? `@${user.handle} is disabled and signed out.` : `@${user.handle} can sign in again.`);
    };
    async function issueResetCode(event) {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const answer = await api('POST', `/api/v1/admin/users/${encodeURIComponent(user.handle)}/reset-code`);
        shown.replaceChildren(oneTimeSecret({
          title: `Reset code for @${answer.handle}`,
          secret: answer.code,
          copyLabel: 'Copy reset code',
          notes: [`Give it to @${answer.handle} yourself. It works once, until `, new Date(answer.expires_at).toLocaleString(),
            ': on the sign-in screen, “Have a reset code?”. It replaces any earlier code.'],
          onDone: () => button.focus(),
        }));
      } catch (error) {
        toast(messageOf(error));
      } finally {
        button.disabled = false;
      }
    }
    paint(null);
    return element;
  };

  const showPage = async (reset) => {
    more.hidden = true;
    status.textContent = 'Loading…';
    const page = await api('GET', '/api/v1/admin/users', { query: { limit: ADMIN_USERS_PAGE, cursor: reset ? undefined : cursor }, signal });
    if (reset) body.replaceChildren();
    body.append(...page.items.map(row));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    status.textContent = body.children.length ? '' : 'No accounts yet.';
  };
  /** The handles starting with `text`: the list is by handle, so reading stops past them. */
  const filter = async (text) => {
    body.replaceChildren();
    more.hidden = true;
    status.textContent = 'Looking…';
    let next, pages = 0, past = false;
    do {
      const page = await api('GET', '/api/v1/admin/users', { query: { limit: 100, cursor: next }, signal });
      for (const user of page.items) {
        if (user.handle.startsWith(text)) body.append(row(user));
        else if (user.handle > text) past = true;
      }
      next = page.next_cursor;
      pages += 1;
    } while (next && !past && pages < ADMIN_FILTER_PAGES_MAX);
    const count = body.children.length;
    status.textContent = count ? `${plural(count, 'account', 'accounts')} starting with “${text}”.` : `No handle starts with “${text}”.`;
  };
  more.addEventListener('click', () => showPage(false).catch((error) => { status.textContent = messageOf(error); more.hidden = false; }));

  const card = h('section', { class: 'card admin-users', 'aria-labelledby': 'users-title' },
    h('h2', { id: 'users-title' }, 'Users'),
    h('p', { class: 'hint' }, 'Every account this node keeps, its own and its siblings’. Disabling signs a person out on every node.'),
    form('search-form', [field('Handle starts with', prefix), h('button', { type: 'submit', class: 'button secondary' }, 'Find')], async () => {
      const text = prefix.value.trim().replace(/^@/, '').toLowerCase();
      await (text ? filter(text) : showPage(true));
    }),
    shown,
    h('div', { class: 'user-results' }, table),
    status,
    more);
  showPage(true).catch((error) => {
    if (!signal.aborted) status.textContent = messageOf(error);
  });
  return card;
}
