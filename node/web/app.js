// The Edgenode web app: every screen, a hash router, and the banner that says when
// the node can't be reached. No framework: screens build DOM nodes with `h()` (never
// HTML strings; the page enforces Trusted Types) and fill them as answers arrive.

import {
  api, ApiError, Unreachable, currentSession, saveSession, on, mediaObjectUrl, sha256Hex, alreadyUploaded, uploadPhoto,
  knownDevice, rememberDevice, downloadExport,
} from './api.js?v=__BUILD__';
import { paintBlurhash } from './blurhash.js?v=__BUILD__';
import { accountView, resetView, goodbyeView, adminUsersCard, peopleText } from './account.js?v=__BUILD__';
import {
  renderBell, notificationsView, editProfileView, followRequestsView, blockControl, reportControl, reportsCard,
} from './people.js?v=__BUILD__';

const FEED_PAGE_POSTS = 10;
const GRID_PAGE_POSTS = 24;
const COMMENTS_PAGE = 50;
const SEARCH_RESULTS_MAX = 30;
// The node's own limits (docs/api.md, node/src/api): checked here only to say so early.
const PHOTOS_PER_POST_MAX = 10;
const CAPTION_CHARS_MAX = 2200;
const COMMENT_CHARS_MAX = 1000;
const DRAFT_CAPTION_KEY = 'edgenode.draft.caption';

const $ = (selector) => document.querySelector(selector);

/** `h('a', {href, class, onclick}, 'text', child, [children])`: one DOM element. */
/** "1.2 GB used · 20 GB free of 32 GB" from the node's storage figures. */
function storageText(storage) {
  if (!storage) return 'not reported by this node';
  const size = (bytes) => {
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let value = bytes, unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
    return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
  };
  const used = `${size(storage.used_bytes)} used`;
  return storage.free_bytes == null ? used : `${used} · ${size(storage.free_bytes)} free of ${size(storage.total_bytes)}`;
}

function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'value' || name === 'checked') element[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  feed: 'M4 5h16v4H4zM4 11h16v8H4z',
  search: 'M10.5 4a6.5 6.5 0 0 1 5.2 10.4l4.4 4.4-1.4 1.4-4.4-4.4A6.5 6.5 0 1 1 10.5 4zm0 2a4.5 4.5 0 1 0 0 9 4.5 4.5 0 0 0 0-9z',
  add: 'M11 4h2v7h7v2h-7v7h-2v-7H4v-2h7z',
  user: 'M12 4a4 4 0 1 1 0 8 4 4 0 0 1 0-8zm0 10c4.4 0 8 2 8 5v1H4v-1c0-3 3.6-5 8-5z',
  admin: 'M12 2l8 3v6c0 5-3.4 9.4-8 11-4.6-1.6-8-6-8-11V5l8-3zm0 2.2L6 6.4V11c0 3.9 2.5 7.4 6 8.8 3.5-1.4 6-4.9 6-8.8V6.4l-6-2.2z',
  heart: 'M12 21s-7.5-4.6-9.4-9.2C1.2 8.3 3.3 4.5 7 4.5c2 0 3.6 1.1 5 2.9 1.4-1.8 3-2.9 5-2.9 3.7 0 5.8 3.8 4.4 7.3C19.5 16.4 12 21 12 21z',
  comment: 'M4 4h16v12H8l-4 4V4zm2 2v9.2L7.2 14H18V6H6z',
  signin: 'M10 3h9v18h-9v-2h7V5h-7V3zm1 5 4 4-4 4-1.4-1.4 1.6-1.6H3v-2h8.2L9.6 9.4 11 8z',
  bell: 'M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6v-5c0-3.1-1.6-5.6-4.5-6.3V4a1.5 1.5 0 0 0-3 0v.7C7.6 5.4 6 7.9 6 11v5l-2 2v1h16v-1l-2-2z',
};

function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

// ---------------------------------------------------------------- app state

/** `GET /api/v1/node`, loaded first; null until the node has answered once. */
let node = null;
/** The node's name, kept so the offline banner can say which node is missing. */
const NODE_NAME_KEY = 'edgenode.node-name';
/**
 * Where the signed-in person's data is kept (their profile's `nodes`, this node's id
 * beside them), so that the banner can send them to a sibling while this node is down.
 * localStorage is per origin: each node's address keeps its own list.
 */
const REPLICAS_KEY = 'edgenode.replicas';
/** The profile's `nodes` were read since the app started (they change when nodes pair). */
let replicasRead = false;
/** Aborted when the screen changes: pending loads stop, blob: URLs are freed. */
let screen = new AbortController();
let firstRender = true;

function go(path) {
  const hash = '#' + path;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function messageOf(error) {
  if (error instanceof Unreachable) return `Can't reach the node right now.`;
  if (error instanceof ApiError) return peopleText(error) || error.message;
  return 'Something went wrong: ' + (error && error.message ? error.message : String(error));
}

let toastTimer = 0;
function toast(text) {
  const element = $('#toast');
  element.textContent = text;
  element.classList.add('shown');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => element.classList.remove('shown'), 4000);
}

function showBanner() {
  const banner = $('#banner');
  // Every failed request says so; rebuilding a banner in view would take a tap or focus away.
  if (!banner.hidden) return;
  const known = node ? node.name : localStorage.getItem(NODE_NAME_KEY);
  const name = known ? `“${known}”` : 'your Edgenode';
  banner.replaceChildren(
    h('p', {}, h('strong', {}, `Can't reach ${name}.`), ' Check that you are on its network and that it is switched on.'),
    h('button', { type: 'button', class: 'button', onclick: () => { hideBanner(); render(); } }, 'Retry'),
    elsewhereNodes(),
  );
  banner.hidden = false;
}

/** Remembers the replicas a profile of the signed-in person lists (`nodes`, home first). */
function rememberReplicas(profile) {
  const session = currentSession();
  if (!profile || !Array.isArray(profile.nodes) || !session || profile.handle !== session.handle) return;
  const nodes = profile.nodes.map((held) => ({
    id: String(held.id),
    name: typeof held.name === 'string' ? held.name : null,
    addresses: (held.addresses || []).filter((address) => typeof address === 'string' && address),
    this_node: Boolean(held.this_node),
  }));
  localStorage.setItem(REPLICAS_KEY, JSON.stringify({ handle: profile.handle, node_id: node ? node.node_id : null, nodes }));
  replicasRead = true;
}

/** The replicas other than this node, as remembered: `{handle, nodes}` or null. */
function otherReplicas() {
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(REPLICAS_KEY) || 'null');
  } catch {
    return null;
  }
  if (!saved || typeof saved.handle !== 'string' || !Array.isArray(saved.nodes)) return null;
  const here = node ? node.node_id : saved.node_id;
  const nodes = saved.nodes.filter((held) => !held.this_node && held.id !== here);
  return nodes.length ? { handle: saved.handle, nodes } : null;
}

/** `https://<address>/#/signin?handle=…` on another node; an address may carry its scheme. */
function signInUrl(address, handle) {
  const origin = /^https:\/\//.test(address) ? address.replace(/\/+$/, '') : 'https://' + address;
  return `${origin}/#/signin?handle=${encodeURIComponent(handle)}`;
}

