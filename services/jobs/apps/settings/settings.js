// Cocon's settings: the person's account. Plain JavaScript on cozy-stack's settings API, with
// the token the server wrote into the page (data-cozy) and the session cookie it goes with.
'use strict'

const TEXT = {
  en: {
    title: 'Settings',
    home: 'Home',
    profile: 'Profile',
    name: 'Name',
    email: 'E-mail address',
    emailNote: 'Passphrase resets are sent there. It is changed on the account page, signed in.',
    noEmail: 'none',
    language: 'Language',
    timezone: 'Time zone',
    save: 'Save',
    saved: 'Saved.',
    passphrase: 'Passphrase',
    current: 'Current passphrase',
    fresh: 'New passphrase',
    again: 'New passphrase, again',
    change: 'Change the passphrase',
    notSame: 'The two new passphrases differ: type the same twice.',
    changed: 'Passphrase changed: your other devices were signed out.',
    twofactorTitle: 'Two-factor authentication',
    twofactorOff: 'Off. A second factor (the codes of an authenticator app on your phone) keeps your account safe even if your passphrase leaks.',
    twofactorOn: left => `On: signing in asks for a code from your authenticator app. ${left} recovery codes left.`,
    setup: 'Set up two-factor',
    scan: 'Scan this QR code with your authenticator app (or type the key), then type the code it shows and your passphrase.',
    key: 'Key:',
    code: 'Code from the app',
    yourPassphrase: 'Your passphrase',
    turnOn: 'Turn on',
    cancel: 'Cancel',
    turnedOn: 'Two-factor is on.',
    codesText: 'Your recovery codes. Each one signs you in once if you lose your phone: keep them somewhere safe, they are shown only now.',
    download: 'Download the codes',
    codesFile: 'Recovery codes of',
    offPassphrase: 'Your passphrase, to turn it off',
    turnOff: 'Turn off two-factor',
    turnedOff: 'Two-factor is off.',
    mailTitle: 'Notifications by e-mail',
    mailText: 'What Cocon and your apps tell you is always in your notifications; tick what should also come by e-mail.',
    mailNone: 'Nothing sends notifications yet.',
    stack: { 'disk-quota': 'Your storage is full', 'oauth-clients': 'An app or a device was connected to your Cozy', 'sharing-request': 'Someone shares something with you' },
    from: name => `from ${name}`,
    sessions: 'Devices signed in',
    thisDevice: 'this device',
    signOut: 'Sign out',
    since: date => `since ${date}`,
    clients: 'Connected apps',
    noClients: 'No app is connected.',
    lastUsed: date => `registered ${date}`,
    revoke: 'Disconnect',
    storage: 'Storage',
    used: (used, quota) => (quota ? `${used} used of ${quota}` : `${used} used`),
    problem: why => `That did not work: ${why}`,
    unknownDevice: 'Unknown browser'
  },
  fr: {
    title: 'Paramètres',
    home: 'Accueil',
    profile: 'Profil',
    name: 'Nom',
    email: 'Adresse e-mail',
    emailNote: 'Les réinitialisations de phrase de passe y sont envoyées. Elle se change sur la page du compte, connecté.',
    noEmail: 'aucune',
    language: 'Langue',
    timezone: 'Fuseau horaire',
    save: 'Enregistrer',
    saved: 'Enregistré.',
    passphrase: 'Phrase de passe',
    current: 'Phrase de passe actuelle',
    fresh: 'Nouvelle phrase de passe',
    again: 'Nouvelle phrase de passe, à nouveau',
    change: 'Changer la phrase de passe',
    notSame: 'Les deux nouvelles phrases de passe diffèrent : tapez la même deux fois.',
    changed: 'Phrase de passe changée : vos autres appareils ont été déconnectés.',
    twofactorTitle: 'Double authentification',
    twofactorOff: 'Désactivée. Un second facteur (les codes d’une application d’authentification sur votre téléphone) protège votre compte même si votre phrase de passe fuit.',
    twofactorOn: left => `Activée : la connexion demande un code de votre application d’authentification. Il reste ${left} codes de secours.`,
    setup: 'Activer la double authentification',
    scan: 'Scannez ce QR code avec votre application d’authentification (ou tapez la clé), puis tapez le code qu’elle affiche et votre phrase de passe.',
    key: 'Clé :',
    code: 'Code de l’application',
    yourPassphrase: 'Votre phrase de passe',
    turnOn: 'Activer',
    cancel: 'Annuler',
    turnedOn: 'La double authentification est activée.',
    codesText: 'Vos codes de secours. Chacun vous connecte une fois si vous perdez votre téléphone : gardez-les en lieu sûr, ils ne sont montrés que maintenant.',
    download: 'Télécharger les codes',
    codesFile: 'Codes de secours de',
    offPassphrase: 'Votre phrase de passe, pour la désactiver',
    turnOff: 'Désactiver la double authentification',
    turnedOff: 'La double authentification est désactivée.',
    mailTitle: 'Notifications par e-mail',
    mailText: 'Ce que Cocon et vos applications vous signalent est toujours dans vos notifications ; cochez ce qui doit aussi arriver par e-mail.',
    mailNone: 'Rien n’envoie encore de notifications.',
    stack: { 'disk-quota': 'Votre espace est plein', 'oauth-clients': 'Une application ou un appareil a été connecté à votre Cozy', 'sharing-request': 'Quelqu’un partage quelque chose avec vous' },
    from: name => `de ${name}`,
    sessions: 'Appareils connectés',
    thisDevice: 'cet appareil',
    signOut: 'Déconnecter',
    since: date => `depuis le ${date}`,
    clients: 'Applications connectées',
    noClients: 'Aucune application n’est connectée.',
    lastUsed: date => `enregistrée le ${date}`,
    revoke: 'Déconnecter',
    storage: 'Espace',
    used: (used, quota) => (quota ? `${used} utilisés sur ${quota}` : `${used} utilisés`),
    problem: why => `Cela n’a pas marché : ${why}`,
    unknownDevice: 'Navigateur inconnu'
  }
}

