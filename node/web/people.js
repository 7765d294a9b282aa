// People in the web app: editing your profile (name, bio, a photo as avatar), the
// notifications screen, the bell in the top bar with its unread count, follow
// requests, blocking, reporting a post and the admins' reports. Built from
// app.js's pieces (`h`, `form`, …); app.js imports this module, so nothing here runs
// before app.js has loaded.

import {
  api, ApiError, currentSession, sha256Hex, alreadyUploaded, uploadPhoto, mediaPathObjectUrl,
} from './api.js?v=__BUILD__';
import {
  h, field, form, toast, go, setTitle, timeElement, plural, messageOf, pager, avatar, icon,
} from './app.js?v=__BUILD__';

/**
 * How often the unread count is asked for while the page is in view; it is also asked
 * for when the page comes back into view or gets focus. One small GET: the node
 * counts at most 1,000 unread events (docs/api.md, "Notifications").
 */
const UNREAD_POLL_MS = 30_000;
/** Groups the notifications screen asks for at once (the node answers at most 100). */
const NOTIFICATIONS_PAGE = 20;
/** Above this the badge says "99+": a number that size says "a lot" already. */
const BADGE_COUNT_SHOWN_MAX = 99;
// The node's limits (docs/api.md, `PATCH /api/v1/me/profile`): checked here only to say so early.
const DISPLAY_NAME_CHARS_MAX = 50;
const BIO_CHARS_MAX = 300;

// ---------------------------------------------------------------- the bell

/** Unread groups as last answered; null before the first answer. */
let unreadCount = null;
/** The signed-in token the count belongs to: a count never outlives its session. */
let unreadToken = null;
let pollTimer = 0;
let pollInFlight = null;
/** The count is being kept up to date (signed in, the bell shown). */
let watching = false;

/**
 * Shows the bell for whoever is signed in (hides it otherwise), marks it as the
 * current page on `#/notifications`, and starts keeping its count. Called with the
 * navigation on every screen; asks the node only when it was not asking already.
 */
export function renderBell(path) {
  const bell = document.getElementById('bell');
  const session = currentSession();
  if (!session) {
    bell.hidden = true;
    stopWatching();
    return;
  }
  if (session.token !== unreadToken) {
    unreadToken = session.token;
    unreadCount = null;
  }
  if (path === '/notifications') bell.setAttribute('aria-current', 'page');
  else bell.removeAttribute('aria-current');
  paintBell();
  bell.hidden = false;
  if (!watching) {
    watching = true;
    pollUnread();
  }
}

/** The bell: an icon, the count when there is one; named "Notifications" or "Notifications, 3 unread". */
function paintBell() {
  const bell = document.getElementById('bell');
  const count = unreadCount || 0;
  const shown = count > BADGE_COUNT_SHOWN_MAX ? `${BADGE_COUNT_SHOWN_MAX}+` : String(count);
  bell.replaceChildren(icon('bell'));
  if (count) bell.append(h('span', { class: 'count' }, shown));
  bell.setAttribute('aria-label', count ? `Notifications, ${count} unread` : 'Notifications');
  bell.title = 'Notifications';
}

function showUnread(count) {
  const before = unreadCount;
  unreadCount = count;
  paintBell();
  // Said once when more arrive while the app is open; never on the first count.
  if (before !== null && count > before) {
    document.getElementById('bell-news').textContent = `${plural(count, 'unread notification', 'unread notifications')}.`;
  }
}

/**
 * Asks the node for the unread count now (at most one request at a time), then
 * again after UNREAD_POLL_MS while the page is in view. A background request: the
 * banner is for what the person asked for; a failed poll keeps the last count.
 * `fresh`: the count changed since a request in flight was sent (notifications were
 * just read), so ask once more after it.
 */
function pollUnread({ fresh = false } = {}) {
  clearTimeout(pollTimer);
  const session = currentSession();
  if (!session) {
    stopWatching();
    return Promise.resolve();
  }
  if (pollInFlight) return fresh ? pollInFlight.then(() => pollUnread()) : pollInFlight;
  pollInFlight = api('GET', '/api/v1/notifications/unread', { background: true })
    .then((answer) => {
      const still = currentSession();
      if (still && still.token === session.token && Number.isInteger(answer.count)) showUnread(answer.count);
    }, () => {})
    .finally(() => {
      pollInFlight = null;
      scheduleUnread();
    });
  return pollInFlight;
}

function scheduleUnread() {
  clearTimeout(pollTimer);
  if (!currentSession()) {
    stopWatching();
    return;
  }
  if (document.visibilityState === 'visible') pollTimer = setTimeout(pollUnread, UNREAD_POLL_MS);
}