/**
 * For the banner: the other nodes that hold the person's account, as links to their
 * sign-in screens, and an honest word about those whose address the app never learnt.
 */
function elsewhereNodes() {
  const replicas = otherReplicas();
  if (!replicas) return null;
  const reachable = replicas.nodes.filter((held) => held.addresses.length);
  const unknown = replicas.nodes.length - reachable.length;
  const label = (held) => held.name || held.addresses[0] || 'node ' + held.id;
  return h('div', { class: 'elsewhere' },
    reachable.length
      ? [
        h('p', {}, `Your account and photos are also kept on ${reachable.length === 1 ? 'another node' : 'other nodes'}: sign in there to carry on.`),
        h('div', { class: 'row' }, reachable.map((held) =>
          h('a', { class: 'button', href: signInUrl(held.addresses[0], replicas.handle), title: held.addresses.join(', ') }, `Open ${label(held)}`))),
      ]
      : null,
    unknown
      ? h('p', { class: 'small' }, `${reachable.length ? 'Also kept' : 'Your account and photos are also kept'} on ${plural(unknown, 'other node', 'other nodes')} whose address this app does not know; your admin does.`)
      : null);
}

function hideBanner() {
  $('#banner').hidden = true;
}

on('unreachable', showBanner);
on('reachable', hideBanner);
on('signedOut', (error) => {
  // A disabled account or an expired session is said as such; any other end plainly.
  toast((error && peopleText(error)) || 'Your session ended. Please sign in again.');
  go('/signin');
});
window.addEventListener('online', () => {
  if (!$('#banner').hidden) { hideBanner(); render(); }
});

// ---------------------------------------------------------------- router

const ROUTES = [
  { pattern: /^\/feed$/, view: feedView, signedIn: true },
  { pattern: /^\/post\/([0-9A-Za-z_-]+)$/, view: postView },
  { pattern: /^\/u\/([a-z0-9_]+)$/, view: profileView },
  { pattern: /^\/upload$/, view: uploadView, signedIn: true },
  { pattern: /^\/search$/, view: searchView },
  { pattern: /^\/admin$/, view: adminView, signedIn: true },
  { pattern: /^\/account$/, view: accountView, signedIn: true },
  { pattern: /^\/edit-profile$/, view: editProfileView, signedIn: true },
  { pattern: /^\/notifications$/, view: notificationsView, signedIn: true },
  { pattern: /^\/follow-requests$/, view: followRequestsView, signedIn: true },
  { pattern: /^\/goodbye$/, view: goodbyeView, signedOut: true },
  { pattern: /^\/reset$/, view: resetView, signedOut: true },
  { pattern: /^\/signin$/, view: signInView, signedOut: true },
  { pattern: /^\/join$/, view: joinView, signedOut: true },
  { pattern: /^\/claim$/, view: claimView },
];

function currentRoute() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/feed';
  const [path, query] = raw.split('?', 2);
  return { path: path === '/' ? '/feed' : path, params: new URLSearchParams(query || '') };
}

/**
 * The screen an address without `#/` stands for, or null: the box label's older link
 * `#pin=…&claim=CODE` opens the claim screen with its code.
 */
function legacyPath(hash) {
  if (!hash || hash.startsWith('#/')) return null;
  const claim = new URLSearchParams(hash.slice(1)).get('claim');
  return claim && claim.trim() ? '/claim?code=' + encodeURIComponent(claim.trim()) : null;
}

async function render() {
  const legacy = legacyPath(location.hash);
  if (legacy) history.replaceState(null, '', '#' + legacy);
  // `#main` and other in-page anchors are not screens: they leave the screen shown.
  // Before the first screen nothing is shown but "Loading…": such an address opens the feed.
  else if (location.hash && !location.hash.startsWith('#/') && !firstRender) return;
  screen.abort();
  screen = new AbortController();
  const signal = screen.signal;
  const { path, params } = currentRoute();
  const main = $('#main');
  if (!node) {
    try {
      node = await api('GET', '/api/v1/node');
    } catch (error) {
      if (signal.aborted) return;
      main.replaceChildren(h('section', { class: 'card narrow center' },
        h('h1', {}, 'Edgenode'),
        failureNodes(error)));
      return;
    }
    $('#node-name').textContent = node.name;
    localStorage.setItem(NODE_NAME_KEY, node.name);
  }
  if (!node.claimed && path !== '/claim') return go('/claim');
  if (node.claimed && path === '/claim') return go(currentSession() ? '/feed' : '/signin');
  const session = currentSession();
  let route = null, match = null;
  for (const candidate of ROUTES) {
    match = path.match(candidate.pattern);
    if (match) { route = candidate; break; }
  }
  if (route && route.signedIn && !session) return go('/signin?next=' + encodeURIComponent(path));
  if (route && route.signedOut && session) return go('/feed');
  if (node.claimed) renderNav(path);
  else $('#nav').hidden = true;
  if (session && !replicasRead) {
    replicasRead = true;
    api('GET', '/api/v1/users/' + encodeURIComponent(session.handle)).then(rememberReplicas, () => { replicasRead = false; });
  }
  const view = h('div', { class: 'view' });
  main.replaceChildren(view);
  try {
    if (route) await route.view({ view, match, params, signal });
    else notFoundView({ view });
  } catch (error) {
    if (signal.aborted || error.name === 'AbortError') return;
    view.replaceChildren(h('section', { class: 'card narrow' },
      h('h1', {}, 'Could not show this'),
      failureNodes(error)));
  }
  if (!firstRender && !signal.aborted) {
    const heading = main.querySelector('h1');
    if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
    window.scrollTo(0, 0);
  }
  firstRender = false;
}

/** Why a screen is missing; a Try again button unless the banner already offers Retry. */
function failureNodes(error) {
  if (error instanceof Unreachable) {
    return h('p', {}, 'The app will show this as soon as the node answers: use Retry above when you are back on its network.');
  }
  return [h('p', { class: 'error' }, messageOf(error)), h('button', { type: 'button', class: 'button', onclick: render }, 'Try again')];
}

function setTitle(text) {
  document.title = node ? `${text} · ${node.name}` : text;
}

/** A tap on the tab of the screen you are on reloads it (new posts in the feed). */
function again(event) {
  if (event.currentTarget.getAttribute('href') === location.hash) {
    event.preventDefault();
    render();
  }
}

function renderNav(path) {
  const nav = $('#nav');
  const session = currentSession();
  const links = session
    ? [
      ['/feed', 'Feed', 'feed'],
      ['/search', 'Search', 'search'],
      ['/upload', 'New post', 'add'],
      ['/u/' + session.handle, 'Profile', 'user'],
      session.admin ? ['/admin', 'Admin', 'admin'] : null,
    ]
    : [['/search', 'Search', 'search'], ['/signin', 'Sign in', 'signin']];
  nav.replaceChildren(h('ul', {}, links.filter(Boolean).map(([target, label, iconName]) =>
    h('li', {}, h('a', { href: '#' + target, 'aria-current': path === target ? 'page' : null, onclick: again },
      icon(iconName), h('span', {}, label))))));
  nav.hidden = false;
  document.body.classList.add('has-tabs');
  renderBell(path);
}

// ---------------------------------------------------------------- pieces

