/** The throttle flags of the commands that touch production storage, and the throttle's line in a progress bar. */
import { Option, type Command } from 'commander';
import { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName, type ThrottleState } from '../index.js';
import { numberArg } from './args.js';
import { formatBytes } from './progress.js';

/**
 * Adds --throttle, --latency-target and --rate-limit. The admission limit
 * decides when the next of several jobs may start, so only commands that run
 * several jobs (backup of several sources) take it.
 */
export function addThrottleOptions(cmd: Command, withAdmission = false): Command {
  cmd
    .addOption(
      new Option('--throttle <name>', 'latency controller').choices([...CONTROLLER_NAMES]).default(DEFAULT_CONTROLLER),
    )
    .addOption(
      new Option(
        '--latency-target <ms|auto>',
        'throttling limit: latency to hold, in ms, or auto (measured idle latency)',
      )
        .default('auto')
        .argParser((t: string) => (t === 'auto' ? 'auto' : numberArg('--latency-target', 0.001)(t))),
    )
    .addOption(
      new Option('--rate-limit <MB/s>', 'fixed cap in MB/s (10^6 bytes), on top of the controller').argParser(
        numberArg('--rate-limit', 0.001),
      ),
    );
  if (withAdmission) {
    cmd.addOption(
      new Option(
        '--admission-limit <ms>',
        'with several sources: start no new backup while latency is above this',
      ).argParser(numberArg('--admission-limit', 0.001)),
    );
  }
  return cmd;
}

/** The job options the throttle flags stand for (--rate-limit is in MB/s, rateLimit in bytes per second). */
export function throttleSettings(o: Record<string, unknown>): {
  throttle: ControllerName;
  latencyTarget: number | 'auto';
  admissionLimit?: number;
  rateLimit?: number;
} {
  return {
    throttle: o.throttle as ControllerName,
    latencyTarget: o.latencyTarget as number | 'auto',
    ...(o.admissionLimit !== undefined ? { admissionLimit: o.admissionLimit as number } : {}),
    ...(o.rateLimit !== undefined ? { rateLimit: (o.rateLimit as number) * 1e6 } : {}),
  };
}

/** The throttle's state for a progress bar. */
export function throttleInfo(t: ThrottleState): string {
  const probe =
    t.probeLatencyMs !== undefined ? `probe ${t.probeLatencyMs.toFixed(2)}/${t.probeTargetMs!.toFixed(2)} ms, ` : '';
  return `${probe}lat ${t.latencyMs.toFixed(2)} ms, delay ${t.delayMs.toFixed(1)} ms, QD ${t.queueDepth}, ${formatBytes(t.blockSize)}`;
}