function stopWatching() {
  clearTimeout(pollTimer);
  watching = false;
  unreadCount = null;
  unreadToken = null;
}

// Back in view or focused, the person may have been away a while: a count asked for
// before then is not good enough.
document.addEventListener('visibilitychange', () => {
  if (!watching) return;
  if (document.visibilityState === 'visible') pollUnread({ fresh: true });
  else clearTimeout(pollTimer);
});
window.addEventListener('focus', () => {
  if (watching) pollUnread({ fresh: true });
});

// ---------------------------------------------------------------- notifications

/** What each kind of group says after its actors' names; kinds not here are skipped (docs/api.md). */
const KIND_TEXT = {
  like: (post) => ['liked ', post('your post')],
  comment: (post) => ['commented on ', post('your post')],
  mention: (post) => ['mentioned you in ', post('a post')],
  follow: () => ['followed you'],
  follow_request: () => ['asked to follow you (', h('a', { href: '#/follow-requests' }, 'answer'), ')'],
};

/** A person as notifications name them: their display name, else their handle. */
function actorLink(actor) {
  const name = actor.display_name || (actor.handle ? '@' + actor.handle : 'Someone');
  return actor.handle ? h('a', { class: 'author', href: '#/u/' + actor.handle }, name) : h('span', { class: 'author' }, name);
}

/** "ada", "ada and bob", "ada and 3 others". */
function actorsNodes(group) {
  const [first, second] = group.actors;
  const count = Math.max(group.actors_count, group.actors.length);
  if (!first) return [h('span', { class: 'author' }, plural(count, 'person', 'people'))];
  if (count <= 1) return [actorLink(first)];
  if (count === 2 && second) return [actorLink(first), ' and ', actorLink(second)];
  return [actorLink(first), ` and ${plural(count - 1, 'other', 'others')}`];
}

function notificationItem(group, signal) {
  const post = group.post;
  const postLink = (text) => (post ? h('a', { href: '#/post/' + post.id }, text) : text);
  const element = h('li', { class: 'notification' + (group.unread ? ' unread' : '') },
    avatar(group.actors[0] || { handle: '' }),
    h('div', { class: 'grow' },
      h('p', { class: 'sentence' }, actorsNodes(group), ' ', KIND_TEXT[group.kind](postLink)),
      h('span', { class: 'muted small' }, timeElement(group.latest_at)),
      group.unread ? h('span', { class: 'badge' }, 'New') : null));
  if (post && post.thumb) {
    // The sentence links to the post already: the picture is a second way in for a
    // pointer, out of the tab order and hidden from screen readers.
    const picture = h('img', { alt: '', width: 56, height: 56 });
    const link = h('a', { class: 'notification-thumb', href: '#/post/' + post.id, tabindex: -1, 'aria-hidden': 'true' }, picture);
    element.append(link);
    mediaPathObjectUrl(post.thumb, signal).then((url) => {
      if (signal.aborted) { URL.revokeObjectURL(url); return; }
      picture.src = url;
      signal.addEventListener('abort', () => URL.revokeObjectURL(url));
    }).catch(() => link.remove());
  }
  return element;
}

/**
 * Marks what the first page shows as read, up to its newest event (what arrived
 * since stays unread), then asks for the count again.
 */
async function markRead(groups) {
  const newest = Math.max(0, ...groups.filter((group) => group.unread).map((group) => group.latest_at));
  if (newest) {
    try {
      await api('POST', '/api/v1/notifications/read', { body: { up_to: newest } });
    } catch {
      // They stay unread, and show as such when the screen is next opened.
    }
  }
  await pollUnread({ fresh: true });
}

/** `#/notifications`: likes, comments, follows and mentions, collapsed; opening it reads them. */
export function notificationsView({ view, signal }) {
  setTitle('Notifications');
  const list = h('ul', { class: 'card notifications', 'aria-label': 'Notifications' });
  view.append(h('div', { class: 'column' }, h('h1', {}, 'Notifications'), list));
  let first = true;
  pager({
    list,
    signal,
    load: async (cursor) => {
      const page = await api('GET', '/api/v1/notifications', { query: { limit: NOTIFICATIONS_PAGE, cursor }, signal });
      if (first) {
        first = false;
        markRead(page.items);
      }
      return { ...page, items: page.items.filter((group) => KIND_TEXT[group.kind]) };
    },
    item: notificationItem,
    empty: h('p', { class: 'muted center' }, 'Nothing yet. When someone likes or comments on your posts, follows you or mentions you, it shows here.'),
  });
}

