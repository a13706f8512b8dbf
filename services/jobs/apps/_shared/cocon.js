// What Cocon's own apps share: the page's Cozy data (data-cozy), the stack's address, calls to
// its API with the app's token and the session cookie it goes with, and small formatting
// helpers. Loaded before the app's own script; services/jobs/build.rs puts it in every
// built-in app.
'use strict'

const $ = id => document.getElementById(id)
const root = $('app')
const cozy = JSON.parse(root.dataset.cozy)
const stack = `${window.location.protocol}//${cozy.domain}`
const enc = encodeURIComponent

// An app's address: its own host beside the instance's, nested (drive.alice.example) or flat
// (alice-drive.example) as the server serves apps.
function appUrl(slug) {
  const dot = cozy.domain.indexOf('.')
  const host =
    cozy.subdomain === 'flat' && dot > 0
      ? `${cozy.domain.slice(0, dot)}-${slug}${cozy.domain.slice(dot)}`
      : `${slug}.${cozy.domain}`
  return `${window.location.protocol}//${host}/`
}

// The app's strings in the instance's language, English when the app does not speak it.
function localised(table) {
  return table[(cozy.locale || 'en').slice(0, 2)] || table.en
}

class ApiError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

// What the stack said went wrong: JSON-API's detail or title, or Cocon's reason.
async function reason(res) {
  try {
    const body = await res.json()
    const e = (body.errors || [])[0]
    return (e && (e.detail || e.title)) || body.reason || body.error || body.message || res.statusText
  } catch (e) {
    return res.statusText || String(res.status)
  }
}

function headers(extra) {
  return { Authorization: `Bearer ${cozy.token}`, Accept: 'application/vnd.api+json', ...extra }
}

// A call to the stack's API: its JSON (null when it answers none), or an ApiError.
async function api(method, path, json) {
  const init = { method, headers: headers(), credentials: 'include' }
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/vnd.api+json'
    init.body = JSON.stringify(json)
  }
  const res = await fetch(path.startsWith('http') ? path : stack + path, init)
  if (!res.ok) throw new ApiError(res.status, await reason(res))
  if (res.status === 204) return null
  return (res.headers.get('Content-Type') || '').includes('json') ? res.json() : null
}

function el(tag, props, ...children) {
  const node = document.createElement(tag)
  Object.assign(node, props)
  for (const child of children) if (child !== null && child !== undefined) node.append(child)
  return node
}

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000
    i++
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`
}

function when(date) {
  return date ? new Date(date).toLocaleString(cozy.locale, { dateStyle: 'medium', timeStyle: 'short' }) : ''
}
