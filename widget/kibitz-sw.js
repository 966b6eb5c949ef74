/* Kibitz offline service worker: a site that embeds Kibitz opts in with one line
 *
 *     <script>navigator.serviceWorker?.register('/kibitz-sw.js')</script>
 *
 * after copying this file (dist/kibitz-sw.js) to the root of its own origin (a service worker must be
 * served by the site it controls). Then a page opened once online opens and calls offline: on a
 * LAN with a `kibitz hub` (?galaxy= link), on a plane, in a cabin.
 *
 * What it keeps, in one cache per bundle origin+path:
 * - every file of the Kibitz bundle the page fetches (widget.js and whatever the build ships:
 *   runtime, snapshot, wheels...). It learns where the bundle lives from the first request for
 *   `.../widget.js` (any origin), and then also reads that bundle's `manifest.json` and fetches
 *   every file the manifest names, so a boot path the page did not take yet works offline too;
 * - the site's own pages (navigations), so the embedding page itself opens offline.
 * Never cached: `/api/*` (signaling, TURN credentials: live answers only) and anything else.
 *
 * Freshness: unversioned files (pages, widget.js, manifest.json) are served from the network when
 * it answers within a few seconds and from the cache otherwise; content-hashed files (assets/,
 * wheels/, pyodide-*) are served from the cache first, since they never change.
 */
'use strict'

const VERSION = 'kibitz-sw-1'
const PAGES = VERSION + ':pages'
const BASES = VERSION + ':bases'
const NETWORK_TIMEOUT_MS = 4000
// Files a boot may fetch. Not: compressed twins (.br/.gz: the server picks them by Accept-Encoding),
// source maps, type declarations, the demo pages and apps, this worker.
const FILE_RE = /^[\w.\-/+]+\.(js|mjs|wasm|json|tar|whl|zip|bin|data)(\?[\w=.\-&]*)?$/
const SKIP_RE = /^(demo\/|whist\/|kibitz-sw\.js)/

self.addEventListener('install', () => self.skipWaiting())
self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith('kibitz-sw-') && !key.startsWith(VERSION)) await caches.delete(key)
    }
    await self.clients.claim()
  })())
})

function isApi(url) {
  return /\/api\//.test(url.pathname)
}

let bases = null // bundle base URLs ("https://static.example.org/kibitz/"), kept in the BASES cache

async function knownBases() {
  if (bases) return bases
  const cache = await caches.open(BASES)
  const hit = await cache.match('/__kibitz_bases__')
  bases = hit ? await hit.json() : []
  return bases
}

async function learnBase(base) {
  const list = await knownBases()
  if (list.includes(base)) return false
  list.push(base)
  const cache = await caches.open(BASES)
  await cache.put('/__kibitz_bases__', new Response(JSON.stringify(list), {
    headers: { 'content-type': 'application/json' },
  }))
  return true
}

function bundleCacheName(base) {
  return VERSION + ':bundle:' + base
}

function immutable(base, url) {
  const rel = url.slice(base.length)
  return /^(assets|wheels)\//.test(rel) || /^pyodide-/.test(rel)
}

function withTimeout(promise, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('network timeout')), ms)
    promise.then((v) => { clearTimeout(timer); resolve(v) }, (e) => { clearTimeout(timer); reject(e) })
  })
}

async function keep(cacheName, request, response) {
  if (!response || (!response.ok && response.type !== 'opaque')) return
  if (response.status === 206) return // a range: not a whole file
  const cache = await caches.open(cacheName)
  await cache.put(request, response)
}

/** Network first (bounded wait), then the cache; a fresh answer replaces the cached one.
 * ``anyQuery``: a page cached under another query string will do (a link with ?galaxy= or
 * ?grant= opens the same page as one without). */
async function networkFirst(cacheName, request, anyQuery = false) {
  try {
    const response = await withTimeout(fetch(request), NETWORK_TIMEOUT_MS)
    keep(cacheName, request, response.clone()).catch(() => {})
    return response
  } catch (err) {
    const hit = (await caches.match(request, { ignoreVary: true })) ||
      (anyQuery && await caches.match(request, { ignoreVary: true, ignoreSearch: true }))
    if (hit) return hit
    throw err
  }
}

/** Cache first (content-hashed files never change), else the network, kept for next time. */
async function cacheFirst(cacheName, request) {
  const hit = await caches.match(request, { ignoreVary: true })
  if (hit) return hit
  const response = await fetch(request)
  keep(cacheName, request, response.clone()).catch(() => {})
  return response
}

/** Read a bundle's manifest and keep every file it names (once per base and manifest). */
async function precache(base) {
  const name = bundleCacheName(base)
  let manifest
  try {
    const response = await fetch(base + 'manifest.json', { cache: 'no-cache' })
    if (!response.ok) return
    await keep(name, base + 'manifest.json', response.clone())
    manifest = await response.json()
  } catch (_) {
    return
  }
  const files = new Set()
  const walk = (v) => {
    if (typeof v === 'string') {
      if (FILE_RE.test(v) && !SKIP_RE.test(v) && !v.startsWith('/') && !v.includes('..')) files.add(v)
    } else if (Array.isArray(v)) {
      v.forEach(walk)
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) { walk(k); walk(x) } // paths are keys in some sections
    }
  }
  walk(manifest)
  const cache = await caches.open(name)
  for (const rel of files) {
    const url = new URL(rel, base).href
    if (await cache.match(url, { ignoreVary: true })) continue
    try {
      const response = await fetch(url)
      if (response.ok) await cache.put(url, response)
    } catch (_) { /* offline or missing: the page's own fetches fill the rest */ }
  }
}

self.addEventListener('fetch', (event) => {
  const request = event.request
  if (request.method !== 'GET') return
  const url = new URL(request.url)
  if (!/^https?:$/.test(url.protocol) || isApi(url)) return
  if (request.mode === 'navigate') {
    event.respondWith(networkFirst(PAGES, request, true))
    return
  }
  if (url.pathname.endsWith('/widget.js')) {
    const base = url.href.slice(0, url.href.length - url.search.length - url.hash.length - 'widget.js'.length)
    event.respondWith(networkFirst(bundleCacheName(base), request))
    event.waitUntil(learnBase(base).then((isNew) => precache(base).catch(() => isNew)))
    return
  }
  if (bases && !bases.some((b) => url.href.startsWith(b))) return // not ours: untouched
  event.respondWith((async () => {
    const list = await knownBases()
    const href = url.href
    const base = list.find((b) => href.startsWith(b))
    if (!base) return fetch(request)
    const name = bundleCacheName(base)
    return immutable(base, href) ? cacheFirst(name, request) : networkFirst(name, request)
  })())
})