// ---------------------------------------------------------------- edit profile

/** Uploads `file` as a photo of the signed-in user (nothing sent if the node has it); resolves to its media id. */
async function uploadAvatarPhoto(file, onStatus, signal) {
  onStatus('Preparing the photo…');
  const sha256 = await sha256Hex(file);
  if (sha256 && (await alreadyUploaded(sha256))) return sha256;
  const upload = uploadPhoto(file, sha256, (fraction) => onStatus(`Uploading the photo: ${Math.round(fraction * 100)}%`));
  signal.addEventListener('abort', upload.abort);
  const { media } = await upload.promise;
  return media.id;
}

/** `#/edit-profile`: display name, bio, and a profile photo chosen from a new upload. */
export async function editProfileView({ view, signal }) {
  setTitle('Edit profile');
  const session = currentSession();
  const user = await api('GET', '/api/v1/users/' + encodeURIComponent(session.handle), { signal });
  /** undefined: the avatar stays; null: removed; else `{preview, done}`, done resolving to the photo's id. */
  let chosen;

  const name = h('input', { name: 'display_name', required: true, maxlength: DISPLAY_NAME_CHARS_MAX, autocomplete: 'name', value: user.display_name });
  const bio = h('textarea', { name: 'bio', rows: 4, maxlength: BIO_CHARS_MAX, value: user.bio || '' });
  const bioCount = h('span', {});
  const paintBioCount = () => { bioCount.textContent = `${bio.value.length} of ${BIO_CHARS_MAX} characters.`; };
  bio.addEventListener('input', paintBioCount);
  paintBioCount();

  const preview = h('div', { class: 'avatar-preview' });
  const photoStatus = h('p', { class: 'hint', role: 'status' });
  const picker = h('input', { type: 'file', id: 'avatar-photo', accept: 'image/*', class: 'visually-hidden', 'aria-describedby': 'avatar-hint' });
  const remove = h('button', { type: 'button', class: 'button secondary small' }, 'Remove photo');
  const paintPhoto = () => {
    const current = chosen === undefined ? user.avatar : null;
    const shown = avatar({ handle: user.handle, avatar: current }, 'large');
    if (chosen) shown.append(h('img', { src: chosen.preview, alt: '' }));
    preview.replaceChildren(shown);
    remove.hidden = !(chosen || (chosen === undefined && user.avatar));
  };
  const forgetChoice = () => {
    if (chosen) URL.revokeObjectURL(chosen.preview);
  };
  signal.addEventListener('abort', forgetChoice);
  picker.addEventListener('change', () => {
    const file = picker.files && picker.files[0];
    picker.value = '';
    if (!file) return;
    forgetChoice();
    const choice = { preview: URL.createObjectURL(file), done: null };
    choice.done = uploadAvatarPhoto(file, (text) => { if (chosen === choice) photoStatus.textContent = text; }, signal);
    chosen = choice;
    paintPhoto();
    choice.done.then(() => {
      if (chosen === choice) photoStatus.textContent = 'Photo ready: save to use it.';
    }, (error) => {
      if (chosen === choice && error.name !== 'AbortError') photoStatus.textContent = 'The photo did not upload: ' + messageOf(error);
    });
  });
  remove.addEventListener('click', () => {
    forgetChoice();
    chosen = null;
    photoStatus.textContent = 'Photo removed: save to confirm.';
    paintPhoto();
    picker.focus();
  });
  paintPhoto();

  view.append(h('section', { class: 'card column-narrow' },
    h('h1', {}, 'Edit profile'),
    h('p', { class: 'muted' }, 'Shown on your profile and beside your posts and comments, to everyone.'),
    form('stack edit-profile', [
      h('fieldset', { class: 'choices' },
        h('legend', {}, 'Profile photo'),
        h('div', { class: 'avatar-edit' },
          preview,
          h('div', { class: 'picker' }, picker,
            h('label', { for: 'avatar-photo', class: 'button secondary' }, icon('add'), 'Choose a photo'),
            remove)),
        h('p', { class: 'hint', id: 'avatar-hint' }, 'The middle square of the photo is shown, in a circle.'),
        photoStatus),
      field('Display name', name, `Your name as people know you, up to ${DISPLAY_NAME_CHARS_MAX} characters. Your handle @${user.handle} stays.`),
      field('Bio', bio, ['A few words about you. ', bioCount]),
      h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'button primary' }, 'Save profile'),
        h('a', { class: 'button secondary', href: '#/u/' + user.handle }, 'Cancel')),
    ], async () => {
      if (!name.value.trim()) throw new ApiError(0, 'missing_name', 'Please write a display name: spaces alone are not one.');
      const body = { display_name: name.value.trim(), bio: bio.value };
      if (chosen === null) body.avatar = null;
      else if (chosen) {
        photoStatus.textContent = 'Waiting for the photo to upload…';
        body.avatar = await chosen.done;
      }
      await api('PATCH', '/api/v1/me/profile', { body });
      toast('Profile saved.');
      go('/u/' + user.handle);
    })));
}