function ago(milliseconds) {
  const seconds = (milliseconds - Date.now()) / 1000;
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const steps = [[60, 'second'], [3600, 'minute'], [86400, 'hour'], [604800, 'day']];
  if (Math.abs(seconds) < 45) return 'just now';
  for (let index = 1; index < steps.length; index++) {
    if (Math.abs(seconds) < steps[index][0]) return format.format(Math.round(seconds / steps[index - 1][0]), steps[index][1]);
  }
  return new Date(milliseconds).toLocaleDateString();
}

function timeElement(milliseconds) {
  const date = new Date(milliseconds);
  return h('time', { datetime: date.toISOString(), title: date.toLocaleString() }, ago(milliseconds));
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

/** The caption as text with each #tag a link to its search. */
function captionNodes(caption) {
  return caption.split(/(#[\p{L}\p{N}_]+)/u).map((part) =>
    part.startsWith('#') && part.length > 1
      ? h('a', { class: 'tag', href: '#/search?q=' + encodeURIComponent(part.toLowerCase()) }, part)
      : part);
}

const VISIBILITY_LABELS = { public: 'Everyone', followers: 'Followers', private: 'Only me' };

// One observer for every lazy photo and list end on the screen.
const lazyCallbacks = new WeakMap();
const lazyObserver = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const callback = lazyCallbacks.get(entry.target);
    if (callback) callback();
  }
}, { rootMargin: '800px 0px' });

function whenNear(element, callback, once = true) {
  lazyCallbacks.set(element, () => {
    if (once) { lazyObserver.unobserve(element); lazyCallbacks.delete(element); }
    callback();
  });
  lazyObserver.observe(element);
}

// One observer for every photo shown: a frame that grows (a phone turned, a window
// widened) gets a bigger variant when the one it has no longer fills it.
const resizeCallbacks = new WeakMap();
const resizeObserver = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const callback = resizeCallbacks.get(entry.target);
    if (callback) callback();
  }
});

/** The variants the node makes, smallest first, with the box each fits (docs/api.md). */
const VARIANTS = [['thumb', 256], ['display', 1080]];

/** Pixel size of one variant of `media`: as the node said, else from the original's; null if unknown. */
function variantSize(media, variant, fitPixels) {
  const given = media.variants && media.variants[variant];
  if (given && given.width && given.height) return given;
  if (!media.width || !media.height) return null;
  const scale = Math.min(1, fitPixels / Math.max(media.width, media.height));
  return { width: Math.round(media.width * scale), height: Math.round(media.height * scale) };
}

/**
 * The smallest variant whose pixels cover `frame` as laid out, at this screen's pixel
 * ratio (photos fill their frame: `object-fit: cover`), else the largest. Called once
 * the frame is laid out, which is why photos are not chosen by `srcset`: their bytes
 * come through fetch with the token.
 */
function variantFor(media, frame) {
  const box = frame.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const width = box.width * ratio, height = box.height * ratio;
  for (const [variant, fitPixels] of VARIANTS.slice(0, -1)) {
    const size = variantSize(media, variant, fitPixels);
    // Size unknown (a neighbour's photo not cached here yet): judge by the box it fits.
    const enough = size ? size.width >= width && size.height >= height : Math.max(width, height) <= fitPixels;
    // A small original: this variant is already the whole photo.
    const whole = size && media.width && size.width >= media.width;
    if (enough || whole) return variant;
  }
  return VARIANTS[VARIANTS.length - 1][0];
}

/**
 * A photo: its blurhash at once, then, when it scrolls near, the variant that fits
 * the frame on this screen (a bigger one if the frame grows). `square` crops to a
 * square tile.
 */
function photo(media, signal, { alt = '', square = false } = {}) {
  const known = media.width && media.height;
  const frame = h('div', { class: 'photo' + (square ? ' square' : '') });
  // A photo of unknown size takes its own shape when it arrives.
  if (!square) frame.style.aspectRatio = known ? `${media.width} / ${media.height}` : '1';
  const canvas = h('canvas', { class: 'blur', 'aria-hidden': 'true' });
  if (paintBlurhash(canvas, media.blurhash, square || !known ? 1 : media.width / media.height)) frame.append(canvas);
  const image = h('img', { alt, decoding: 'async', width: media.width, height: media.height });
  frame.append(image);
  image.addEventListener('load', () => {
    frame.classList.add('loaded');
    if (!square && !known && image.naturalWidth) frame.style.aspectRatio = `${image.naturalWidth} / ${image.naturalHeight}`;
  });
  /** Index in VARIANTS of the variant shown or on its way; -1 before the first. */
  let rank = -1;
  let url = null;
  const load = () => {
    const variant = variantFor(media, frame);
    const wanted = VARIANTS.findIndex(([name]) => name === variant);
    if (wanted <= rank || signal.aborted) return;
    const first = rank < 0;
    rank = wanted;
    mediaObjectUrl(media.id, variant, signal).then((next) => {
      if (signal.aborted) { URL.revokeObjectURL(next); return; }
      const previous = url;
      url = next;
      image.src = next;
      if (previous) image.addEventListener('load', () => URL.revokeObjectURL(previous), { once: true });
    }).catch((error) => {
      if (signal.aborted || error.name === 'AbortError' || !first) return;
      frame.classList.add('failed');
      frame.append(h('span', { class: 'photo-error' }, 'Photo unavailable'));
    });
  };
  signal.addEventListener('abort', () => {
    resizeObserver.unobserve(frame);
    if (url) URL.revokeObjectURL(url);
  });
  whenNear(frame, () => {
    load();
    resizeCallbacks.set(frame, load);
    resizeObserver.observe(frame);
  });
  return frame;
}

function photoAlt(post, index) {
  const who = '@' + post.author.handle;
  const count = post.media.length > 1 ? ` (${index + 1} of ${post.media.length})` : '';
  return post.caption ? `Photo by ${who}${count}: ${post.caption}` : `Photo by ${who}${count}`;
}

function likeButton(post) {
  const count = h('span', { class: 'count' });
  const button = h('button', { type: 'button', class: 'action like' }, icon('heart'), count);
  const paint = () => {
    button.setAttribute('aria-pressed', String(post.liked_by_me));
    button.setAttribute('aria-label', `${post.liked_by_me ? 'Liked' : 'Like'}, ${plural(post.like_count, 'like', 'likes')}`);
    count.textContent = String(post.like_count);
  };
  paint();
  if (!currentSession()) {
    button.disabled = true;
    button.title = 'Sign in to like';
    return button;
  }
  button.addEventListener('click', async () => {
    const liked = !post.liked_by_me;
    const before = { liked_by_me: post.liked_by_me, like_count: post.like_count };
    post.liked_by_me = liked;
    post.like_count += liked ? 1 : -1;
    paint();
    try {
      const answer = await api(liked ? 'PUT' : 'DELETE', `/api/v1/posts/${post.id}/like`);
      post.liked_by_me = answer.liked;
      post.like_count = answer.like_count;
    } catch (error) {
      Object.assign(post, before);
      toast(messageOf(error));
    }
    paint();
  });
  return button;
}

/** A person's display name when they chose one (it starts as the handle), else null. */
function chosenName(person) {
  const name = person.display_name;
  return name && name !== person.handle ? name : null;
}

