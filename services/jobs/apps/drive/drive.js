// Cocon's drive: the person's files in the browser. Plain JavaScript on the API Cozy's apps use
// (/files, /files/uploads over TUS, /permissions for links), with the token the server wrote
// into the page (data-cozy) and the session cookie it goes with. On /public/ the token is a
// link's code and the page shows what the link shares, read-only.
'use strict'

const TEXT = {
  en: {
    files: 'Files',
    trash: 'Trash',
    home: 'Home',
    newFolder: 'New folder',
    uploadFiles: 'Upload files',
    uploadFolder: 'Upload a folder',
    grid: 'Photo grid',
    emptyTrash: 'Empty the trash',
    download: 'Download',
    rename: 'Rename',
    move: 'Move',
    copy: 'Copy',
    share: 'Share by link',
    versions: 'Versions',
    toTrash: 'Move to trash',
    restore: 'Restore',
    destroy: 'Delete forever',
    clear: 'Clear selection',
    cancel: 'Cancel',
    ok: 'OK',
    close: 'Close',
    loading: 'Loading…',
    items: n => (n === 1 ? '1 item' : `${n} items`),
    emptyFolder: 'This folder is empty: upload files, or drop them here.',
    emptyTrashText: 'The trash is empty.',
    selected: n => (n === 1 ? '1 selected' : `${n} selected`),
    select: name => `Select ${name}`,
    name: 'Name',
    folderName: 'Name of the new folder',
    renameTitle: name => `Rename ${name}`,
    moveTitle: n => (n === 1 ? 'Move 1 item to…' : `Move ${n} items to…`),
    moveHere: 'Move here',
    up: 'Up one folder',
    noFolders: 'No folder here.',
    destroyTitle: n => (n === 1 ? 'Delete 1 item forever?' : `Delete ${n} items forever?`),
    destroyText: 'They cannot be restored afterwards.',
    emptyTitle: 'Empty the trash?',
    emptyText: 'Everything in the trash is deleted forever.',
    versionsTitle: name => `Versions of ${name}`,
    noVersions: 'This file has no earlier version.',
    revert: 'Restore this version',
    shareTitle: name => `Share ${name} by link`,
    links: 'Links that open it',
    noLinks: 'No link shares it yet.',
    password: 'Password (optional)',
    expires: 'Expires on (optional)',
    createLink: 'Create a link',
    copyLink: 'Copy',
    copied: 'Copied',
    revoke: 'Revoke',
    linkExpires: date => `expires ${date}`,
    linkPassword: 'password',
    shareCozy: 'Share with a Cozy',
    shareCozyTitle: name => `Share ${name} with people`,
    sharedWith: 'Shared with',
    notShared: 'No one yet.',
    theirEmail: 'Their e-mail address',
    theirCozy: 'Their Cozy’s address (optional)',
    readOnly: 'They can only read it',
    invite: 'Send the invitation',
    invited: email => `Invitation sent to ${email}.`,
    remove: 'Remove',
    readOnlyTag: 'read only',
    memberStatus: { 'mail-not-sent': 'not invited yet', pending: 'invited', seen: 'invitation opened', ready: 'accepted', revoked: 'removed' },
    uploads: 'Uploads',
    uploaded: 'Uploaded',
    waiting: 'Waiting…',
    uploadFailed: why => `Not uploaded: ${why}`,
    exists: 'a file of this name is already there',
    uploadGone: 'the server no longer holds this upload: start it again',
    drop: 'Drop files or folders to upload them here',
    done: {
      trash: n => `${n} moved to the trash.`,
      restore: n => `${n} restored.`,
      destroy: n => `${n} deleted forever.`,
      move: n => `${n} moved.`,
      copy: n => `${n} copied.`
    },
    shared: 'Shared with you by link',
    linkGone: 'This link does not open anything any more: it was revoked, or it expired.',
    protectedLink: 'This link is protected by a password.',
    linkPasswordAsk: 'The link’s password',
    unlock: 'Open',
    wrongPassword: 'This is not the link’s password: try again.',
    problem: why => `That did not work: ${why}`,
    signedOut: 'Your session ended: reload the page to sign in again.'
  },
  fr: {
    files: 'Fichiers',
    trash: 'Corbeille',
    home: 'Accueil',
    newFolder: 'Nouveau dossier',
    uploadFiles: 'Envoyer des fichiers',
    uploadFolder: 'Envoyer un dossier',
    grid: 'Grille de photos',
    emptyTrash: 'Vider la corbeille',
    download: 'Télécharger',
    rename: 'Renommer',
    move: 'Déplacer',
    copy: 'Copier',
    share: 'Partager par lien',
    versions: 'Versions',
    toTrash: 'Mettre à la corbeille',
    restore: 'Restaurer',
    destroy: 'Supprimer définitivement',
    clear: 'Désélectionner',
    cancel: 'Annuler',
    ok: 'OK',
    close: 'Fermer',
    loading: 'Chargement…',
    items: n => (n === 1 ? '1 élément' : `${n} éléments`),
    emptyFolder: 'Ce dossier est vide : envoyez des fichiers, ou déposez-les ici.',
    emptyTrashText: 'La corbeille est vide.',
    selected: n => (n === 1 ? '1 sélectionné' : `${n} sélectionnés`),
    select: name => `Sélectionner ${name}`,
    name: 'Nom',
    folderName: 'Nom du nouveau dossier',
    renameTitle: name => `Renommer ${name}`,
    moveTitle: n => (n === 1 ? 'Déplacer 1 élément vers…' : `Déplacer ${n} éléments vers…`),
    moveHere: 'Déplacer ici',
    up: 'Dossier parent',
    noFolders: 'Aucun dossier ici.',
    destroyTitle: n => (n === 1 ? 'Supprimer 1 élément définitivement ?' : `Supprimer ${n} éléments définitivement ?`),
    destroyText: 'Ils ne pourront plus être restaurés.',
    emptyTitle: 'Vider la corbeille ?',
    emptyText: 'Tout ce qu’elle contient est supprimé définitivement.',
    versionsTitle: name => `Versions de ${name}`,
    noVersions: 'Ce fichier n’a pas de version antérieure.',
    revert: 'Restaurer cette version',
    shareTitle: name => `Partager ${name} par lien`,
    links: 'Les liens qui l’ouvrent',
    noLinks: 'Aucun lien ne le partage encore.',
    password: 'Mot de passe (facultatif)',
    expires: 'Expire le (facultatif)',
    createLink: 'Créer un lien',
    copyLink: 'Copier',
    copied: 'Copié',
    revoke: 'Révoquer',
    linkExpires: date => `expire le ${date}`,
    linkPassword: 'mot de passe',
    shareCozy: 'Partager avec un Cozy',
    shareCozyTitle: name => `Partager ${name} avec des personnes`,
    sharedWith: 'Partagé avec',
    notShared: 'Personne pour l’instant.',
    theirEmail: 'Son adresse e-mail',
    theirCozy: 'L’adresse de son Cozy (facultatif)',
    readOnly: 'En lecture seule',
    invite: 'Envoyer l’invitation',
    invited: email => `Invitation envoyée à ${email}.`,
    remove: 'Retirer',
    readOnlyTag: 'lecture seule',
    memberStatus: { 'mail-not-sent': 'pas encore invité', pending: 'invité', seen: 'invitation ouverte', ready: 'accepté', revoked: 'retiré' },
    uploads: 'Envois',
    uploaded: 'Envoyé',
    waiting: 'En attente…',
    uploadFailed: why => `Non envoyé : ${why}`,
    exists: 'un fichier de ce nom s’y trouve déjà',
    uploadGone: 'le serveur n’a plus cet envoi : recommencez-le',
    drop: 'Déposez des fichiers ou des dossiers pour les envoyer ici',
    done: {
      trash: n => `${n} mis à la corbeille.`,
      restore: n => `${n} restaurés.`,
      destroy: n => `${n} supprimés définitivement.`,
      move: n => `${n} déplacés.`,
      copy: n => `${n} copiés.`
    },
    shared: 'Partagé avec vous par lien',
    linkGone: 'Ce lien n’ouvre plus rien : il a été révoqué, ou il a expiré.',
    protectedLink: 'Ce lien est protégé par un mot de passe.',
    linkPasswordAsk: 'Le mot de passe du lien',
    unlock: 'Ouvrir',
    wrongPassword: 'Ce n’est pas le mot de passe du lien : réessayez.',
    problem: why => `Cela n’a pas marché : ${why}`,
    signedOut: 'Votre session a pris fin : rechargez la page pour vous reconnecter.'
  }
}