const text = localised(TEXT)

function said(id, message, failed) {
  const box = $(id)
  box.textContent = message
  box.classList.toggle('failed', Boolean(failed))
}

function problem(err) {
  console.error(err)
  $('problem').textContent = text.problem(err.message || String(err))
  $('problem').hidden = false
}

// ---- profile ---------------------------------------------------------------------------

let rev = ''

async function showProfile() {
  const { data } = await api('GET', '/settings/instance')
  rev = data.meta.rev
  const a = data.attributes
  $('public-name').value = a.public_name || ''
  $('email').value = a.email || ''
  $('email').placeholder = text.noEmail
  $('locale').value = a.locale === 'fr' ? 'fr' : 'en'
  $('timezone').value = a.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || ''
}

async function saveProfile(e) {
  e.preventDefault()
  $('profile-save').disabled = true
  try {
    const attributes = {
      public_name: $('public-name').value.trim(),
      locale: $('locale').value,
      timezone: $('timezone').value.trim()
    }
    const { data } = await api('PUT', '/settings/instance', {
      data: { type: 'io.cozy.settings', id: 'io.cozy.settings.instance', meta: { rev }, attributes }
    })
    rev = data.meta.rev
    said('profile-said', text.saved)
  } catch (err) {
    if (err.status === 409) await showProfile().catch(() => {})
    said('profile-said', text.problem(err.message), true)
  } finally {
    $('profile-save').disabled = false
  }
}

// ---- passphrase ------------------------------------------------------------------------

async function changePassphrase(e) {
  e.preventDefault()
  if ($('new').value !== $('again').value) {
    said('passphrase-said', text.notSame, true)
    $('again').focus()
    return
  }
  $('passphrase-save').disabled = true
  try {
    await api('PUT', '/settings/passphrase', { current_password: $('current').value, new_password: $('new').value })
    for (const id of ['current', 'new', 'again']) $(id).value = ''
    said('passphrase-said', text.changed)
    await showSessions()
  } catch (err) {
    said('passphrase-said', text.problem(err.message), true)
  } finally {
    $('passphrase-save').disabled = false
  }
}

// ---- two-factor ------------------------------------------------------------------------

async function showTwoFactor() {
  const status = await api('GET', '/settings/twofactor')
  $('twofactor-text').textContent = status.enabled ? text.twofactorOn(status.recovery_codes_left) : text.twofactorOff
  $('twofactor-setup').hidden = status.enabled || !$('twofactor-form').hidden
  $('twofactor-off').hidden = !status.enabled
}

async function proposeTwoFactor() {
  $('twofactor-setup').disabled = true
  try {
    const proposal = await api('POST', '/settings/twofactor', {})
    // The server's QR code, as an image: nothing of it runs in the page.
    $('twofactor-qr').src = `data:image/svg+xml,${enc(proposal.qr_svg)}`
    $('twofactor-secret').textContent = proposal.secret
    $('twofactor-codes').hidden = true
    $('twofactor-setup').hidden = true
    $('twofactor-form').hidden = false
    said('twofactor-said', '')
    $('twofactor-code').focus()
  } catch (err) {
    said('twofactor-said', text.problem(err.message), true)
  } finally {
    $('twofactor-setup').disabled = false
  }
}

function cancelTwoFactor() {
  $('twofactor-form').hidden = true
  $('twofactor-form').reset()
  $('twofactor-setup').hidden = false
}

