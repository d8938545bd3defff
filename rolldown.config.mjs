// The `lowtide` command as one file (dist/bin/lowtide.cjs, package.json "bin").
// Built by `npm run build:ts` after tsc, from tsc's output. Why: a cold start
// of the CLI loaded ~50 modules one by one (dist/ and commander), ~120 ms with
// cold caches on the test machine, a sixth of an incremental backup's time;
// one file takes about half as long. The library (dist/index.js) stays
// unbundled. The addon is found at run time by node-gyp-build from the
// package root (lib/package.ts), cli-progress is required lazily at run
// time, @aws-sdk/client-s3 is imported when an s3:// repository is opened:
// all stay outside the bundle.
//
// CommonJS, not an ES module: Node's ES module loader (which also reads the
// main file through libuv's thread pool) costs start-up time the CommonJS
// loader does not: `lowtide --version` with caches dropped 200 -> 181 ms,
// warm 237 -> 194 ms (medians of 8 and 15 on the test machine). Without
// comments the bundle is plain ASCII, which V8 scans as one-byte text.
import { defineConfig } from 'rolldown';

export default defineConfig({
  input: 'dist/cli/main.js',
  platform: 'node',
  external: [/^node:/, 'node-gyp-build', 'cli-progress', /^@aws-sdk\//],
  logLevel: 'warn',
  output: {
    file: 'dist/bin/lowtide.cjs',
    format: 'cjs',
    comments: false,
    codeSplitting: false,
    sourcemap: false,
  },
});