const ROOT = 'io.cozy.files.root-dir'
const TRASH = 'io.cozy.files.trash-dir'
const FILES = 'io.cozy.files'
/// Files past this size go over TUS and resume after a network failure.
const RESUMABLE_FROM = 32 * 1024 * 1024
/// What a TUS append sends once an append of the whole file failed before any of it arrived.
const PART = 32 * 1024 * 1024
const FIRST_PAGE = 100
const NEXT_PAGES = 1000
const PARALLEL_UPLOADS = 3

const text = localised(TEXT)
const isPublic = window.location.pathname.startsWith('/public')
const scroller = $('scroller')
const canvas = $('canvas')

const state = {
  view: 'folder', // folder | trash
  dir: null, // the directory shown (its JSON-API resource)
  entries: [],
  count: 0,
  seq: 0, // the listing in progress: an older one stops when it changes
  selected: new Set(),
  grid: window.localStorage.getItem('cocon.drive.grid') === '1',
  publicRoot: null // on /public/: the resource the link shares
}

function svg(body) {
  return `data:image/svg+xml,${enc(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">${body}</svg>`)}`
}
const ICONS = {
  directory: svg('<path d="M2 6a2 2 0 0 1 2-2h5l2 2h9a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2z" fill="#4f8ad1"/>'),
  file: svg('<path d="M6 2h8l5 5v13a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2z" fill="#b9c3cf"/><path d="M14 2v5h5" fill="#8996a5"/>'),
  image: svg('<rect x="3" y="4" width="18" height="16" rx="2" fill="#6fb07f"/><circle cx="9" cy="10" r="2" fill="#fff"/><path d="M5 18l5-5 3 3 2-2 4 4z" fill="#fff"/>')
}

function say(message) {
  $('status').textContent = message
}

function problem(error) {
  const box = $('problem')
  if (!error) {
    box.hidden = true
    return
  }
  console.error(error)
  box.textContent = error.status === 401 && !isPublic ? text.signedOut : text.problem(error.message || String(error))
  box.hidden = false
}

// ---- listing -------------------------------------------------------------------------------

function isDir(f) {
  return f.attributes.type === 'directory'
}

function thumbnail(f, size) {
  const link = f.links && f.links[size]
  return link ? stack + link : null
}

/// Lays the entries out as rows (list) or tiles (grid) and renders only those in view, so a
/// folder of 10,000 entries costs what a screenful does.
const rendered = new Map()

function layout() {
  const grid = state.grid && state.view !== 'trash'
  const width = canvas.clientWidth || scroller.clientWidth || 800
  const per = grid ? Math.max(1, Math.floor(width / 170)) : 1
  return { grid, per, height: grid ? 180 : 44, width: grid ? Math.floor(width / per) : width }
}

function row(f, index, grid) {
  const a = f.attributes
  const li = el('li', {})
  li.dataset.id = f.id
  li.dataset.grid = grid ? '1' : ''
  li.setAttribute('aria-posinset', String(index + 1))
  li.setAttribute('aria-setsize', String(state.entries.length))
  const box = el('input', { type: 'checkbox' })
  box.setAttribute('aria-label', text.select(a.name))
  box.addEventListener('change', () => pick(f.id, box.checked))
  const thumb = isDir(f) ? null : thumbnail(f, grid ? 'small' : 'tiny')
  const src = thumb || (isDir(f) ? ICONS.directory : a.class === 'image' ? ICONS.image : ICONS.file)
  const icon = el('img', { className: thumb ? 'kind thumb' : 'kind', alt: '', src, loading: 'lazy', decoding: 'async' })
  const name = el('button', { type: 'button', className: 'name', textContent: a.name })
  name.addEventListener('click', () => open(f))
  const size = el('span', { className: 'size', textContent: isDir(f) ? '' : bytes(Number(a.size || 0)) })
  const date = el('time', { className: 'date', dateTime: a.updated_at || '', textContent: when(a.updated_at) })
  li.append(box, icon, name, size, date)
  return li
}

function render() {
  const l = layout()
  canvas.classList.toggle('grid', l.grid)
  const rows = Math.ceil(state.entries.length / l.per)
  canvas.style.height = `${rows * l.height}px`
  const top = scroller.scrollTop - canvas.offsetTop
  const first = Math.max(0, Math.floor(top / l.height) - 3)
  const last = Math.min(rows, Math.ceil((top + scroller.clientHeight) / l.height) + 3)
  const keep = new Set()
  for (let r = first; r < last; r++) {
    for (let c = 0; c < l.per; c++) {
      const index = r * l.per + c
      const f = state.entries[index]
      if (!f) break
      keep.add(f.id)
      let li = rendered.get(f.id)
      if (!li || li.dataset.grid !== (l.grid ? '1' : '')) {
        if (li) li.remove()
        li = row(f, index, l.grid)
        rendered.set(f.id, li)
        canvas.append(li)
      }
      li.style.top = `${r * l.height}px`
      li.style.height = `${l.height - (l.grid ? 8 : 0)}px`
      li.style.left = l.grid ? `${c * l.width}px` : ''
      li.style.width = l.grid ? `${l.width - 8}px` : ''
      const picked = state.selected.has(f.id)
      li.classList.toggle('picked', picked)
      li.firstChild.checked = picked
    }
  }
  for (const [id, li] of rendered) {
    if (!keep.has(id) && !li.contains(document.activeElement)) {
      li.remove()
      rendered.delete(id)
    }
  }
}

let frame = 0
function renderSoon() {
  if (!frame) {
    frame = window.requestAnimationFrame(() => {
      frame = 0
      render()
    })
  }
}

function redraw() {
  rendered.clear()
  canvas.replaceChildren()
  render()
}

function summary() {
  if (state.entries.length === 0) say(state.view === 'trash' ? text.emptyTrashText : text.emptyFolder)
  else say(text.items(state.count))
}

/// Lists a directory (or the trash): the first page at once, the rest behind it.
async function list(first, nextPath, keepScroll) {
  const seq = ++state.seq
  if (!keepScroll) {
    state.selected.clear()
    scroller.scrollTop = 0
  }
  say(text.loading)
  root.dataset.loaded = 'false'
  const page = await first()
  if (seq !== state.seq) return
  state.entries = page.entries
  state.count = Math.max(page.count, page.entries.length)
  const ids = new Set(state.entries.map(f => f.id))
  for (const id of state.selected) if (!ids.has(id)) state.selected.delete(id)
  redraw()
  summary()
  showSelection()
  root.dataset.ready = 'true'
  // When the first screen is up, for the benchmarks (tests/bench/drive.sh).
  if (!performance.getEntriesByName('drive-first-screen').length) performance.mark('drive-first-screen')
  let next = page.next
  while (next && seq === state.seq) {
    const more = await nextPath(next)
    if (seq !== state.seq) return
    state.entries.push(...more.entries)
    next = more.next
    render()
  }
  summary()
  root.dataset.loaded = 'true'
}

function morePages(link) {
  return link ? link.replace(/page\[limit\]=\d+/, `page[limit]=${NEXT_PAGES}`) : null
}

async function folderPage(path) {
  const body = await api('GET', path)
  const children = (body.included || []).filter(r => r.type === FILES)
  // The trash is a folder of the root, shown as its own place instead.
  const entries = children.filter(r => r.id !== TRASH)
  const count = Math.max(0, ((body.meta && body.meta.count) || children.length) - (children.length - entries.length))
  return { body, entries, count, next: morePages(body.links && body.links.next) }
}

async function openFolder(id, keepScroll) {
  state.view = 'folder'
  showPlace()
  await list(
    async () => {
      const page = await folderPage(`/files/${enc(id)}?page[limit]=${FIRST_PAGE}`)
      state.dir = page.body.data
      if (!isDir(state.dir)) {
        // A link to one file: the file itself is what there is to show.
        page.entries = [state.dir]
        page.count = 1
      }
      showCrumbs()
      return page
    },
    folderPage,
    keepScroll
  )
}

async function trashPage(path) {
  const body = await api('GET', path)
  return { entries: body.data || [], count: (body.meta && body.meta.count) || 0, next: morePages(body.links && body.links.next) }
}

async function openTrash(keepScroll) {
  state.view = 'trash'
  state.dir = null
  showPlace()
  showCrumbs()
  await list(() => trashPage(`/files/trash?page[limit]=${FIRST_PAGE}`), trashPage, keepScroll)
}

function reload() {
  return (state.view === 'trash' ? openTrash(true) : openFolder(state.dir ? state.dir.id : ROOT, true)).catch(problem)
}

function folderLink(id) {
  return `#/folder/${enc(id)}`
}