async function enableTwoFactor(e) {
  e.preventDefault()
  $('twofactor-enable').disabled = true
  try {
    const code = $('twofactor-code').value.replace(/\s/g, '')
    const answer = await api('PUT', '/settings/twofactor', { code, password: $('twofactor-passphrase').value })
    $('twofactor-form').hidden = true
    $('twofactor-form').reset()
    $('recovery-codes').replaceChildren(...answer.recovery_codes.map(c => el('li', { textContent: c })))
    $('twofactor-codes').hidden = false
    said('twofactor-said', text.turnedOn)
    await showTwoFactor()
  } catch (err) {
    said('twofactor-said', text.problem(err.message), true)
  } finally {
    $('twofactor-enable').disabled = false
  }
}

function downloadCodes() {
  const codes = [...$('recovery-codes').children].map(li => li.textContent)
  const body = `${text.codesFile} ${cozy.domain}\n\n${codes.join('\n')}\n`
  const a = el('a', { href: URL.createObjectURL(new Blob([body], { type: 'text/plain' })), download: `recovery-codes-${cozy.domain}.txt` })
  a.click()
  URL.revokeObjectURL(a.href)
}

async function disableTwoFactor(e) {
  e.preventDefault()
  $('twofactor-disable').disabled = true
  try {
    await api('DELETE', '/settings/twofactor', { password: $('twofactor-off-passphrase').value })
    $('twofactor-off').reset()
    $('twofactor-codes').hidden = true
    said('twofactor-said', text.turnedOff)
    await showTwoFactor()
  } catch (err) {
    said('twofactor-said', text.problem(err.message), true)
  } finally {
    $('twofactor-disable').disabled = false
  }
}

// ---- notifications by e-mail -----------------------------------------------------------

const PREFERENCES = '/data/io.cozy.settings/io.cozy.notifications'
let prefs = { mail: {} }

/// Every category the instance may be notified of: Cocon's own, then each app's and
/// connector's (their manifest's `notifications`).
async function categories() {
  const found = Object.entries(text.stack).map(([id, what]) => ({ id, what }))
  const lists = await Promise.allSettled([api('GET', '/apps/'), api('GET', '/konnectors/')])
  for (const list of lists) {
    if (list.status !== 'fulfilled') continue
    for (const item of list.value.data || []) {
      const a = item.attributes || {}
      for (const [id, n] of Object.entries(a.notifications || {})) {
        found.push({ id, what: `${(n && n.description) || id} (${text.from(a.name || a.slug)})` })
      }
    }
  }
  return found
}

async function showMailPrefs() {
  try {
    prefs = await api('GET', PREFERENCES)
  } catch (err) {
    if (err.status !== 404) throw err
    prefs = { mail: {} }
  }
  prefs.mail = prefs.mail || {}
  const box = $('mail-categories')
  box.replaceChildren()
  const all = await categories()
  if (all.length === 0) box.append(el('p', { className: 'note', textContent: text.mailNone }))
  for (const c of all) {
    const check = el('input', { type: 'checkbox', checked: prefs.mail[c.id] !== false })
    check.dataset.category = c.id
    box.append(el('label', {}, check, el('span', { textContent: c.what })))
  }
}

async function saveMailPrefs(e) {
  e.preventDefault()
  $('mail-save').disabled = true
  try {
    const mail = { ...prefs.mail }
    for (const check of $('mail-categories').querySelectorAll('input[data-category]')) mail[check.dataset.category] = check.checked
    const doc = { ...prefs, mail }
    const saved = await api('PUT', PREFERENCES, doc)
    prefs = { ...doc, _rev: saved.rev }
    said('mail-said', text.saved)
  } catch (err) {
    if (err.status === 409) await showMailPrefs().catch(() => {})
    said('mail-said', text.problem(err.message), true)
  } finally {
    $('mail-save').disabled = false
  }
}

// ---- sessions and clients --------------------------------------------------------------

/// A browser's name from its user agent, as a person recognises it.
function device(agent) {
  if (!agent) return text.unknownDevice
  const browser = (agent.match(/(Firefox|Edg|OPR|Chrome|Safari)\/[\d.]+/) || [])[1] || ''
  const system = (agent.match(/(Windows|Android|iPhone|iPad|Mac OS X|Linux|CrOS)/) || [])[1] || ''
  const name = { Edg: 'Edge', OPR: 'Opera' }[browser] || browser
  return [name, system].filter(Boolean).join(' · ') || agent.slice(0, 60)
}