/** The link to an author's profile: their name and handle, or the handle alone. */
function authorLink(author) {
  const named = chosenName(author);
  return [
    h('a', { class: 'author', href: '#/u/' + author.handle }, named || '@' + author.handle),
    named ? h('span', { class: 'muted handle' }, '@' + author.handle) : null,
  ];
}

function authorLine(post) {
  return h('div', { class: 'byline' },
    avatar(post.author, 'small'),
    authorLink(post.author),
    h('span', { class: 'muted' }, ' · ', timeElement(post.created_at)),
    post.visibility !== 'public' ? h('span', { class: 'badge' }, VISIBILITY_LABELS[post.visibility] || post.visibility) : null);
}

/**
 * The URL of a person's profile photo as the node gave it (`avatar.url`), or null:
 * this node's path, with `?node=<id>` for a user of another node (fetched through this one).
 */
function avatarUrl(person) {
  const url = person.avatar && person.avatar.url;
  return typeof url === 'string' && /^\/api\/v1\/media\/[0-9a-f]{64}\/avatar(\?node=[0-9a-f]{16})?$/.test(url) ? url : null;
}

/**
 * A person's round picture beside their name (so hidden from screen readers): their
 * profile photo when they chose one, over their initial on a colour of their handle,
 * which stays if the photo fails. Avatars are public, so a plain `<img>` loads it
 * (and the browser caches it) without the token.
 */
function avatar(person, size = '') {
  const handle = person.handle || '';
  // A colour from the handle, dark enough for white text (contrast ≥ 4.5:1).
  let hash = 0;
  for (const char of handle) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const element = h('span', { class: 'avatar ' + size, 'aria-hidden': 'true' }, handle.slice(0, 1).toUpperCase());
  element.style.backgroundColor = `hsl(${hash % 360} 55% 32%)`;
  const url = avatarUrl(person);
  if (url) {
    const image = h('img', { src: url, alt: '', width: 256, height: 256, decoding: 'async', loading: 'lazy' });
    image.addEventListener('error', () => image.remove());
    element.append(image);
  }
  return element;
}

function postCard(post, signal) {
  const open = '#/post/' + post.id;
  const shown = post.media.slice(0, 4);
  const photos = shown.length
    ? h('div', { class: 'photos count-' + shown.length }, shown.map((media, index) => {
      const link = h('a', { class: 'photo-link', href: open }, photo(media, signal, {
        alt: photoAlt(post, index), square: shown.length > 1,
      }));
      if (index === 3 && post.media.length > 4) link.append(h('span', { class: 'more' }, `+${post.media.length - 4}`));
      return link;
    }))
    : null;
  return h('article', { class: 'card post' },
    authorLine(post),
    photos,
    post.caption ? h('p', { class: 'caption' }, captionNodes(post.caption)) : null,
    h('div', { class: 'actions' },
      likeButton(post),
      h('a', { class: 'action', href: open, 'aria-label': `${plural(post.comment_count, 'comment', 'comments')}, open post` },
        icon('comment'), h('span', { class: 'count' }, String(post.comment_count)))));
}

function gridTile(post, signal) {
  const first = post.media[0];
  return h('li', {}, h('a', { class: 'tile', href: '#/post/' + post.id },
    first
      ? photo(first, signal, { alt: photoAlt(post, 0), square: true })
      : h('span', { class: 'tile-text' }, post.caption.slice(0, 80)),
    post.media.length > 1 ? h('span', { class: 'more' }, `${post.media.length}`) : null));
}

/**
 * Infinite scroll over a `{items, next_cursor}` list: loads a page when the end of
 * `list` comes near, and offers a button for the same (keyboards, screen readers).
 */
function pager({ list, load, item, signal, empty }) {
  let cursor = null, done = false, busy = false, count = 0, pages = 0;
  /** The last load failed: only a person (or the banner's Retry) tries again. */
  let stalled = false;
  const status = h('p', { class: 'muted center', role: 'status' });
  const more = h('button', { type: 'button', class: 'button secondary', hidden: true, onclick: () => { stalled = false; next(); } }, 'Load more');
  const end = h('div', { class: 'list-end' }, status, more);
  list.after(end);
  async function next() {
    if (busy || done || signal.aborted) return;
    busy = true;
    more.hidden = true;
    status.textContent = 'Loading…';
    try {
      const page = await load(cursor, signal);
      if (signal.aborted) return;
      for (const entry of page.items) list.append(item(entry, signal));
      count += page.items.length;
      pages += 1;
      cursor = page.next_cursor;
      done = !cursor;
      status.textContent = done && pages > 1 ? 'That’s everything.' : '';
      if (done && !count && empty) end.replaceChildren(empty);
      more.textContent = 'Load more';
      more.hidden = done;
    } catch (error) {
      if (signal.aborted || error.name === 'AbortError') return;
      stalled = true;
      status.textContent = messageOf(error);
      more.textContent = 'Try again';
      more.hidden = false;
    } finally {
      busy = false;
    }
    // A short page may leave the end in view: the observer won't fire again for it.
    if (!stalled && !done && !signal.aborted && end.getBoundingClientRect().top < innerHeight + 800) next();
  }
  whenNear(end, () => { if (!stalled) next(); }, false);
  next();
}

function field(label, input, hint) {
  const id = input.id || 'field-' + Math.random().toString(36).slice(2);
  input.id = id;
  const hintElement = hint ? h('p', { class: 'hint', id: id + '-hint' }, hint) : null;
  if (hintElement) input.setAttribute('aria-describedby', id + '-hint');
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintElement);
}

/** A form whose submit runs `action`; its errors appear in an alert under it. */
function form(className, children, action) {
  const error = h('p', { class: 'error', role: 'alert' });
  const element = h('form', { class: className, novalidate: false }, children, error);
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = element.querySelector('button[type=submit]');
    error.textContent = '';
    if (button) button.disabled = true;
    try {
      await action(element);
    } catch (failure) {
      error.textContent = messageOf(failure);
    } finally {
      if (button) button.disabled = false;
    }
  });
  return element;
}

// ---------------------------------------------------------------- sign in, join, claim

const HANDLE_HINT = '3 to 30 characters: a–z, 0–9 and _.';
// The node's rule (docs/api.md, `weak_password`): 10 characters or more, and not easy to
// guess; its refusal says why, in the form's alert.
const PASSWORD_HINT = 'At least 10 characters and hard to guess: a few uncommon words work well.';

function handleInput(autocomplete) {
  return h('input', {
    name: 'handle', required: true, autocomplete, autocapitalize: 'none', autocorrect: 'off', spellcheck: 'false',
    minlength: 3, maxlength: 30,
  });
}

/** A new password needs 10 characters; signing in takes any (accounts made before
 * the rule have 8). */
function passwordInput(autocomplete) {
  const minlength = autocomplete === 'new-password' ? 10 : null;
  return h('input', { name: 'password', type: 'password', required: true, minlength, autocomplete });
}

async function startSession(answer, handle) {
  rememberDevice(handle, answer.device);
  saveSession({ token: answer.token, user_id: answer.user_id, handle, admin: Boolean(answer.admin) });
  // The profile says whether this is an admin (a session's answer does not) and which
  // nodes hold the account, for the banner to offer if this one stops answering.
  let profile = null;
  try {
    profile = await api('GET', '/api/v1/users/' + encodeURIComponent(handle));
  } catch (error) {
    if (answer.admin === undefined) throw error;
  }
  if (profile) {
    saveSession({ ...currentSession(), admin: Boolean(profile.admin) });
    rememberReplicas(profile);
  }
}

