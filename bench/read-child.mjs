// One lowtide sequential read of a whole source, in its own process so that
// its peak RSS is its own. Prints one JSON line.
import { openSource } from '../dist/index.js';

const [path, blockSize = String(1 << 20), queueDepth = '32', engine = 'auto'] = process.argv.slice(2);
const src = await openSource(path, { direct: 'on' });
// Like fio's runtime, the clock starts when the engine is set up (ring, buffer
// pool); the setup time is reported on its own.
const s0 = process.hrtime.bigint();
const reader = src.read(undefined, { blockSize: Number(blockSize), queueDepth: Number(queueDepth), engine });
const t0 = process.hrtime.bigint();
const setupMs = Number(t0 - s0) / 1e6;
let bytes = 0;
for await (const b of reader) bytes += b.length;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const engineUsed = reader.stats().engine;
await src.close();
process.stdout.write(
  JSON.stringify({
    bytes,
    seconds,
    setupMs,
    mbPerSecond: bytes / seconds / 1e6,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    engine: engineUsed,
  }) + '\n',
);
