// What an app built for cozy-stack does as it starts: cozy-client reads the token and the
// domain the stack wrote into `data-cozy`, then the app writes and reads its documents. It also
// tries a doctype its manifest does not grant. What happened goes into #result, as JSON.
import CozyClient, { Q } from 'cozy-client'

async function probe() {
  const out = {}
  try {
    const client = CozyClient.fromDOM({ schema: {} })
    out.uri = client.getStackClient().uri
    const { data } = await client.save({ _type: 'io.cozy.todos', title: 'written by the probe app' })
    out.saved = data && data._id
    const todos = await client.query(Q('io.cozy.todos'))
    out.todos = todos.data.map(n => n.title)
    try {
      await client.query(Q('io.cozy.contacts'))
      out.contacts = 'read'
    } catch (e) {
      out.contacts = String((e && e.status) || (e && e.message) || e)
    }
  } catch (e) {
    out.error = String((e && e.stack) || e)
  }
  const result = document.getElementById('result')
  result.textContent = JSON.stringify(out)
  result.dataset.done = 'true'
}

probe()