function showCrumbs() {
  const list = $('crumbs').firstElementChild
  list.replaceChildren()
  if (state.view === 'trash') {
    list.append(el('li', {}, el('span', { textContent: text.trash })))
    return
  }
  const dir = state.dir
  if (!dir) return
  const path = dir.attributes.path || '/'
  let base = '/'
  let baseName = text.files
  if (isPublic) {
    base = state.publicRoot.attributes.path || '/'
    baseName = state.publicRoot.attributes.name
  }
  const parts = path === base ? [] : path.slice(base === '/' ? 1 : base.length + 1).split('/')
  const crumbs = [{ name: baseName, path: base }]
  let at = base
  for (const part of parts) {
    at = at === '/' ? `/${part}` : `${at}/${part}`
    crumbs.push({ name: part, path: at })
  }
  crumbs.forEach((c, i) => {
    if (i === crumbs.length - 1) {
      const here = el('span', { textContent: c.name })
      here.setAttribute('aria-current', 'page')
      list.append(el('li', {}, here))
      return
    }
    const a = el('a', { href: '#', textContent: c.name })
    a.addEventListener('click', async e => {
      e.preventDefault()
      try {
        const target = i === 0 && isPublic ? state.publicRoot.id : (await api('GET', `/files/metadata?Path=${enc(c.path)}`)).data.id
        window.location.hash = target === ROOT ? '#/' : folderLink(target)
      } catch (err) {
        problem(err)
      }
    })
    list.append(el('li', {}, a))
  })
}

