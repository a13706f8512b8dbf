// Cocon's home: the installed apps, the storage used, the notifications. Plain JavaScript on
// the API Cozy's apps use, with the token the server wrote into the page (data-cozy) and the
// session cookie it goes with.
'use strict'

const TEXT = {
  en: {
    hello: name => (name ? `Hello, ${name}` : 'Your Cozy'),
    account: 'Account and security',
    apps: 'Apps',
    storage: 'Storage',
    notifications: 'Notifications',
    noApps: 'No app is installed yet.',
    noNotifications: 'Nothing new.',
    used: (used, quota) => (quota ? `${used} used of ${quota}` : `${used} used`),
    problem: 'Part of this page could not be loaded: reload it, or sign in again.'
  },
  fr: {
    hello: name => (name ? `Bonjour, ${name}` : 'Votre Cozy'),
    account: 'Compte et sécurité',
    apps: 'Applications',
    storage: 'Espace',
    notifications: 'Notifications',
    noApps: 'Aucune application n’est installée.',
    noNotifications: 'Rien de nouveau.',
    used: (used, quota) => (quota ? `${used} utilisés sur ${quota}` : `${used} utilisés`),
    problem: 'Une partie de la page n’a pas pu être chargée : rechargez-la, ou reconnectez-vous.'
  }
}

const text = localised(TEXT)

// A GET of the stack's API, for its response (JSON or an icon's bytes).
async function call(path) {
  const res = await fetch(stack + path, { headers: headers({ Accept: 'application/json' }), credentials: 'include' })
  if (!res.ok) throw new ApiError(res.status, `${path}: ${await reason(res)}`)
  return res
}

async function icon(slug) {
  try {
    const blob = await (await call(`/apps/${slug}/icon`)).blob()
    return URL.createObjectURL(blob)
  } catch (e) {
    return 'icon.svg'
  }
}

async function showApps() {
  const list = document.getElementById('apps')
  const { data } = await (await call('/apps/')).json()
  const apps = data.filter(a => a.attributes.slug !== cozy.app.slug)
  list.replaceChildren()
  if (apps.length === 0) {
    list.append(el('li', { className: 'empty', textContent: text.noApps }))
    return
  }
  apps.sort((a, b) => a.attributes.slug.localeCompare(b.attributes.slug))
  for (const app of apps) {
    const a = app.attributes
    const locale = (a.locales || {})[cozy.locale] || {}
    const name = locale.name || a.name || a.slug
    const img = el('img', { alt: '', src: 'icon.svg' })
    icon(a.slug).then(src => (img.src = src))
    const tile = el('li', {}, el('a', { href: appUrl(a.slug) }, img, el('span', { textContent: name })))
    tile.dataset.slug = a.slug
    list.append(tile)
  }
}

async function showStorage() {
  const { data } = await (await call('/settings/disk-usage')).json()
  const used = Number(data.attributes.used || 0)
  const quota = Number(data.attributes.quota || 0)
  document.getElementById('storage-text').textContent = text.used(bytes(used), quota ? bytes(quota) : '')
  const bar = document.getElementById('storage')
  if (quota) bar.value = Math.min(100, (100 * used) / quota)
  else bar.hidden = true
}

async function showNotifications() {
  const list = document.getElementById('notifications')
  const res = await call('/data/io.cozy.notifications/_all_docs?include_docs=true')
  const rows = (await res.json()).rows || []
  const docs = rows.map(r => r.doc).filter(d => d && !d._id.startsWith('_design'))
  docs.sort((a, b) => String(b.created_at || '').localeCompare(String(a.created_at || '')))
  list.replaceChildren()
  if (docs.length === 0) {
    list.append(el('li', { className: 'empty', textContent: text.noNotifications }))
    return
  }
  for (const doc of docs.slice(0, 20)) {
    const at = doc.created_at ? new Date(doc.created_at) : null
    list.append(
      el(
        'li',
        {},
        el('strong', { textContent: doc.title || '' }),
        el('div', { textContent: doc.message || '' }),
        at ? el('time', { dateTime: doc.created_at, textContent: at.toLocaleString(cozy.locale) }) : ''
      )
    )
  }
}

async function showGreeting() {
  const { data } = await (await call('/settings/instance')).json()
  document.getElementById('greeting').textContent = text.hello(data.attributes.public_name)
}

function translate() {
  document.getElementById('apps-title').textContent = text.apps
  document.getElementById('storage-title').textContent = text.storage
  document.getElementById('notifications-title').textContent = text.notifications
  const account = document.getElementById('account')
  account.textContent = text.account
  account.href = `${stack}/`
}

async function start() {
  translate()
  const parts = await Promise.allSettled([showGreeting(), showApps(), showStorage(), showNotifications()])
  const failed = parts.filter(p => p.status === 'rejected')
  if (failed.length) {
    const problem = document.getElementById('problem')
    problem.textContent = text.problem
    problem.hidden = false
    failed.forEach(f => console.error(f.reason))
  }
  root.dataset.ready = 'true'
}

start()
