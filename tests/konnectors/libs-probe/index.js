// A konnector written as Cozy's are, on the published cozy-konnector-libs: it logs in with the
// account's credentials (opened for it by the server), downloads a bill from the vendor and
// saves it with saveBills (the PDF in the folder to save, the io.cozy.bills document).
const {BaseKonnector, saveBills, log} = require('cozy-konnector-libs')

module.exports = new BaseKonnector(async function start (fields) {
  log('info', 'logging in as ' + fields.login)
  if (fields.password !== 'pw-of-the-vendor') {
    throw new Error('LOGIN_FAILED')
  }
  const vendor = JSON.parse(process.env.COZY_FIELDS).vendor_url
  await saveBills([{
    fileurl: vendor + '/bill-2026-11.pdf',
    filename: 'bill-2026-11.pdf',
    amount: 12.5,
    currency: 'EUR',
    date: new Date('2026-11-30T00:00:00Z'),
    vendor: 'Probe Telecom'
  }], fields, {identifiers: ['probe telecom'], contentType: 'application/pdf', linkBankOperations: false})
  log('info', 'bills saved')
})
