// Runs one VM backup with the built library and SIGKILLs this process at a
// given point of the flow: argv qmp repo stateDir phase [disk] [delayMs] [qga].
// 'backup' kills at the first progress report of a disk backup (mid-read).
import { backupVm } from '../../dist/index.js';

const [qmp, repository, stateDir, phase, disk, delay, qga] = process.argv.slice(2);
const die = () => process.kill(process.pid, 'SIGKILL');
await backupVm({
  qmp,
  qga: qga || undefined,
  repository,
  stateDir,
  throttle: 'off',
  progressIntervalMs: 1,
  onProgress: (p) => {
    if (p.phase !== phase || (disk && p.disk !== disk)) return;
    if (phase === 'backup' && !p.backup) return;
    if (delay) setTimeout(die, Number(delay));
    else die();
  },
});
console.error(`kill-at: the run ended without reaching ${phase}`);
process.exit(3);
