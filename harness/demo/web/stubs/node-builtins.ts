// Stands in for the Node modules (fs, crypto, perf_hooks) that v86 requires only
// behind feature checks it passes in a browser: the bundler needs something to point at.
export default {};
export const promises = {};
export const performance = globalThis.performance;
