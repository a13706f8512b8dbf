// Real PouchDB replicating one doctype with Cocon's /data, as a Cozy app or cozy-desktop does:
// pull what Cocon holds, push local documents, make a conflict on each side (the same document
// edited on both; one deleted here and edited there), sync both ways, check both sides hold the
// same documents, revisions, winners and conflicts, then resolve the conflicts and check again.
//
// Usage: node replicate.js BASE HOST TOKEN DOCTYPE; prints a JSON summary, exits 1 on a mismatch.
'use strict';

const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-replication'));

const [base, host, token, doctype] = process.argv.slice(2);
const remote = new PouchDB(`${base}/data/${doctype}`, {
  skip_setup: true,
  fetch: (url, opts) => {
    opts.headers.set('Authorization', `Bearer ${token}`);
    opts.headers.set('Host', host);
    return PouchDB.fetch(url, opts);
  },
});
const local = new PouchDB('local', { adapter: 'memory' });

function fail(message) {
  console.error(message);
  process.exit(1);
}

// Every document of a side as a client sees it: winner, body, conflicts, and every leaf.
async function view(db) {
  const all = await db.allDocs();
  const out = {};
  for (const row of all.rows) {
    const doc = await db.get(row.id, { conflicts: true });
    if (doc._conflicts) doc._conflicts.sort();
    const leaves = await db.get(row.id, { open_revs: 'all' });
    doc.leaves = leaves.map((l) => (l.ok ? l.ok._rev : l.missing)).sort();
    out[row.id] = doc;
  }
  return out;
}

// JSON with keys sorted: the two sides may order a document's fields differently.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

async function same(step) {
  const [a, b] = [await view(local), await view(remote)];
  const ids = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  const differ = ids.filter((id) => canonical(a[id]) !== canonical(b[id]));
  if (differ.length) {
    const show = differ.slice(0, 5).map((id) => `${id}\n  local: ${canonical(a[id])}\n  cocon: ${canonical(b[id])}`);
    fail(`${step}: ${differ.length} documents differ\n${show.join('\n')}`);
  }
  return a;
}

async function main() {
  const pulled = await local.replicate.from(remote);
  if (pulled.status !== 'complete') fail(`pull: ${JSON.stringify(pulled)}`);
  await same('after the pull');

  const mine = [];
  for (let i = 0; i < 10; i++) mine.push({ _id: `pouch-${i}`, from: 'pouchdb', i });
  await local.bulkDocs(mine);
  const pushed = await local.replicate.to(remote);
  if (pushed.docs_written !== 10) fail(`push: ${JSON.stringify(pushed)}`);

  // c1 edited on both sides; c2 deleted here, edited on Cocon.
  const c1 = await local.get('c1');
  await local.put({ ...c1, side: 'pouchdb' });
  const r1 = await remote.get('c1');
  await remote.put({ ...r1, side: 'cocon' });
  const c2 = await local.get('c2');
  await local.remove(c2);
  const r2 = await remote.get('c2');
  await remote.put({ ...r2, side: 'cocon' });

  await local.sync(remote);
  const synced = await same('after the sync');
  const conflicts = ['c1', 'c2'].map((id) => synced[id]._conflicts || []);
  if (conflicts[0].length !== 1) fail(`c1 should be in conflict: ${JSON.stringify(synced.c1)}`);
  if (synced.c2.leaves.length !== 2) fail(`c2 should have two leaves: ${JSON.stringify(synced.c2)}`);

  // Resolve as an app would: keep the winner, delete the losing leaf, sync.
  for (const loser of conflicts[0]) await local.remove('c1', loser);
  await local.sync(remote);
  const resolved = await same('after the resolution');
  if (resolved.c1._conflicts) fail(`c1 still in conflict: ${JSON.stringify(resolved.c1)}`);

  console.log(
    JSON.stringify({
      pulled: pulled.docs_written,
      pushed: pushed.docs_written,
      documents: Object.keys(resolved).length,
      c1: { winner: synced.c1._rev, side: synced.c1.side, conflicts: conflicts[0] },
      c2: { winner: synced.c2._rev, leaves: synced.c2.leaves },
    }),
  );
}

main().catch((e) => fail(`replication failed: ${e.stack || JSON.stringify(e)}`));
