/**
 * The QMP client against real QEMU (greeting, capabilities, typed results,
 * QMP errors, events queued between replies) and against sockets that are
 * not QMP (silence, garbage, a peer that stops answering).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../../lib/advanced.js';
import { skipReason, hasCommand } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';
import { TestVm } from './helpers.js';
import { execFileSync } from 'node:child_process';

/** A unix socket server that does `behave` with each connection. */
async function fakeServer(path: string, behave: (s: Socket) => void): Promise<Server> {
  const server = createServer(behave);
  await new Promise<void>((r) => server.listen(path, r));
  return server;
}

describe('QMP client: sockets that are not QMP', () => {
  let tmp: TempDir;
  beforeAll(() => {
    tmp = new TempDir('lowtide-qmp-');
  });
  afterAll(() => tmp.remove());

  const cases: [string, (s: Socket) => void, RegExp][] = [
    ['silence', () => undefined, /no QMP greeting within 300 ms/],
    ['garbage', (s) => s.write('SSH-2.0-OpenSSH_9.2\r\n'), /the first line is not JSON/],
    ['JSON that is not a greeting', (s) => s.write('{"hello": 1}\n'), /no QMP greeting/],
    ['a peer that closes at once', (s) => s.destroy(), /closed before a QMP greeting/],
  ];
  for (const [name, behave, message] of cases) {
    it(`${name}: PROTOCOL_ERROR within the timeout`, async () => {
      const path = join(tmp.path, `${name.replace(/\W/g, '_')}.sock`);
      const server = await fakeServer(path, behave);
      try {
        await expect(QmpClient.connect(path, { timeoutMs: 300 })).rejects.toMatchObject({
          code: 'PROTOCOL_ERROR',
          message: expect.stringMatching(message),
        });
      } finally {
        server.close();
      }
    });
  }

  it('a command without a reply times out (TIMEOUT), the connection stays usable', async () => {
    const path = join(tmp.path, 'mute.sock');
    const server = await fakeServer(path, (s) => {
      s.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\n');
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
          buf = buf.slice(nl + 1);
          // Answers capabilities and query-status; never query-block.
          if (msg.execute === 'qmp_capabilities') s.write(`{"return": {}, "id": "${msg.id}"}\n`);
          if (msg.execute === 'query-status')
            s.write(`{"return": {"running": false, "status": "prelaunch"}, "id": "${msg.id}"}\n`);
        }
      });
    });
    const c = await QmpClient.connect(path, { timeoutMs: 1000 });
    try {
      expect(c.version).toBe('7.2.0');
      await expect(c.execute('query-block', {}, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'TIMEOUT' });
      expect(await c.execute('query-status', {})).toEqual({ running: false, status: 'prelaunch' });
      await expect(c.waitForEvent('STOP', undefined, 100)).rejects.toMatchObject({ code: 'TIMEOUT' });
    } finally {
      c.close();
      server.close();
    }
  });

  it('a socket that does not exist: NOT_FOUND', async () => {
    await expect(QmpClient.connect(join(tmp.path, 'none.sock'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

const noQemu = hasCommand('qemu-system-x86_64') ? undefined : 'qemu-system-x86_64 is not installed (qemu-system-x86)';
describe.skipIf(skipReason('QMP client against QEMU', noQemu))('QMP client against QEMU', () => {
  let tmp: TempDir;
  let vm: TestVm;
  beforeAll(async () => {
    tmp = new TempDir('lowtide-qmp-');
    const disk = tmp.file('d.raw');
    execFileSync('truncate', ['-s', '1M', disk]);
    vm = await TestVm.start(tmp.path, [{ id: 'vd0', path: disk, format: 'raw' }]);
  });
  afterAll(async () => {
    await vm?.stop();
    tmp?.remove();
  });

  it('typed results, QMP errors with class and desc, events kept until they are waited for', async () => {
    const c = await QmpClient.connect(vm.qmpPath);
    try {
      expect(c.version).toMatch(/^\d+\.\d+\.\d+$/);
      expect(await c.execute('query-status', {})).toMatchObject({ running: false, status: 'prelaunch' });
      await expect(c.execute('block-job-complete', { device: 'no-such-job' })).rejects.toMatchObject({
        code: 'QMP_ERROR',
        message: expect.stringMatching(/^block-job-complete: \w+: .*no-such-job/),
      });
      // The events of cont and stop arrive around the replies; they are found afterwards.
      await c.execute('human-monitor-command', { 'command-line': 'cont' });
      await c.execute('human-monitor-command', { 'command-line': 'stop' });
      await new Promise((r) => setTimeout(r, 50));
      const stop = await c.waitForEvent('STOP');
      const resume = await c.waitForEvent('RESUME');
      expect(resume.timestamp).toBeLessThanOrEqual(stop.timestamp);
      expect(c.queuedEvents().filter((e) => e.event === 'STOP' || e.event === 'RESUME')).toEqual([]);
    } finally {
      c.close();
    }
  });
});