function showPlace() {
  const trash = state.view === 'trash'
  $('to-files').toggleAttribute('aria-current', !trash)
  if (!trash) $('to-files').setAttribute('aria-current', 'page')
  $('to-trash').toggleAttribute('aria-current', trash)
  if (trash) $('to-trash').setAttribute('aria-current', 'page')
  for (const id of ['new-folder', 'upload-files-label', 'upload-folder-label']) $(id).hidden = trash || isPublic
  $('view').hidden = trash
  $('empty-trash').hidden = !trash
  $('download-all').hidden = !isPublic
}

// ---- selection and actions -----------------------------------------------------------------

function pick(id, on) {
  if (on) state.selected.add(id)
  else state.selected.delete(id)
  render()
  showSelection()
}

function picked() {
  return state.entries.filter(f => state.selected.has(f.id))
}

function showSelection() {
  const files = picked()
  const n = files.length
  $('selection').hidden = n === 0
  $('selected-count').textContent = text.selected(n)
  const trash = state.view === 'trash'
  const allFiles = files.every(f => !isDir(f))
  const rules = {
    download: !trash,
    rename: !trash && !isPublic && n === 1,
    move: !trash && !isPublic,
    copy: !trash && !isPublic && allFiles,
    share: !trash && !isPublic && n === 1,
    sharecozy: !trash && !isPublic && n === 1,
    versions: !trash && !isPublic && n === 1 && allFiles,
    trash: !trash && !isPublic,
    restore: trash,
    destroy: trash,
    clear: true
  }
  for (const button of $('selection').querySelectorAll('button[data-act]')) button.hidden = !rules[button.dataset.act]
}

function open(f) {
  if (isDir(f)) {
    if (state.view !== 'trash') window.location.hash = folderLink(f.id)
    return
  }
  // A file opens in a new tab, served as the files API serves it (sandboxed).
  const tab = window.open('about:blank', '_blank')
  link(f.id, '')
    .then(href => {
      if (tab) {
        tab.opener = null
        tab.location = href
      } else window.location.href = href
    })
    .catch(err => {
      if (tab) tab.close()
      problem(err)
    })
}

async function link(id, version) {
  const body = await api('POST', `/files/downloads?Id=${enc(id)}${version ? `&VersionId=${enc(version)}` : ''}`)
  return stack + body.links.related
}

async function download(files) {
  if (files.length === 1 && !isDir(files[0])) {
    window.location.href = `${await link(files[0].id, '')}?Dl=1`
    return
  }
  const name = files.length === 1 ? files[0].attributes.name : (state.dir && state.dir.attributes.name) || 'files'
  const body = await api('POST', '/files/archive', {
    data: { type: 'io.cozy.archives', attributes: { name, ids: files.map(f => f.id) } }
  })
  window.location.href = stack + body.links.related
}

/// Applies `step` to each item in turn; what failed stays selected and is told.
async function each(files, step, done) {
  let ok = 0
  let failure = null
  for (const f of files) {
    try {
      await step(f)
      state.selected.delete(f.id)
      ok++
    } catch (err) {
      failure = failure || err
    }
  }
  if (failure) problem(failure)
  else problem(null)
  await reload()
  if (ok) say(done(ok))
  showSelection()
}

const ACTIONS = {
  download: files => download(files),
  rename: files => renameDialog(files[0]),
  move: files => moveDialog(files),
  copy: files => each(files, f => api('POST', `/files/${enc(f.id)}/copy`), text.done.copy),
  share: files => shareDialog(files[0]),
  sharecozy: files => cozyShareDialog(files[0]),
  versions: files => versionsDialog(files[0]),
  trash: files => each(files, f => api('DELETE', `/files/${enc(f.id)}`), text.done.trash),
  restore: files => each(files, f => api('POST', `/files/trash/${enc(f.id)}`), text.done.restore),
  destroy: async files => {
    if (await confirmDialog(text.destroyTitle(files.length), text.destroyText, text.destroy)) {
      await each(files, f => api('DELETE', `/files/trash/${enc(f.id)}`), text.done.destroy)
    }
  },
  clear: () => {
    state.selected.clear()
    render()
    showSelection()
  }
}

// ---- dialogs -------------------------------------------------------------------------------

const dialog = $('dialog')

/// Shows the dialog with `body`; `submit` runs on OK and closes it when it resolves true; its
/// errors are shown in the dialog, which stays open. Resolves when the dialog closes.
function showDialog(title, body, submit, okText) {
  $('dialog-title').textContent = title
  $('dialog-body').replaceChildren(...body)
  $('dialog-problem').hidden = true
  $('dialog-ok').textContent = okText || text.ok
  $('dialog-ok').hidden = !submit
  $('dialog-cancel').textContent = submit ? text.cancel : text.close
  return new Promise(resolve => {
    let result = false
    const form = $('dialog-form')
    form.onsubmit = async e => {
      e.preventDefault()
      if (!submit) return
      $('dialog-ok').disabled = true
      try {
        if (await submit()) {
          result = true
          dialog.close()
        }
      } catch (err) {
        $('dialog-problem').textContent = text.problem(err.message || String(err))
        $('dialog-problem').hidden = false
      } finally {
        $('dialog-ok').disabled = false
      }
    }
    $('dialog-cancel').onclick = () => dialog.close()
    dialog.onclose = () => resolve(result)
    dialog.showModal()
    const first = dialog.querySelector('#dialog-body input, #dialog-body button, #dialog-ok:not([hidden])')
    if (first) first.focus()
  })
}