function signInView({ view, params }) {
  setTitle('Sign in');
  const handle = handleInput('username');
  // Another node's banner sends people here with their handle (`#/signin?handle=…`).
  const given = (params.get('handle') || '').trim().toLowerCase();
  if (given) handle.value = given;
  const password = passwordInput('current-password');
  view.append(h('section', { class: 'card narrow' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, `to ${node.name}, your neighbourhood’s photo node.`),
    form('stack', [
      field('Handle', handle),
      field('Password', password),
      h('button', { type: 'submit', class: 'button primary' }, 'Sign in'),
    ], async () => {
      const name = handle.value.trim().toLowerCase();
      const body = { handle: name, password: password.value };
      const device = knownDevice(name);
      if (device) body.device = device;
      const answer = await api('POST', '/api/v1/sessions', { body });
      await startSession(answer, name);
      go(params.get('next') || '/feed');
    }),
    h('p', {}, 'Got an invite code? ', h('a', { href: '#/join' }, 'Join this node')),
    h('p', {}, 'Forgot your password? ', h('a', {
      href: '#/reset', onclick: (event) => {
        // The handle typed so far goes along, so it need not be typed twice.
        const name = handle.value.trim().toLowerCase();
        if (name) { event.preventDefault(); go('/reset?handle=' + encodeURIComponent(name)); }
      },
    }, 'Have a reset code?'))));
}

function joinView({ view, params }) {
  setTitle('Join');
  const code = h('input', {
    name: 'invite', required: true, autocomplete: 'off', autocapitalize: 'characters', autocorrect: 'off', spellcheck: 'false',
    maxlength: 64, value: params.get('code') || '',
  });
  const handle = handleInput('username');
  const password = passwordInput('new-password');
  view.append(h('section', { class: 'card narrow' },
    h('h1', {}, 'Join ' + node.name),
    h('p', { class: 'muted' }, 'Ask the node’s admin for an invite code.'),
    form('stack', [
      field('Invite code', code, 'Like 7K3QZ-M9X2A; small letters and spaces are fine.'),
      field('Choose a handle', handle, HANDLE_HINT),
      field('Choose a password', password, PASSWORD_HINT),
      h('button', { type: 'submit', class: 'button primary' }, 'Create account'),
    ], async () => {
      const name = handle.value.trim().toLowerCase();
      // The node compares codes normalised (case, hyphens and spaces ignored).
      const answer = await api('POST', '/api/v1/accounts', { body: { handle: name, password: password.value, invite: code.value.trim() } });
      await startSession(answer, name);
      toast(`Welcome, @${name}!`);
      go('/search');
    }),
    h('p', {}, 'Already have an account? ', h('a', { href: '#/signin' }, 'Sign in'))));
}

function claimView({ view, params }) {
  setTitle('Set up');
  // The label's link carries the code (`#/claim?code=…`, through the onboarding page).
  const code = h('input', {
    name: 'claim', required: true, autocomplete: 'off', autocapitalize: 'characters', autocorrect: 'off', spellcheck: 'false',
    maxlength: 64, value: params.get('code') || '',
  });
  const handle = handleInput('username');
  const password = passwordInput('new-password');
  view.append(h('section', { class: 'card narrow' },
    h('h1', {}, 'Set up ' + node.name),
    h('p', {}, 'This node has no owner yet. Claim it with the code on its label (or from ',
      h('code', {}, 'edgenode status'), ' on the box), and choose the admin account.'),
    form('stack', [
      field('Claim code', code, params.get('code') ? 'Filled in from the label’s link.' : null),
      field('Admin handle', handle, HANDLE_HINT),
      field('Password', password, PASSWORD_HINT),
      h('button', { type: 'submit', class: 'button primary' }, 'Claim this node'),
    ], async () => {
      const name = handle.value.trim().toLowerCase();
      const answer = await api('POST', '/api/v1/accounts', { body: { handle: name, password: password.value, claim: code.value.trim() } });
      await startSession(answer, name);
      node = { ...node, claimed: true };
      toast('The node is yours. Invite your household from Admin.');
      go('/feed');
    })));
}

// ---------------------------------------------------------------- feed and posts

function feedView({ view, signal }) {
  setTitle('Feed');
  const list = h('div', { class: 'feed' });
  view.append(h('div', { class: 'column' },
    h('div', { class: 'view-head' }, h('h1', {}, 'Feed'), h('a', { class: 'button primary', href: '#/upload' }, icon('add'), 'New post')),
    list));
  pager({
    list,
    signal,
    load: (cursor) => api('GET', '/api/v1/feed', { query: { limit: FEED_PAGE_POSTS, cursor }, signal }),
    item: postCard,
    empty: h('div', { class: 'card empty' },
      h('p', {}, 'Nothing here yet.'),
      h('p', {}, h('a', { href: '#/upload' }, 'Share a photo'), ' or ', h('a', { href: '#/search' }, 'find neighbours to follow'), '.')),
  });
}

async function postView({ view, match, signal }) {
  setTitle('Post');
  const post = await api('GET', '/api/v1/posts/' + match[1], { signal });
  const session = currentSession();
  const mine = session && session.user_id === post.author.user_id;
  const comments = h('ol', { class: 'comments' });
  const commentCount = h('span', {}, String(post.comment_count));
  const section = h('article', { class: 'card post single' },
    authorLine(post),
    h('h1', { class: 'visually-hidden' }, `Post by @${post.author.handle}`),
    h('div', { class: 'photos-full' }, post.media.map((media, index) =>
      photo(media, signal, { alt: photoAlt(post, index) }))),
    post.caption ? h('p', { class: 'caption' }, captionNodes(post.caption)) : null,
    post.tags.length ? h('p', { class: 'tags' }, post.tags.map((tag) =>
      h('a', { class: 'tag chip', href: '#/search?q=' + encodeURIComponent('#' + tag) }, '#' + tag))) : null,
    h('div', { class: 'actions' }, likeButton(post), mine ? deleteControl(post) : session ? reportControl(post) : null),
    h('h2', { id: 'comments' }, 'Comments (', commentCount, ')'),
    comments);
  view.append(h('div', { class: 'column' }, section));
  const comment = (entry) => h('li', {},
    h('div', { class: 'byline' }, avatar(entry.author, 'small'),
      authorLink(entry.author),
      h('span', { class: 'muted' }, ' · ', timeElement(entry.created_at))),
    h('p', {}, entry.text));
  pager({
    list: comments,
    signal,
    load: (cursor) => api('GET', `/api/v1/posts/${post.id}/comments`, { query: { limit: COMMENTS_PAGE, cursor }, signal }),
    item: comment,
    empty: h('p', { class: 'muted' }, 'No comments yet.'),
  });
  if (session) {
    const text = h('textarea', { name: 'text', rows: 2, required: true, maxlength: COMMENT_CHARS_MAX });
    section.append(form('comment-form stack', [
      field('Add a comment', text),
      h('button', { type: 'submit', class: 'button primary' }, 'Send'),
    ], async () => {
      const added = await api('POST', `/api/v1/posts/${post.id}/comments`, { body: { text: text.value } });
      const empty = section.querySelector('.list-end');
      if (empty && !comments.children.length) empty.replaceChildren();
      comments.append(comment(added));
      post.comment_count += 1;
      commentCount.textContent = String(post.comment_count);
      text.value = '';
    }));
  } else {
    section.append(h('p', {}, h('a', { href: '#/signin' }, 'Sign in'), ' to like and comment.'));
  }
}