// ---------------------------------------------------------------- follow requests

/** Follow requests shown at once (the node answers at most 100). */
const REQUESTS_PAGE = 20;

/** `#/follow-requests`: who asked to follow your locked account, each with Approve and Reject. */
export function followRequestsView({ view, signal }) {
  setTitle('Follow requests');
  const list = h('ul', { class: 'card requests', 'aria-label': 'Follow requests' });
  view.append(h('div', { class: 'column' }, h('h1', {}, 'Follow requests'), list));
  const request = (entry) => {
    const element = h('li', { class: 'user-row' });
    const answer = async (approved, button) => {
      button.disabled = true;
      try {
        const path = `/api/v1/me/follow-requests/${encodeURIComponent(entry.handle)}`;
        await api(approved ? 'POST' : 'DELETE', approved ? path + '/approve' : path);
        element.replaceChildren(h('p', { class: 'muted', role: 'status' },
          approved ? `@${entry.handle} now follows you.` : `You turned down @${entry.handle}.`));
      } catch (error) {
        toast(messageOf(error));
        button.disabled = false;
      }
    };
    const approve = h('button', { type: 'button', class: 'button primary small', 'aria-label': `Approve ${entry.handle}` }, 'Approve');
    const reject = h('button', { type: 'button', class: 'button secondary small', 'aria-label': `Reject ${entry.handle}` }, 'Reject');
    approve.addEventListener('click', () => answer(true, approve));
    reject.addEventListener('click', () => answer(false, reject));
    element.append(avatar(entry),
      h('div', { class: 'grow' },
        h('a', { class: 'author', href: '#/u/' + entry.handle }, entry.display_name || '@' + entry.handle),
        h('br'), h('span', { class: 'muted small' }, 'asked ', timeElement(entry.since))),
      h('div', { class: 'row' }, approve, reject));
    return element;
  };
  pager({
    list,
    signal,
    load: (cursor) => api('GET', '/api/v1/me/follow-requests', { query: { limit: REQUESTS_PAGE, cursor }, signal }),
    item: request,
    empty: h('p', { class: 'muted center' }, 'Nobody is waiting. When your account is locked, people who follow you wait here for your answer.'),
  });
}

// ---------------------------------------------------------------- blocking

/**
 * Block / Unblock for someone else's profile. Asks the node whether you block them
 * (the profile does not say), and asks once more before blocking. Draws nothing until
 * the node answers: a "Block" drawn before that could stand while a block does.
 */
export function blockControl(user, signal) {
  const wrapper = h('div', { class: 'block-control row' });
  let blocked = false;
  const set = async (blocking, button) => {
    button.disabled = true;
    try {
      const path = `/api/v1/users/${encodeURIComponent(user.handle)}/block`;
      blocked = (await api(blocking ? 'POST' : 'DELETE', path)).blocked;
      toast(blocked
        ? `You blocked @${user.handle}. They can no longer follow you, see your followers posts, or like, comment on or mention you.`
        : `You unblocked @${user.handle}.`);
      idle();
      wrapper.querySelector('button').focus();
    } catch (error) {
      toast(messageOf(error));
      button.disabled = false;
    }
  };
  const idle = () => {
    const label = blocked ? 'Unblock' : 'Block';
    const button = h('button', { type: 'button', class: 'button secondary', 'aria-label': `${label} @${user.handle}` }, label);
    button.addEventListener('click', () => (blocked ? set(false, button) : ask()));
    wrapper.replaceChildren(button);
  };
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'button danger' }, 'Block');
    const no = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
    yes.addEventListener('click', () => set(true, yes));
    no.addEventListener('click', () => { idle(); wrapper.querySelector('button').focus(); });
    wrapper.replaceChildren(h('span', { class: 'confirm' }, `Block @${user.handle}? Follows between you end.`), yes, no);
    no.focus();
  };
  api('GET', `/api/v1/users/${encodeURIComponent(user.handle)}/block`, { signal, background: true }).then((answer) => {
    if (signal.aborted) return;
    blocked = answer.blocked;
    idle();
  }, () => {
    // Unknown: offer Block, whose answer says the state either way.
    if (!signal.aborted) idle();
  });
  return wrapper;
}