function field(label, props) {
  const input = el('input', props)
  input.id = `field-${props.name}`
  return [el('label', { htmlFor: input.id, textContent: label }), input]
}

function confirmDialog(title, message, okText) {
  return showDialog(title, [el('p', { textContent: message })], async () => true, okText)
}

async function newFolderDialog() {
  const [label, input] = field(text.folderName, { type: 'text', name: 'name', required: true })
  const made = await showDialog(text.newFolder, [label, input], async () => {
    await api('POST', `/files/${enc(state.dir.id)}?Type=directory&Name=${enc(input.value.trim())}`)
    return true
  })
  if (made) await reload()
}

async function renameDialog(f) {
  const [label, input] = field(text.name, { type: 'text', name: 'name', required: true, value: f.attributes.name })
  const done = await showDialog(text.renameTitle(f.attributes.name), [label, input], async () => {
    await api('PATCH', `/files/${enc(f.id)}`, { data: { type: FILES, id: f.id, attributes: { name: input.value.trim() } } })
    return true
  })
  if (done) {
    state.selected.delete(f.id)
    await reload()
  }
}

/// A folder picker: browses directories from the current one; OK moves the items there.
async function moveDialog(files) {
  const moving = new Set(files.map(f => f.id))
  let at = state.dir
  const where = el('p', { className: 'link' })
  const folders = el('ul', {})
  const up = el('button', { type: 'button', textContent: text.up })
  async function show(id) {
    const body = await api('GET', `/files/${enc(id)}?page[limit]=${NEXT_PAGES}`)
    at = body.data
    where.textContent = at.attributes.path
    up.disabled = at.id === ROOT
    folders.replaceChildren()
    const dirs = (body.included || []).filter(r => r.type === FILES && isDir(r) && !moving.has(r.id))
    if (dirs.length === 0) folders.append(el('li', { textContent: text.noFolders }))
    for (const d of dirs) {
      const b = el('button', { type: 'button', textContent: d.attributes.name })
      b.addEventListener('click', () => show(d.id).catch(problem))
      folders.append(el('li', {}, b))
    }
  }
  up.addEventListener('click', () => {
    const parent = at.relationships && at.relationships.parent && at.relationships.parent.data
    if (parent) show(parent.id).catch(problem)
  })
  await show(at.id)
  await showDialog(
    text.moveTitle(files.length),
    [where, up, folders],
    async () => {
      const target = at.id
      dialog.close()
      await each(files, f => api('PATCH', `/files/${enc(f.id)}`, { data: { type: FILES, id: f.id, attributes: { dir_id: target } } }), text.done.move)
      return true
    },
    text.moveHere
  )
}

async function versionsDialog(f) {
  const body = await api('GET', `/files/${enc(f.id)}`)
  const versions = (body.included || []).filter(r => r.type === 'io.cozy.files.versions')
  versions.sort((a, b) => String(b.attributes.updated_at).localeCompare(String(a.attributes.updated_at)))
  const items = el('ul', {})
  if (versions.length === 0) items.append(el('li', { textContent: text.noVersions }))
  for (const v of versions) {
    const version = v.id.slice(v.id.indexOf('/') + 1)
    const get = el('button', { type: 'button', textContent: text.download })
    get.addEventListener('click', async () => {
      try {
        window.location.href = `${await link(f.id, version)}?Dl=1`
      } catch (err) {
        problem(err)
      }
    })
    const revert = el('button', { type: 'button', textContent: text.revert })
    revert.addEventListener('click', async () => {
      try {
        await api('POST', `/files/revert/${enc(f.id)}/${enc(version)}`)
        dialog.close()
        await reload()
      } catch (err) {
        problem(err)
      }
    })
    items.append(el('li', {}, el('span', { textContent: `${when(v.attributes.updated_at)} · ${bytes(Number(v.attributes.size || 0))}` }), el('span', { className: 'buttons' }, get, revert)))
  }
  await showDialog(text.versionsTitle(f.attributes.name), [items], null)
}

function publicUrl(code) {
  return `${window.location.protocol}//${window.location.host}/public/?sharecode=${enc(code)}`
}

function linkCode(set) {
  const a = set.attributes
  return (a.shortcodes && Object.values(a.shortcodes)[0]) || (a.codes && Object.values(a.codes)[0]) || ''
}