/** "Delete" that asks once more in place (no blocking browser dialog). */
function deleteControl(post) {
  const wrapper = h('div', { class: 'delete' });
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'button danger' }, 'Delete');
    const no = h('button', { type: 'button', class: 'button secondary' }, 'Cancel');
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('DELETE', '/api/v1/posts/' + post.id);
        toast('Post deleted.');
        go('/feed');
      } catch (error) {
        toast(messageOf(error));
        yes.disabled = false;
      }
    });
    no.addEventListener('click', () => { idle(); wrapper.querySelector('button').focus(); });
    wrapper.replaceChildren(h('span', { class: 'confirm' }, 'Delete this post for everyone?'), yes, no);
    no.focus();
  };
  const idle = () => wrapper.replaceChildren(h('button', { type: 'button', class: 'button secondary', onclick: ask }, 'Delete post'));
  idle();
  return wrapper;
}

// ---------------------------------------------------------------- upload

/** What is being posted survives leaving the screen (and failures): files in memory, caption also in sessionStorage. */
const draft = { items: [], caption: sessionStorage.getItem(DRAFT_CAPTION_KEY) || '', visibility: 'public', queue: Promise.resolve() };

const STATUS_TEXT = {
  queued: () => 'Waiting…',
  hashing: () => 'Computing fingerprint…',
  checking: () => 'Checking the node…',
  uploading: (item) => `Uploading ${Math.round(item.progress * 100)}%`,
  done: (item) => (item.known ? 'Already on the node: nothing to send' : 'Uploaded'),
  failed: (item) => 'Failed: ' + item.error,
};

function setStatus(item, status) {
  item.status = status;
  paintItem(item);
}

function paintItem(item) {
  if (!item.elements) return;
  const { progress, status, retry, element } = item.elements;
  progress.value = item.status === 'done' ? 1 : item.progress;
  progress.hidden = item.status !== 'uploading' && item.status !== 'done';
  status.textContent = STATUS_TEXT[item.status](item);
  retry.hidden = item.status !== 'failed';
  element.dataset.status = item.status;
}

async function sendItem(item) {
  try {
    if (item.sha256 === undefined) {
      setStatus(item, 'hashing');
      item.sha256 = await sha256Hex(item.file);
    }
    if (item.sha256) {
      setStatus(item, 'checking');
      if (await alreadyUploaded(item.sha256)) {
        item.mediaId = item.sha256;
        item.known = true;
        setStatus(item, 'done');
        return;
      }
    }
    item.progress = 0;
    setStatus(item, 'uploading');
    const upload = uploadPhoto(item.file, item.sha256, (fraction) => { item.progress = fraction; paintItem(item); });
    item.abort = upload.abort;
    const { media, known } = await upload.promise;
    item.mediaId = media.id;
    item.known = known;
    setStatus(item, 'done');
  } catch (error) {
    if (error.name === 'AbortError') return;
    item.error = messageOf(error);
    setStatus(item, 'failed');
  } finally {
    item.abort = null;
  }
}

/** Uploads go one at a time, in order, so each gets the whole link. */
function enqueue(item) {
  setStatus(item, 'queued');
  item.done = draft.queue = draft.queue.then(() => (draft.items.includes(item) ? sendItem(item) : undefined));
}

function removeItem(item) {
  if (item.abort) item.abort();
  draft.items = draft.items.filter((other) => other !== item);
  URL.revokeObjectURL(item.preview);
  item.elements.element.remove();
}

function uploadView({ view }) {
  setTitle('New post');
  const list = h('ul', { class: 'uploads', 'aria-label': 'Photos to post' });
  const picker = h('input', { type: 'file', id: 'photos', accept: 'image/*', multiple: true, class: 'visually-hidden' });
  const caption = h('textarea', { name: 'caption', rows: 3, maxlength: CAPTION_CHARS_MAX, value: draft.caption, placeholder: 'Say something, add #tags' });
  caption.addEventListener('input', () => {
    draft.caption = caption.value;
    sessionStorage.setItem(DRAFT_CAPTION_KEY, caption.value);
  });
  const itemElement = (item) => {
    const progress = h('progress', { max: 1, value: 0, 'aria-label': 'Upload progress of ' + item.file.name });
    const status = h('span', { class: 'status' });
    const retry = h('button', { type: 'button', class: 'button secondary small', onclick: () => enqueue(item), 'aria-label': 'Retry ' + item.file.name }, 'Retry');
    const remove = h('button', { type: 'button', class: 'button secondary small', onclick: () => removeItem(item), 'aria-label': 'Remove ' + item.file.name }, 'Remove');
    const element = h('li', { class: 'upload' },
      h('img', { src: item.preview, alt: '', class: 'preview' }),
      h('div', { class: 'upload-body' },
        h('span', { class: 'file-name' }, item.file.name),
        progress,
        h('span', { role: 'status' }, status),
        h('div', { class: 'row' }, retry, remove)));
    item.elements = { element, progress, status, retry };
    paintItem(item);
    return element;
  };
  for (const item of draft.items) list.append(itemElement(item));
  picker.addEventListener('change', () => {
    const files = Array.from(picker.files || []);
    const room = PHOTOS_PER_POST_MAX - draft.items.length;
    if (files.length > room) toast(`A post has at most ${PHOTOS_PER_POST_MAX} photos; ${files.length - Math.max(room, 0)} left out.`);
    for (const file of files.slice(0, Math.max(room, 0))) {
      const item = { file, preview: URL.createObjectURL(file), progress: 0, status: 'queued', sha256: undefined, mediaId: null };
      draft.items.push(item);
      list.append(itemElement(item));
      enqueue(item);
    }
    picker.value = '';
  });
  const visibility = h('fieldset', { class: 'choices' }, h('legend', {}, 'Who can see it'),
    Object.entries({ public: 'Everyone on the node', followers: 'My followers', private: 'Only me' }).map(([value, label]) =>
      h('label', { class: 'choice' },
        h('input', { type: 'radio', name: 'visibility', value, checked: draft.visibility === value, onchange: () => { draft.visibility = value; } }),
        h('span', {}, label))));
  view.append(h('section', { class: 'card column-narrow' },
    h('h1', {}, 'New post'),
    form('stack', [
      h('div', { class: 'picker' }, picker,
        h('label', { for: 'photos', class: 'button secondary big' }, icon('add'), 'Choose photos'),
        h('p', { class: 'hint' }, `Take a photo or pick from your gallery, up to ${PHOTOS_PER_POST_MAX}.`)),
      list,
      field('Caption', caption, 'Use #tags so neighbours can find it.'),
      visibility,
      h('button', { type: 'submit', class: 'button primary' }, 'Share'),
    ], async () => {
      if (!draft.items.length && !draft.caption.trim()) throw new Error('Add a photo or write a caption first.');
      await Promise.all(draft.items.map((item) => item.done));
      const failed = draft.items.filter((item) => item.status !== 'done');
      if (failed.length) {
        throw new ApiError(0, 'upload_failed', `${plural(failed.length, 'photo', 'photos')} did not upload. Retry or remove ${failed.length === 1 ? 'it' : 'them'}; your caption is kept.`);
      }
      const post = await api('POST', '/api/v1/posts', {
        body: { caption: draft.caption, media: draft.items.map((item) => item.mediaId), visibility: draft.visibility },
      });
      for (const item of draft.items) URL.revokeObjectURL(item.preview);
      draft.items = [];
      draft.caption = '';
      sessionStorage.removeItem(DRAFT_CAPTION_KEY);
      toast('Posted.');
      go('/post/' + post.id);
    })));
}

