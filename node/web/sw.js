// Service worker: keeps the app shell (page, scripts, style sheet, icon, manifest)
// so the app opens without the node. It never stores an API answer: those carry
// private photos and posts, and always go to the network.

const BUILD = '__BUILD__';
const CACHE = 'edgenode-shell-' + BUILD;
const SHELL = [
  '/',
  '/app/app.js?v=' + BUILD,
  '/app/api.js?v=' + BUILD,
  '/app/account.js?v=' + BUILD,
  '/app/people.js?v=' + BUILD,
  '/app/blurhash.js?v=' + BUILD,
  '/app/app.css?v=' + BUILD,
  '/app/icon.svg?v=' + BUILD,
  '/app/manifest.webmanifest?v=' + BUILD,
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (request.mode === 'navigate' && url.pathname === '/') {
    // The page: fresh from the node when it answers, else the kept copy.
    event.respondWith(fetch(request).catch(() => caches.match('/', { cacheName: CACHE })));
    return;
  }
  if (SHELL.includes(url.pathname + url.search)) {
    event.respondWith(caches.match(request, { cacheName: CACHE }).then((kept) => kept || fetch(request)));
  }
  // Everything else (the API above all) is left to the network, uncached.
});