async function shareDialog(f) {
  const existing = el('ul', {})
  existing.id = 'links'
  async function showLinks() {
    const body = await api('GET', '/permissions/doctype/io.cozy.files/shared-by-link')
    const sets = (body.data || []).filter(set => Object.values(set.attributes.permissions || {}).some(r => (r.values || []).includes(f.id)))
    existing.replaceChildren()
    if (sets.length === 0) existing.append(el('li', { textContent: text.noLinks }))
    for (const set of sets) {
      const url = publicUrl(linkCode(set))
      const notes = []
      if (set.attributes.expires_at) notes.push(text.linkExpires(when(set.attributes.expires_at)))
      if (set.attributes.password) notes.push(text.linkPassword)
      const copy = el('button', { type: 'button', textContent: text.copyLink })
      copy.addEventListener('click', async () => {
        await navigator.clipboard.writeText(url).catch(() => {})
        copy.textContent = text.copied
      })
      const revoke = el('button', { type: 'button', textContent: text.revoke })
      revoke.addEventListener('click', async () => {
        try {
          await api('DELETE', `/permissions/${enc(set.id)}`)
          await showLinks()
        } catch (err) {
          problem(err)
        }
      })
      const a = el('a', { className: 'link', href: url, target: '_blank', rel: 'noopener', textContent: url })
      existing.append(el('li', {}, el('span', {}, a, notes.length ? ` (${notes.join(', ')})` : ''), el('span', { className: 'buttons' }, copy, revoke)))
    }
  }
  await showLinks()
  const [pl, password] = field(text.password, { type: 'password', name: 'password', autocomplete: 'new-password' })
  const [el2, expires] = field(text.expires, { type: 'date', name: 'expires' })
  await showDialog(
    text.shareTitle(f.attributes.name),
    [el('h3', { textContent: text.links }), existing, pl, password, el2, expires],
    async () => {
      const attributes = { permissions: { files: { type: FILES, verbs: ['GET'], values: [f.id] } } }
      if (password.value) attributes.password = password.value
      if (expires.value) attributes.expires_at = new Date(`${expires.value}T23:59:59`).toISOString()
      await api('POST', '/permissions?codes=email', { data: { type: 'io.cozy.permissions', attributes } })
      password.value = ''
      expires.value = ''
      await showLinks()
      return false
    },
    text.createLink
  )
}

/// Sharing with another Cozy (cozy-stack's sharings): a contact for the address, then a
/// sharing of the file or folder kept in sync (or pushed, read only); the person is invited by
/// mail and accepts on their own Cozy.
async function cozyShareDialog(f) {
  const members = el('ul', {})
  members.id = 'members'
  async function showMembers() {
    const body = await api('GET', `/sharings/doctype/${FILES}`)
    const sharings = (body.data || []).filter(s => (s.attributes.rules || []).some(r => (r.values || []).includes(f.id)))
    members.replaceChildren()
    for (const sharing of sharings) {
      ;(sharing.attributes.members || []).forEach((m, index) => {
        if (index === 0 || m.status === 'revoked') return
        const who = m.public_name || m.name || m.email || m.instance
        const notes = [text.memberStatus[m.status] || m.status]
        if (m.read_only) notes.push(text.readOnlyTag)
        const li = el('li', {}, el('span', { textContent: `${who} · ${notes.join(' · ')}` }))
        li.dataset.email = m.email || ''
        li.dataset.status = m.status
        if (sharing.attributes.owner) {
          const remove = el('button', { type: 'button', textContent: text.remove })
          remove.setAttribute('aria-label', `${text.remove}: ${who}`)
          remove.addEventListener('click', async () => {
            try {
              await api('DELETE', `/sharings/${enc(sharing.id)}/recipients/${index}`)
              await showMembers()
            } catch (err) {
              problem(err)
            }
          })
          li.append(el('span', { className: 'buttons' }, remove))
        }
        members.append(li)
      })
    }
    if (members.children.length === 0) members.append(el('li', { textContent: text.notShared }))
  }
  await showMembers()
  const [le, email] = field(text.theirEmail, { type: 'email', name: 'email', required: true, autocomplete: 'email' })
  const [lc, cozyUrl] = field(text.theirCozy, { type: 'url', name: 'cozy', placeholder: 'https://' })
  const readOnly = el('input', { type: 'checkbox', id: 'field-read-only' })
  const lr = el('label', { className: 'check' }, readOnly, ` ${text.readOnly}`)
  const sent = el('p', { className: 'said', role: 'status' })
  await showDialog(
    text.shareCozyTitle(f.attributes.name),
    [el('h3', { textContent: text.sharedWith }), members, le, email, lc, cozyUrl, lr, sent],
    async () => {
      const address = email.value.trim()
      const contact = { fullname: address, email: [{ address, primary: true }] }
      if (cozyUrl.value.trim()) contact.cozy = [{ url: cozyUrl.value.trim(), primary: true }]
      const made = await api('POST', '/data/io.cozy.contacts/', contact)
      const how = readOnly.checked ? 'push' : 'sync'
      const rule = { title: f.attributes.name, doctype: FILES, values: [f.id], add: how, update: how, remove: how }
      await api('POST', '/sharings/', {
        data: {
          type: 'io.cozy.sharings',
          attributes: { description: f.attributes.name, rules: [rule] },
          relationships: { [readOnly.checked ? 'read_only_recipients' : 'recipients']: { data: [{ id: made.id, type: 'io.cozy.contacts' }] } }
        }
      })
      sent.textContent = text.invited(address)
      email.value = ''
      cozyUrl.value = ''
      readOnly.checked = false
      await showMembers()
      return false
    },
    text.invite
  )
}

// ---- uploads -------------------------------------------------------------------------------

function b64(s) {
  let bin = ''
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b)
  return window.btoa(bin)
}

/// Sends `body` with XMLHttpRequest, whose upload events give the progress fetch does not.
function send(method, url, body, extra, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open(method, url)
    xhr.withCredentials = true
    for (const [k, v] of Object.entries(headers(extra))) xhr.setRequestHeader(k, v)
    xhr.upload.onprogress = e => progress(e.loaded)
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr)
      else {
        let why = xhr.statusText
        try {
          const body = JSON.parse(xhr.responseText)
          const e = (body.errors || [])[0]
          why = (e && (e.detail || e.title)) || body.reason || why
        } catch (e) {
          // not JSON: the status says it
        }
        reject(new ApiError(xhr.status, xhr.status === 409 ? text.exists : why || String(xhr.status)))
      }
    }
    xhr.onerror = () => reject(new ApiError(0, 'the network failed'))
    xhr.send(body)
  })
}

const sleep = ms => new Promise(resolve => window.setTimeout(resolve, ms))