// ---------------------------------------------------------------- reports

/** The node's limit on a report's reason (docs/api.md, `POST /api/v1/posts/{id}/report`). */
const REPORT_REASON_CHARS_MAX = 500;
/** Reports the admin's list shows at once. */
const REPORTS_PAGE = 20;

/** "Report" under someone else's post: a reason, sent to the node's admins. */
export function reportControl(post) {
  const wrapper = h('div', { class: 'report' });
  const idle = () => wrapper.replaceChildren(
    h('button', { type: 'button', class: 'button secondary', onclick: ask }, 'Report'));
  const ask = () => {
    const reason = h('textarea', { name: 'reason', rows: 2, required: true, maxlength: REPORT_REASON_CHARS_MAX });
    const cancel = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
    cancel.addEventListener('click', () => { idle(); wrapper.querySelector('button').focus(); });
    wrapper.replaceChildren(form('report-form stack', [
      field('Why are you reporting this post?', reason, 'Only this node’s admins read it.'),
      h('div', { class: 'row' }, h('button', { type: 'submit', class: 'button primary' }, 'Send report'), cancel),
    ], async () => {
      await api('POST', `/api/v1/posts/${post.id}/report`, { body: { reason: reason.value } });
      wrapper.replaceChildren(h('p', { class: 'muted', role: 'status' }, 'Thank you: the admins will look at it.'));
      toast('Report sent.');
    }));
    reason.focus();
  };
  idle();
  return wrapper;
}

/** The admin page's card of open reports: each with its post, Hide (or Show) and Resolve. */
export function reportsCard(signal) {
  const list = h('ul', { class: 'reports', 'aria-label': 'Open reports' });
  const card = h('section', { class: 'card' }, h('h2', {}, 'Reports'),
    h('p', {}, 'Posts people reported. A hidden post is shown only to its author and admins.'), list);
  const report = (entry) => {
    const element = h('li', { class: 'report-item' });
    const who = entry.post_author.handle ? '@' + entry.post_author.handle : 'someone';
    const paint = () => {
      const hide = h('button', { type: 'button', class: 'button secondary small', 'aria-label': `${entry.hidden ? 'Show' : 'Hide'} the post by ${who}` },
        entry.hidden ? 'Show' : 'Hide');
      hide.addEventListener('click', async () => {
        hide.disabled = true;
        try {
          const answer = await api('POST', `/api/v1/admin/posts/${entry.post_id}/${entry.hidden ? 'unhide' : 'hide'}`);
          entry.hidden = answer.hidden;
          toast(entry.hidden ? `The post by ${who} is hidden.` : `The post by ${who} is shown again.`);
          paint();
          element.querySelector('button').focus();
        } catch (error) {
          toast(messageOf(error));
          hide.disabled = false;
        }
      });
      const resolve = h('button', { type: 'button', class: 'button secondary small', 'aria-label': `Resolve the report by @${entry.reporter.handle}` }, 'Resolve');
      resolve.addEventListener('click', async () => {
        resolve.disabled = true;
        try {
          await api('POST', `/api/v1/admin/reports/${entry.id}/resolve`);
          element.replaceChildren(h('p', { class: 'muted', role: 'status' }, `Resolved the report on the post by ${who}.`));
        } catch (error) {
          toast(messageOf(error));
          resolve.disabled = false;
        }
      });
      element.replaceChildren(
        h('p', {},
          entry.post_deleted ? `A deleted post by ${who}` : h('a', { href: '#/post/' + entry.post_id }, `Post by ${who}`),
          entry.hidden ? h('span', { class: 'badge' }, 'Hidden') : null),
        entry.post && entry.post.caption ? h('p', { class: 'muted small' }, entry.post.caption) : null,
        h('p', {}, h('span', { class: 'muted' }, `@${entry.reporter.handle || '?'}, `, timeElement(entry.created_at), ': '), entry.reason),
        h('div', { class: 'row' }, entry.post_deleted ? null : hide, resolve));
    };
    paint();
    return element;
  };
  pager({
    list,
    signal,
    load: (cursor) => api('GET', '/api/v1/admin/reports', { query: { limit: REPORTS_PAGE, cursor }, signal }),
    item: report,
    empty: h('p', { class: 'muted' }, 'No open reports.'),
  });
  return card;
}