// ---------------------------------------------------------------- people

function followButton(user, onChange) {
  const button = h('button', { type: 'button', class: 'button' });
  const paint = () => {
    button.textContent = user.followed_by_me ? 'Unfollow' : 'Follow';
    button.className = 'button ' + (user.followed_by_me ? 'secondary' : 'primary');
    button.setAttribute('aria-label', `${user.followed_by_me ? 'Unfollow' : 'Follow'} @${user.handle}`);
  };
  paint();
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const answer = await api(user.followed_by_me ? 'DELETE' : 'PUT', `/api/v1/users/${user.handle}/follow`);
      if (answer.following !== user.followed_by_me) user.follower_count += answer.following ? 1 : -1;
      user.followed_by_me = answer.following;
      paint();
      if (onChange) onChange();
      toast(answer.following ? `You follow @${user.handle}.` : `You no longer follow @${user.handle}.`);
    } catch (error) {
      toast(messageOf(error));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

async function profileView({ view, match, signal }) {
  const user = await api('GET', '/api/v1/users/' + match[1], { signal });
  setTitle('@' + user.handle);
  const session = currentSession();
  const self = session && session.user_id === user.user_id;
  if (self) rememberReplicas(user);
  const named = user.display_name && user.display_name !== user.handle;
  const followers = h('span', {});
  const paintCounts = () => {
    followers.textContent = plural(user.follower_count, 'follower', 'followers');
  };
  paintCounts();
  const grid = h('ul', { class: 'grid', 'aria-label': 'Posts' });
  const signOut = async () => {
    try {
      await api('DELETE', '/api/v1/sessions');
    } catch (error) {
      if (!(error instanceof ApiError)) { toast(messageOf(error)); return; }
    }
    forgetSession();
    toast('Signed out.');
    go('/signin');
  };
  // The archive is fetched with the token (a plain link could not carry it), then
  // handed to the browser as a file.
  const downloadData = async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    toast('Preparing your archive…');
    try {
      const { blob, name } = await downloadExport();
      const url = URL.createObjectURL(blob);
      const link = h('a', { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      toast('Downloaded ' + name + '.');
    } catch (error) {
      toast(messageOf(error));
    } finally {
      button.disabled = false;
    }
  };
  view.append(h('div', { class: 'wide' },
    h('section', { class: 'card profile' },
      avatar(user, 'large'),
      h('div', { class: 'profile-body' },
        h('h1', {}, named ? user.display_name : '@' + user.handle),
        named ? h('p', { class: 'muted' }, '@' + user.handle) : null,
        user.bio ? h('p', { class: 'bio' }, user.bio) : null,
        h('p', { class: 'counts' }, followers, ' · ', `${user.following_count} following`, user.admin ? h('span', { class: 'badge' }, 'Admin') : null),
        h('div', { class: 'row' },
          self ? [h('a', { class: 'button secondary', href: '#/edit-profile' }, 'Edit profile'),
            h('a', { class: 'button secondary', href: '#/account' }, 'Account'),
            h('a', { class: 'button secondary', href: '#/follow-requests' }, 'Follow requests'),
            h('button', { type: 'button', class: 'button secondary', onclick: signOut }, 'Sign out'),
            h('button', { type: 'button', class: 'button secondary', onclick: downloadData }, 'Download my data')]
            : session ? [followButton(user, paintCounts), blockControl(user, signal)] : h('a', { class: 'button primary', href: '#/signin' }, 'Sign in to follow')),
        h('p', { class: 'hint' }, 'Photos kept on ', user.nodes.map((held, index) =>
          [index ? ', ' : '', h('span', { title: held.addresses.join(', ') || null }, held.name || 'node ' + held.id)])))),
    h('h2', { class: 'visually-hidden' }, 'Posts'),
    grid));
  pager({
    list: grid,
    signal,
    load: (cursor) => api('GET', `/api/v1/users/${user.handle}/posts`, { query: { limit: GRID_PAGE_POSTS, cursor }, signal }),
    item: gridTile,
    empty: h('p', { class: 'muted center' }, self ? 'You have not posted yet.' : 'No posts you can see yet.'),
  });
}

function userRow(user) {
  const session = currentSession();
  const self = session && session.user_id === user.user_id;
  const followers = h('span', { class: 'muted' }, plural(user.follower_count, 'follower', 'followers'));
  return h('li', { class: 'user-row' },
    avatar(user),
    h('div', { class: 'grow' }, authorLink(user), h('br'), followers),
    session && !self ? followButton(user, () => {
      followers.textContent = plural(user.follower_count, 'follower', 'followers');
    }) : null);
}

/** Scopes this node can search: `node` always; wider ones once it has siblings or aggregators. */
function searchScopes() {
  const scopes = [['node', 'This node']];
  if (node && node.peers && node.peers.length) scopes.push(['neighbourhood', 'Neighbourhood']);
  return scopes;
}

async function searchView({ view, params, signal }) {
  const query = (params.get('q') || '').trim();
  setTitle(query ? `Search: ${query}` : 'Search');
  const input = h('input', { type: 'search', name: 'q', value: query, required: true, maxlength: 200, autocapitalize: 'none', enterkeyhint: 'search', placeholder: '#tag, word or handle' });
  const scopes = searchScopes();
  const scope = scopes.length > 1
    ? h('select', { name: 'scope' }, scopes.map(([value, label]) => h('option', { value, selected: params.get('scope') === value }, label)))
    : null;
  const results = h('div', { class: 'results' });
  view.append(h('div', { class: 'wide' },
    h('section', { class: 'card' },
      h('h1', {}, 'Search'),
      form('search-form', [
        field('Posts and people', input),
        scope ? field('Where', scope) : null,
        h('button', { type: 'submit', class: 'button primary' }, icon('search'), 'Search'),
      ], async () => {
        const next = new URLSearchParams({ q: input.value.trim() });
        if (scope) next.set('scope', scope.value);
        go('/search?' + next);
      })),
    results));
  if (!query) {
    results.append(h('p', { class: 'muted center' }, 'Find posts by #tag or word, and neighbours by handle.'));
    return;
  }
  results.append(h('p', { class: 'muted center', role: 'status' }, 'Searching…'));
  const answer = await api('GET', '/api/v1/search', { query: { q: query, scope: scope ? scope.value : undefined, limit: SEARCH_RESULTS_MAX }, signal });
  results.replaceChildren(h('p', { class: 'visually-hidden', role: 'status' },
    `${plural(answer.users.length, 'person', 'people')} and ${plural(answer.posts.length, 'post', 'posts')} found`));
  if (answer.users.length) {
    results.append(h('section', { class: 'card' }, h('h2', {}, 'People'), h('ul', { class: 'users' }, answer.users.map(userRow))));
  }
  results.append(h('section', {}, h('h2', { class: 'section-title' }, 'Posts'),
    answer.posts.length
      ? h('ul', { class: 'grid' }, answer.posts.map((post) => gridTile(post, signal)))
      : h('p', { class: 'muted center' }, `No public posts match “${query}”.`)));
}

// ---------------------------------------------------------------- admin

function duration(seconds) {
  const days = Math.floor(seconds / 86400), hours = Math.floor((seconds % 86400) / 3600), minutes = Math.floor((seconds % 3600) / 60);
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min`;
  return `${seconds} s`;
}

/**
 * An SVG document (the node's QR code) as a `data:` URL for an `<img>`: an image's
 * `src` is no script sink, and an SVG shown as an image runs nothing.
 */
function svgDataUrl(svg) {
  const element = svg.slice(Math.max(0, svg.indexOf('<svg')));
  const namespaced = /^<svg[^>]*\sxmlns=/.test(element) ? element : element.replace('<svg', `<svg xmlns="${SVG}"`);
  return 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(namespaced);
}

function copyButton(text, label) {
  return h('button', {
    type: 'button', class: 'button secondary small', 'aria-label': label,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        toast('Copied.');
      } catch {
        toast('Copying is not allowed here; select the text instead.');
      }
    },
  }, 'Copy');
}

async function adminView({ view, signal }) {
  setTitle('Admin');
  if (!currentSession().admin) {
    view.append(h('section', { class: 'card narrow' }, h('h1', {}, 'Admin'), h('p', {}, 'Only the node’s admin can see this page.')));
    return;
  }
  node = await api('GET', '/api/v1/node', { signal });
  const facts = [
    ['Name', node.name],
    ['Version', node.version],
    ['Up for', duration(node.uptime_seconds)],
    ['Pin', h('span', { class: 'with-copy' }, h('code', { class: 'pin' }, node.pin), copyButton(node.pin, 'Copy pin'))],
    ['Node id', h('code', {}, node.node_id)],
    ['Region', node.region || 'not set'],
    ['Roles', (node.roles || []).join(', ') || 'none'],
    ['Registration', node.open_registration ? 'open to anyone' : 'by invite'],
    ['Addresses', (node.addresses || []).join(', ') || '–'],
    node.base_url ? ['Web address', h('code', { class: 'wrap' }, node.base_url)] : null,
    ['Siblings', node.peers && node.peers.length ? String(node.peers.length) : 'none paired yet'],
    ['Storage', storageText(node.storage)],
  ];
  const invites = h('ul', { class: 'invites' });
  const createInvite = async (button) => {
    button.disabled = true;
    try {
      const { code, link: given, qr_svg: qr } = await api('POST', '/api/v1/invites');
      // The node's link names the address people use to reach it (`base_url`); a node
      // too old to send one gets the address this browser used.
      const link = given || `${location.origin}/#/join?code=${encodeURIComponent(code)}`;
      invites.prepend(h('li', {},
        h('output', { class: 'invite-code' }, code), copyButton(code, 'Copy invite code'),
        qr ? h('div', { class: 'invite-qr' },
          h('img', { src: svgDataUrl(qr), alt: `QR code of the invite link for ${code}: scan it with a phone's camera`, width: 200, height: 200 })) : null,
        h('p', { class: 'hint' }, qr ? 'Scan the code, or share this link: ' : 'Or share this link: ',
          h('code', { class: 'wrap invite-link' }, link), ' ', copyButton(link, 'Copy invite link'))));
      toast('Invite created: ' + code);
    } catch (error) {
      toast(messageOf(error));
    } finally {
      button.disabled = false;
    }
  };
  const inviteButton = h('button', { type: 'button', class: 'button primary' }, 'Create invite');
  inviteButton.addEventListener('click', () => createInvite(inviteButton));

  const nearby = h('div', { class: 'nearby' }, h('p', { class: 'muted' }, 'Looking…'));
  view.append(h('div', { class: 'wide admin' },
    h('h1', {}, 'Admin'),
    h('section', { class: 'card' }, h('h2', {}, 'This node'),
      h('dl', { class: 'facts' }, facts.filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]))),
    h('section', { class: 'card' }, h('h2', {}, 'Invites'),
      h('p', {}, 'Each code lets one person create an account. Codes work once.'),
      inviteButton, invites),
    adminUsersCard(signal),
    reportsCard(signal),
    h('section', { class: 'card' }, h('h2', {}, 'Nearby nodes'), nearby)));
  try {
    const answer = await api('GET', '/api/v1/node/nearby', { signal });
    if (!answer.mdns) nearby.replaceChildren(h('p', { class: 'muted' }, 'Discovery (mDNS) is off on this node.'));
    else if (!answer.items.length) nearby.replaceChildren(h('p', { class: 'muted' }, 'No other nodes seen on this network.'));
    else {
      nearby.replaceChildren(h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, ['Name', 'Address', 'Pin', 'Seen', 'State'].map((name) => h('th', { scope: 'col' }, name)))),
        h('tbody', {}, answer.items.map((item) => h('tr', {},
          h('td', {}, item.name),
          h('td', {}, item.addresses.map((address) => `${address}:${item.port}`).join(', ')),
          h('td', {}, h('code', { class: 'pin', title: item.pin }, item.pin.slice(0, 18) + '…')),
          h('td', {}, `${Math.round(item.last_seen_ms_ago / 1000)} s ago`),
          h('td', {}, item.conflict ? 'pin conflict!' : item.paired ? 'paired' : 'not paired'))))));
    }
  } catch (error) {
    if (signal.aborted) return;
    nearby.replaceChildren(h('p', { class: 'error' }, messageOf(error)));
  }
}