/// Large files over TUS: created, then sent in one append (the server keeps what arrived of a
/// broken one); after a failure the server says how much it has (HEAD) and the upload goes on
/// from there, in parts if nothing of the failed append arrived.
async function resumable(file, dirId, progress) {
  const res = await fetch(`${stack}/files/uploads/`, {
    method: 'POST',
    credentials: 'include',
    headers: headers({
      'Tus-Resumable': '1.0.0',
      'Upload-Length': String(file.size),
      'Upload-Metadata': `filename ${b64(file.name)},dir_id ${b64(dirId)},filetype ${b64(file.type || 'application/octet-stream')}`
    })
  })
  if (res.status !== 201) throw new ApiError(res.status, res.status === 409 ? text.exists : await reason(res))
  const url = new URL(res.headers.get('Location'), stack).href
  let offset = 0
  let most = Infinity
  while (offset < file.size) {
    // The File itself when it goes whole: Chromium reads a slice of it at nearly twice the CPU.
    const part = offset === 0 && most >= file.size ? file : file.slice(offset, offset + most)
    try {
      const xhr = await send('PATCH', url, part, { 'Tus-Resumable': '1.0.0', 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }, n => progress(offset + n))
      offset = Number(xhr.getResponseHeader('Upload-Offset'))
    } catch (err) {
      if (err.status >= 400 && err.status < 500 && err.status !== 409 && err.status !== 413) throw err
      const before = offset
      offset = await resumeAt(url, err)
      // Nothing of it arrived: a proxy refusing so large a body (413, often without the CORS
      // headers that let the page read it) or a network that fails early. Parts from now on.
      if (offset === before && most > PART) most = PART
    }
    progress(offset)
  }
}

/// Where an upload goes on after a failed append: what the server has (HEAD), asked after a
/// wait that doubles while the network stays down. Gives up after five tries.
async function resumeAt(url, failure) {
  for (let tries = 1; tries <= 5; tries++) {
    await sleep(500 * 2 ** tries)
    let head
    try {
      head = await fetch(url, { method: 'HEAD', credentials: 'include', headers: headers({ 'Tus-Resumable': '1.0.0' }) })
    } catch (err) {
      failure = err
      continue
    }
    if (head.ok) return Number(head.headers.get('Upload-Offset'))
    if (head.status < 500) throw new ApiError(head.status, head.status === 404 ? text.uploadGone : head.statusText || String(head.status))
    failure = new ApiError(head.status, head.statusText || String(head.status))
  }
  throw failure
}

function uploadOne(file, dirId, progress) {
  if (file.size >= RESUMABLE_FROM) return resumable(file, dirId, progress)
  const url = `${stack}/files/${enc(dirId)}?Type=file&Name=${enc(file.name)}`
  return send('POST', url, file, { 'Content-Type': file.type || 'application/octet-stream' }, progress)
}

function joinPath(base, rel) {
  return base === '/' ? `/${rel}` : `${base}/${rel}`
}

/// Uploads `items` ({file, path} with path relative to the folder; {dir} for an empty folder)
/// into the folder shown, making the folders their paths name, a few files at a time.
async function upload(items) {
  if (!items.length || !state.dir) return
  const target = state.dir
  const basePath = target.attributes.path || '/'
  const folders = new Map([['', Promise.resolve(target.id)]])
  function folder(rel) {
    if (!folders.has(rel)) {
      const cut = rel.lastIndexOf('/')
      const parent = cut < 0 ? '' : rel.slice(0, cut)
      const name = rel.slice(cut + 1)
      folders.set(
        rel,
        folder(parent).then(async parentId => {
          try {
            return (await api('POST', `/files/${enc(parentId)}?Type=directory&Name=${enc(name)}`)).data.id
          } catch (err) {
            if (err.status !== 409) throw err
            return (await api('GET', `/files/metadata?Path=${enc(joinPath(basePath, rel))}`)).data.id
          }
        })
      )
    }
    return folders.get(rel)
  }
  $('uploads').hidden = false
  const list = $('upload-list')
  const queue = items.map(item => {
    const name = item.path || item.dir
    const bar = el('progress', { max: 100, value: 0 })
    bar.setAttribute('aria-label', name)
    const status = el('span', { textContent: text.waiting })
    const li = el('li', {}, el('div', { textContent: name }), bar, status)
    list.append(li)
    return { item, bar, status, li }
  })
  async function worker() {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const { item, bar, status, li } = job
      try {
        if (item.dir) {
          await folder(item.dir)
        } else {
          const cut = item.path.lastIndexOf('/')
          const dirId = await folder(cut < 0 ? '' : item.path.slice(0, cut))
          const size = item.file.size || 1
          await uploadOne(item.file, dirId, n => {
            const pct = Math.min(100, Math.round((100 * n) / size))
            bar.value = pct
            status.textContent = `${pct} %`
          })
        }
        bar.value = 100
        status.textContent = text.uploaded
        li.dataset.done = 'true'
      } catch (err) {
        status.textContent = text.uploadFailed(err.message || String(err))
        li.classList.add('failed')
        li.dataset.done = 'failed'
      }
    }
  }
  await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, worker))
  if (state.view === 'folder' && state.dir && state.dir.id === target.id) await reload()
}

function chosen(input) {
  const items = [...input.files].map(file => ({ file, path: file.webkitRelativePath || file.name }))
  input.value = ''
  upload(items).catch(problem)
}

