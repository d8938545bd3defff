/**
 * A thaw timer outside the process: while a guest is frozen, a small
 * detached Node.js process waits on a pipe from the run. When the run
 * disarms it (it thawed the guest itself) the watchdog exits. When the pipe
 * closes without that — the run died, e.g. SIGKILL — or the freeze outlives
 * its limit, the watchdog connects to the guest agent's socket (QEMU serves
 * one client at a time: it gets the channel once the run's connection is
 * gone) and sends `guest-fsfreeze-thaw` until the agent reports the guest
 * thawed, for at most `giveUpMs`.
 */
import { spawn } from 'node:child_process';

/** The watchdog's code, run with `node -e CODE qga limitMs giveUpMs` (CommonJS, no imports of lowtide). */
const WATCHDOG = String.raw`
const net = require('node:net');
const [qga, limitMs, giveUpMs] = process.argv.slice(1);
let started = false;
function attempt() {
  const s = net.connect(qga);
  let buf = '';
  const retry = () => { s.destroy(); setTimeout(attempt, 200); };
  const timer = setTimeout(retry, 2000);
  s.on('connect', () => {
    // 0xff resets the agent's parser (a request the run left half written).
    s.write(Buffer.from([0xff]));
    s.write('{"execute":"guest-fsfreeze-thaw"}\n{"execute":"guest-fsfreeze-status"}\n');
  });
  s.on('data', (d) => {
    buf += d.toString('latin1');
    if (/"return":\s*"thawed"/.test(buf)) process.exit(0);
  });
  s.on('error', () => { clearTimeout(timer); retry(); });
}
function thaw() {
  if (started) return;
  started = true;
  attempt();
  setTimeout(() => process.exit(1), Number(giveUpMs)).unref();
}
process.stdin.on('data', (d) => { if (d.toString().includes('disarm')) process.exit(0); });
process.stdin.on('end', thaw);
process.stdin.on('error', thaw);
setTimeout(thaw, Number(limitMs));
`;

export interface ThawWatchdog {
  /** The run thawed the guest: the watchdog exits without doing anything. */
  disarm(): void;
}

/**
 * Starts the watchdog for a guest frozen through the agent socket `qga`:
 * it thaws the guest if this process dies, or after `limitMs`.
 */
export function startThawWatchdog(qga: string, limitMs: number, giveUpMs = 60_000): ThawWatchdog {
  const child = spawn(process.execPath, ['-e', WATCHDOG, qga, String(limitMs), String(giveUpMs)], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  child.on('error', () => undefined); // no watchdog: the in-process timer and recovery remain
  child.stdin!.on('error', () => undefined);
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  let armed = true;
  return {
    disarm() {
      if (!armed) return;
      armed = false;
      child.stdin!.end('disarm\n');
    },
  };
}