function notFoundView({ view }) {
  setTitle('Not found');
  view.append(h('section', { class: 'card narrow' }, h('h1', {}, 'Nothing here'), h('p', {}, h('a', { href: '#/feed' }, 'Back to the feed'))));
}

/** Forgets who is signed in on this browser: after signing out, or deleting the account. */
function forgetSession() {
  saveSession(null);
  localStorage.removeItem(REPLICAS_KEY);
  replicasRead = false;
}

/** `GET /api/v1/node` as last answered, or null before the first answer. */
function nodeInfo() {
  return node;
}

// What account.js and people.js build their screens with.
export {
  h, field, form, toast, go, setTitle, copyButton, timeElement, plural, messageOf, storageText, startSession,
  handleInput, passwordInput, PASSWORD_HINT, nodeInfo, pager, avatar, icon, forgetSession,
};

// ---------------------------------------------------------------- start

window.addEventListener('hashchange', render);
$('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  $('#main').focus();
});
render();

if ('serviceWorker' in navigator) {
  // Trusted Types: the worker's URL is the one script URL the page makes.
  const policy = window.trustedTypes
    ? trustedTypes.createPolicy('edgenode', {
      createScriptURL: (url) => {
        if (url !== '/app/sw.js') throw new TypeError('unexpected script URL ' + url);
        return url;
      },
    })
    : { createScriptURL: (url) => url };
  navigator.serviceWorker.register(policy.createScriptURL('/app/sw.js'), { scope: '/' }).catch(() => {
    // Without it the app still works; it just can't start offline.
  });
}