/// What was dropped: files, and folders walked whole (their empty folders too).
async function dropped(transfer) {
  const entries = [...transfer.items].map(i => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean)
  if (!entries.length) return [...transfer.files].map(file => ({ file, path: file.name }))
  const out = []
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject))
      out.push({ file, path: prefix + entry.name })
      return
    }
    const reader = entry.createReader()
    let any = false
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject))
      if (!batch.length) break
      any = true
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`)
    }
    if (!any) out.push({ dir: prefix + entry.name })
  }
  for (const entry of entries) await walk(entry, '')
  return out
}

function hasFiles(e) {
  return e.dataTransfer && [...e.dataTransfer.types].includes('Files')
}

function canDrop() {
  return !isPublic && state.view === 'folder' && state.dir && isDir(state.dir)
}

// ---- start ---------------------------------------------------------------------------------

function translate() {
  const set = (id, s) => ($(id).textContent = s)
  set('to-files', text.files)
  set('to-trash', text.trash)
  set('to-home', text.home)
  set('new-folder', text.newFolder)
  $('upload-files-label').lastElementChild.textContent = text.uploadFiles
  $('upload-folder-label').lastElementChild.textContent = text.uploadFolder
  set('view', text.grid)
  set('empty-trash', text.emptyTrash)
  set('uploads-title', text.uploads)
  set('uploads-close', text.close)
  set('download-all', text.download)
  set('drop-text', text.drop)
  const acts = { download: text.download, rename: text.rename, move: text.move, copy: text.copy, share: text.share, sharecozy: text.shareCozy, versions: text.versions, trash: text.toTrash, restore: text.restore, destroy: text.destroy, clear: text.clear }
  for (const button of $('selection').querySelectorAll('button[data-act]')) button.textContent = acts[button.dataset.act]
  $('to-home').href = appUrl('home')
  $('view').setAttribute('aria-pressed', String(state.grid))
}

function route() {
  problem(null)
  const hash = window.location.hash.replace(/^#/, '') || '/'
  const folder = hash.match(/^\/folder\/(.+)$/)
  if (isPublic) return openFolder(folder ? decodeURIComponent(folder[1]) : state.publicRoot.id)
  if (hash === '/trash') return openTrash()
  return openFolder(folder ? decodeURIComponent(folder[1]) : ROOT)
}

async function startPublic() {
  $('places').hidden = true
  $('title').textContent = text.shared
  try {
    const self = await api('GET', '/permissions/self')
    const rule = Object.values(self.data.attributes.permissions || {}).find(r => r.type === FILES && (r.values || []).length)
    if (!rule) throw new ApiError(403, text.linkGone)
    state.publicRoot = (await api('GET', `/files/${enc(rule.values[0])}`)).data
  } catch (err) {
    if (err.status === 403 && /password/.test(err.message)) passwordForm()
    else say(err.status === 401 || err.status === 403 ? text.linkGone : text.problem(err.message))
    root.dataset.ready = 'true'
    return false
  }
  return true
}

/// A protected link: the password goes to the instance in a form, whose answer sets the proof
/// as a cookie of the instance and sends the browser back here (with password=wrong if not).
function passwordForm() {
  const query = new URLSearchParams(window.location.search)
  const wrong = query.get('password') === 'wrong'
  query.delete('password')
  const back = `${window.location.origin}${window.location.pathname}?${query}${window.location.hash}`
  const form = el('form', { method: 'post', action: `${stack}/auth/share-by-link/password`, className: 'unlock' })
  const hidden = (name, value) => el('input', { type: 'hidden', name, value })
  const [label, input] = field(text.linkPasswordAsk, { type: 'password', name: 'password', required: true, autocomplete: 'off' })
  form.append(hidden('code', query.get('sharecode') || ''), hidden('redirect', back), label, input, el('button', { type: 'submit', className: 'primary', textContent: text.unlock }))
  if (wrong) form.append(el('p', { className: 'problem', role: 'alert', textContent: text.wrongPassword }))
  say(text.protectedLink)
  scroller.append(form)
  input.focus()
}

function wire() {
  $('new-folder').addEventListener('click', () => newFolderDialog().catch(problem))
  $('upload-files').addEventListener('change', e => chosen(e.target))
  $('upload-folder').addEventListener('change', e => chosen(e.target))
  $('view').addEventListener('click', () => {
    state.grid = !state.grid
    window.localStorage.setItem('cocon.drive.grid', state.grid ? '1' : '0')
    $('view').setAttribute('aria-pressed', String(state.grid))
    redraw()
  })
  // On a link's page: what the link shares, whole (a folder as a zip).
  $('download-all').addEventListener('click', () => download([state.dir]).catch(problem))
  $('uploads-close').addEventListener('click', () => {
    $('uploads').hidden = true
    for (const li of $('upload-list').querySelectorAll('li[data-done]')) li.remove()
  })
  $('empty-trash').addEventListener('click', async () => {
    if (await confirmDialog(text.emptyTitle, text.emptyText, text.emptyTrash)) {
      api('DELETE', '/files/trash').then(reload, problem)
    }
  })
  for (const button of $('selection').querySelectorAll('button[data-act]')) {
    button.addEventListener('click', () => {
      const files = picked()
      Promise.resolve(ACTIONS[button.dataset.act](files)).catch(problem)
    })
  }
  scroller.addEventListener('scroll', renderSoon, { passive: true })
  window.addEventListener('resize', renderSoon)
  window.addEventListener('hashchange', () => route().catch(problem))
  document.addEventListener('keydown', e => {
    if (dialog.open || e.target.closest('input[type=text], input[type=password], input[type=date]')) return
    if (e.key === 'Escape' && state.selected.size) ACTIONS.clear()
    if ((e.ctrlKey || e.metaKey) && e.key === 'a' && state.entries.length) {
      e.preventDefault()
      state.entries.forEach(f => state.selected.add(f.id))
      render()
      showSelection()
    }
    if (e.key === 'Delete' && state.selected.size && state.view === 'folder' && !isPublic) ACTIONS.trash(picked())
  })
  let depth = 0
  document.addEventListener('dragenter', e => {
    if (!hasFiles(e) || !canDrop()) return
    e.preventDefault()
    depth++
    $('drop').hidden = false
  })
  document.addEventListener('dragover', e => {
    if (hasFiles(e) && canDrop()) e.preventDefault()
  })
  document.addEventListener('dragleave', () => {
    if (--depth <= 0) {
      depth = 0
      $('drop').hidden = true
    }
  })
  document.addEventListener('drop', e => {
    if (!hasFiles(e) || !canDrop()) return
    e.preventDefault()
    depth = 0
    $('drop').hidden = true
    dropped(e.dataTransfer).then(upload).catch(problem)
  })
}

async function start() {
  translate()
  wire()
  if (isPublic && !(await startPublic())) return
  await route().catch(problem)
}

start()