async function showSessions() {
  const { data } = await api('GET', '/settings/sessions')
  const list = $('sessions')
  list.replaceChildren()
  data.sort((a, b) => Number(b.attributes.current) - Number(a.attributes.current))
  for (const s of data) {
    const a = s.attributes
    const what = el(
      'span',
      { className: 'what' },
      el('span', {}, device(a.user_agent), a.current ? el('span', { className: 'tag', textContent: ` · ${text.thisDevice}` }) : null),
      el('small', { textContent: [a.remote_ip, text.since(when(a.created_at))].filter(Boolean).join(' · ') })
    )
    const li = el('li', {}, what)
    li.dataset.id = s.id
    if (!a.current) {
      const out = el('button', { type: 'button', textContent: text.signOut })
      out.setAttribute('aria-label', `${text.signOut}: ${device(a.user_agent)}`)
      out.addEventListener('click', async () => {
        out.disabled = true
        try {
          await api('DELETE', `/settings/sessions/${enc(s.id)}`)
          await showSessions()
        } catch (err) {
          out.disabled = false
          problem(err)
        }
      })
      li.append(out)
    }
    list.append(li)
  }
}

async function showClients() {
  const { data } = await api('GET', '/settings/clients')
  const list = $('clients')
  list.replaceChildren()
  if (data.length === 0) {
    list.append(el('li', { className: 'note', textContent: text.noClients }))
    return
  }
  for (const c of data) {
    const a = c.attributes
    const name = a.client_name || a.software_id || c.id
    const li = el(
      'li',
      {},
      el('span', { className: 'what' }, el('span', { textContent: name }), el('small', { textContent: [a.software_id, a.created_at ? text.lastUsed(when(a.created_at)) : ''].filter(Boolean).join(' · ') }))
    )
    li.dataset.id = c.id
    const revoke = el('button', { type: 'button', textContent: text.revoke })
    revoke.setAttribute('aria-label', `${text.revoke}: ${name}`)
    revoke.addEventListener('click', async () => {
      revoke.disabled = true
      try {
        await api('DELETE', `/settings/clients/${enc(c.id)}`)
        await showClients()
      } catch (err) {
        revoke.disabled = false
        problem(err)
      }
    })
    li.append(revoke)
    list.append(li)
  }
}

async function showStorage() {
  const { data } = await api('GET', '/settings/disk-usage')
  const used = Number(data.attributes.used || 0)
  const quota = Number(data.attributes.quota || 0)
  $('storage-text').textContent = text.used(bytes(used), quota ? bytes(quota) : '')
  if (quota) $('storage').value = Math.min(100, (100 * used) / quota)
  else $('storage').hidden = true
}

// ---- start -----------------------------------------------------------------------------

function translate() {
  const set = (id, s) => ($(id).textContent = s)
  set('title', text.title)
  set('to-home', text.home)
  set('profile-title', text.profile)
  set('public-name-label', text.name)
  set('email-label', text.email)
  set('email-note', text.emailNote)
  set('locale-label', text.language)
  set('timezone-label', text.timezone)
  set('profile-save', text.save)
  set('passphrase-title', text.passphrase)
  set('current-label', text.current)
  set('new-label', text.fresh)
  set('again-label', text.again)
  set('passphrase-save', text.change)
  set('twofactor-title', text.twofactorTitle)
  set('twofactor-setup', text.setup)
  set('twofactor-scan', text.scan)
  set('twofactor-key-label', text.key)
  set('twofactor-code-label', text.code)
  set('twofactor-passphrase-label', text.yourPassphrase)
  set('twofactor-enable', text.turnOn)
  set('twofactor-cancel', text.cancel)
  set('twofactor-codes-text', text.codesText)
  set('twofactor-download', text.download)
  set('twofactor-off-label', text.offPassphrase)
  set('twofactor-disable', text.turnOff)
  $('twofactor-qr').alt = text.scan
  set('mail-title', text.mailTitle)
  set('mail-text', text.mailText)
  set('mail-save', text.save)
  set('sessions-title', text.sessions)
  set('clients-title', text.clients)
  set('storage-title', text.storage)
  $('to-home').href = appUrl('home')
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []
  $('timezones').replaceChildren(...zones.map(z => el('option', { value: z })))
}

async function start() {
  translate()
  $('profile').addEventListener('submit', saveProfile)
  $('passphrase').addEventListener('submit', changePassphrase)
  $('twofactor-setup').addEventListener('click', proposeTwoFactor)
  $('twofactor-cancel').addEventListener('click', cancelTwoFactor)
  $('twofactor-form').addEventListener('submit', enableTwoFactor)
  $('twofactor-download').addEventListener('click', downloadCodes)
  $('twofactor-off').addEventListener('submit', disableTwoFactor)
  $('mail-prefs').addEventListener('submit', saveMailPrefs)
  const parts = await Promise.allSettled([showProfile(), showTwoFactor(), showMailPrefs(), showSessions(), showClients(), showStorage()])
  const failed = parts.filter(p => p.status === 'rejected')
  if (failed.length) problem(failed[0].reason)
  root.dataset.ready = 'true'
}

start()
