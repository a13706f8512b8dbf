// What bundlers built for Node-aware packages expect in a browser (webpack adds the same).
export const process = { env: { NODE_ENV: 'production' }, browser: true, nextTick: (f, ...a) => Promise.resolve().then(() => f(...a)) }
