// npm run fuzz runs the TypeScript fuzzers (fuzz/*.fuzz.ts) through vitest,
// which runs TypeScript as it is; see fuzz/run.sh.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: '..',
    include: ['fuzz/*.fuzz.ts'],
    testTimeout: 0,
    reporters: ['default'],
  },
});
